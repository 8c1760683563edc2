"""What a finished run (or ``hydrahead-eval``) leaves beside its metrics: per-class scores, the confusion
matrix and a reliability diagram, as CSV and PNG.

Files (in the run dir, or ``eval/<name>/``):
- ``per_class.csv``: label, precision, recall, f1, support (torchmetrics, ``average=None``);
- ``confusion_matrix.csv``: ``true,predicted,count`` for every non-zero cell (multiclass), or per label
  ``label,tp,fp,fn,tn`` (multilabel): compact at any label count;
- ``confusion_matrix.png``: the matrix (row-normalised), the 40 most frequent true labels when there
  are more;
- ``reliability.png``: accuracy against confidence in 15 bins (multilabel: every label's probability
  against how often the label is on), before and after temperature scaling when the run calibrated.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from hydrahead.utils.atomic import atomic_path

from .metrics import ECE_BINS, probabilities

PER_CLASS = "per_class.csv"
CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability.png"
MAX_MATRIX_LABELS = 40


def per_class(probs: torch.Tensor, labels: torch.Tensor, task: str, names: list[str], threshold: float):
    """One row per label: precision, recall, F1 and support (the items whose truth is that label)."""
    from torchmetrics.classification import (
        MulticlassF1Score,
        MulticlassPrecision,
        MulticlassRecall,
        MultilabelF1Score,
        MultilabelPrecision,
        MultilabelRecall,
    )

    k = len(names)
    if task == "multiclass":
        scorers = [cls(k, average=None) for cls in (MulticlassPrecision, MulticlassRecall, MulticlassF1Score)]
        support = torch.bincount(labels, minlength=k)
    else:
        scorers = [
            cls(k, threshold=threshold, average=None, ignore_index=-100)
            for cls in (MultilabelPrecision, MultilabelRecall, MultilabelF1Score)
        ]
        support = (labels == 1).sum(0)
    values = [scorer(probs, labels).tolist() if len(labels) else [0.0] * k for scorer in scorers]
    return [
        {
            "label": name,
            "precision": round(values[0][i], 6),
            "recall": round(values[1][i], 6),
            "f1": round(values[2][i], 6),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    ]


def confusion(probs: torch.Tensor, labels: torch.Tensor, task: str, num_labels: int, threshold: float):
    """Multiclass: [C, C] counts (rows true, columns predicted); multilabel: [C, 2, 2] (torchmetrics')."""
    from torchmetrics.classification import MulticlassConfusionMatrix, MultilabelConfusionMatrix

    if task == "multiclass":
        matrix = MulticlassConfusionMatrix(num_labels)
    else:
        matrix = MultilabelConfusionMatrix(num_labels, threshold=threshold, ignore_index=-100)
    if not len(labels):
        return torch.zeros((num_labels, num_labels) if task == "multiclass" else (num_labels, 2, 2))
    return matrix(probs, labels).long()


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.rcParams["text.parse_math"] = False  # "$" in a label name is text
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure registry

    return Figure(figsize=(width, height))  # margins set by hand: a layout engine doubles the cost


def _margins(fig, left_in: float, bottom_in: float, right_in: float = 0.3, top_in: float = 0.4) -> None:
    """Margins in inches (label widths are known), as fractions of the figure."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=min(0.6, left_in / width),
        bottom=min(0.6, bottom_in / height),
        right=1 - right_in / width,
        top=1 - top_in / height,
    )


def plot_confusion(matrix: torch.Tensor, task: str, names: list[str], path: Path, title: str) -> None:
    """The row-normalised confusion matrix (multiclass) or per-label TP/FP/FN/TN rates (multilabel)."""
    if task == "multiclass":
        counts = matrix.sum(1)
        shown = list(range(len(names)))
        if len(names) > MAX_MATRIX_LABELS:
            shown = counts.argsort(descending=True)[:MAX_MATRIX_LABELS].sort().values.tolist()
            title += f" ({MAX_MATRIX_LABELS} most frequent of {len(names)} labels)"
        sub = matrix[shown][:, shown].double()
        rates = sub / sub.sum(1, keepdim=True).clamp(min=1)
        row_names, col_names = [names[i] for i in shown], [names[i] for i in shown]
        xlabel, ylabel = "predicted", "true"
    else:
        tn, fp, fn, tp = (matrix[:, i // 2, i % 2].double() for i in range(4))
        pos, neg = (tp + fn).clamp(min=1), (tn + fp).clamp(min=1)
        rates = torch.stack([tp / pos, fn / pos, fp / neg, tn / neg], dim=1)
        sub = torch.stack([tp, fn, fp, tn], dim=1)
        row_names, col_names = names, ["TP/pos", "FN/pos", "FP/neg", "TN/neg"]
        xlabel, ylabel = "", "label"
    size = len(row_names)
    char_in = 7 / 72 * 0.6  # a 7-point tick label's average character width
    left_in = 0.6 + char_in * max(len(n) for n in row_names)
    bottom_in = 0.6 + (char_in * max(len(n) for n in col_names) if task == "multiclass" else 0.2)
    fig = _figure(left_in + max(3.0, 0.3 * len(col_names)) + 0.8, bottom_in + max(2.0, 0.25 * size) + 0.4)
    _margins(fig, left_in, bottom_in)  # the colour bar takes its room from the axes
    ax = fig.add_subplot()
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(len(col_names)), col_names, rotation=90 if task == "multiclass" else 0, fontsize=7)
    ax.set_yticks(range(size), row_names, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if size <= 20 and len(col_names) <= 20:
        for r in range(size):
            for c in range(len(col_names)):
                value = int(sub[r, c])
                if value:
                    color = "white" if rates[r, c] > 0.6 else "black"
                    ax.text(c, r, str(value), ha="center", va="center", fontsize=6, color=color)
    _save(fig, path)


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, task: str, bins: int = ECE_BINS):
    """(bin confidence, bin accuracy, bin count) over equal-width confidence bins (empty bins: NaN)."""
    if task == "multiclass":
        confidence, predicted = probs.max(-1)
        correct = (predicted == labels).double()
    else:
        keep = labels.reshape(-1) != -100
        confidence = probs.reshape(-1)[keep]
        correct = labels.reshape(-1)[keep].double()
    index = (confidence * bins).long().clamp(max=bins - 1)
    count = torch.bincount(index, minlength=bins).double()
    conf = torch.bincount(index, weights=confidence.double(), minlength=bins) / count
    acc = torch.bincount(index, weights=correct, minlength=bins) / count
    return conf, acc, count


def plot_reliability(curves: dict[str, tuple], path: Path, title: str, task: str) -> None:
    """Accuracy (multilabel: frequency of the label being on) against confidence, one line per curve."""
    fig = _figure(4.5, 4.0)
    _margins(fig, 0.7, 0.6)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    for name, (conf, acc, count) in curves.items():
        seen = count > 0
        ax.plot(conf[seen].numpy(), acc[seen].numpy(), marker="o", markersize=3, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence" if task == "multiclass" else "predicted probability")
    ax.set_ylabel("accuracy" if task == "multiclass" else "fraction on")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    _save(fig, path)


def write(
    out_dir: str | Path,
    logits: torch.Tensor,
    labels: torch.Tensor,
    task: str,
    names: list[str],
    threshold: float = 0.5,
    temperature: float = 1.0,
    split: str = "test",
) -> dict[str, Path]:
    """Write the four report files for one split's (uncalibrated) ``logits``; ``temperature`` != 1 scales
    them for the per-class scores and the matrix, and adds the calibrated curve to the reliability plot."""
    out = Path(out_dir)
    probs = probabilities(logits / temperature, task)
    rows = per_class(probs, labels, task, names, threshold)
    header = ["label", "precision", "recall", "f1", "support"]
    _write_csv(out / PER_CLASS, header, [[r[k] for k in header] for r in rows])
    matrix = confusion(probs, labels, task, len(names), threshold)
    if task == "multiclass":
        cells = [
            [names[t], names[p], int(matrix[t, p])] for t, p in torch.nonzero(matrix, as_tuple=False).tolist()
        ]
        _write_csv(out / CONFUSION_CSV, ["true", "predicted", "count"], cells)
    else:
        cells = [
            [name, int(matrix[i, 1, 1]), int(matrix[i, 0, 1]), int(matrix[i, 1, 0]), int(matrix[i, 0, 0])]
            for i, name in enumerate(names)
        ]
        _write_csv(out / CONFUSION_CSV, ["label", "tp", "fp", "fn", "tn"], cells)
    items = int(labels.shape[0])
    plot_confusion(matrix, task, names, out / CONFUSION_PNG, f"{split}: confusion ({items} items)")
    curves = {"as trained": reliability_bins(probabilities(logits, task), labels, task)}
    if temperature != 1.0:
        curves[f"temperature {temperature:.3g}"] = reliability_bins(probs, labels, task)
    plot_reliability(curves, out / RELIABILITY_PNG, f"{split}: reliability ({items} items)", task)
    return {
        "per_class": out / PER_CLASS,
        "confusion_csv": out / CONFUSION_CSV,
        "confusion_png": out / CONFUSION_PNG,
        "reliability_png": out / RELIABILITY_PNG,
    }
