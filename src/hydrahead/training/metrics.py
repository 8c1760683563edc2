"""torchmetrics per task, fed exactly the labels the loss sees (-100 masked, flattened to (N, C))."""

from __future__ import annotations

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryCalibrationError,
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassF1Score,
    MultilabelAUROC,
    MultilabelAveragePrecision,
    MultilabelF1Score,
)

from hydrahead.modeling.head_spec import IGNORE_INDEX

ECE_BINS = 15


class BrierScore(Metric):
    """Mean squared error of the probabilities against the truth.

    Multiclass: per item, summed over classes (in [0, 2]). Multilabel: per (item, label), -100 skipped.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, task: str):
        super().__init__()
        self.task = task
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if self.task == "multiclass":
            truth = torch.nn.functional.one_hot(target.long(), preds.shape[-1]).to(preds.dtype)
            self.total += ((preds - truth) ** 2).sum().double()
            self.count += preds.shape[0]
            return
        keep = target != IGNORE_INDEX
        self.total += (((preds - target.to(preds.dtype)) ** 2) * keep).sum().double()
        self.count += keep.sum()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()


class MultilabelCalibrationError(BinaryCalibrationError):
    """Expected calibration error over every (item, label) probability of a multilabel task."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(preds.reshape(-1), target.reshape(-1))


def build_metrics(task: str, num_labels: int, threshold: float = 0.5) -> MetricCollection:
    """multiclass: acc, f1_macro, f1_micro; multilabel: f1_micro, f1_macro, auroc_macro, map_macro.

    Both also measure calibration: ``ece`` (expected calibration error, 15 equal-width bins; multiclass
    on the top class's confidence, multilabel over every label's probability) and ``brier``.
    """
    if task == "multiclass":
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(num_labels, average="micro"),
                "f1_macro": MulticlassF1Score(num_labels, average="macro"),
                "f1_micro": MulticlassF1Score(num_labels, average="micro"),
                "ece": MulticlassCalibrationError(num_labels, n_bins=ECE_BINS, norm="l1"),
                "brier": BrierScore(task),
            }
        )
    return MetricCollection(
        {
            "f1_micro": MultilabelF1Score(
                num_labels, threshold=threshold, average="micro", ignore_index=IGNORE_INDEX
            ),
            "f1_macro": MultilabelF1Score(
                num_labels, threshold=threshold, average="macro", ignore_index=IGNORE_INDEX
            ),
            "auroc_macro": MultilabelAUROC(num_labels, average="macro", ignore_index=IGNORE_INDEX),
            "map_macro": MultilabelAveragePrecision(num_labels, average="macro", ignore_index=IGNORE_INDEX),
            "ece": MultilabelCalibrationError(n_bins=ECE_BINS, norm="l1", ignore_index=IGNORE_INDEX),
            "brier": BrierScore(task),
        }
    )


def flatten_logits(logits: torch.Tensor, labels: torch.Tensor, task: str):
    """(logits [N, C] float32, labels [N] or [N, C] long) keeping only what the loss keeps.

    Multiclass drops -100 labels. Multilabel drops a row whose first label is -100 (padding, or an
    ignored detection); -100 elements inside kept rows stay for the metrics' ``ignore_index``.
    """
    num_labels = logits.shape[-1]
    flat_logits = logits.detach().reshape(-1, num_labels).float()
    if task == "multiclass":
        flat_labels = labels.reshape(-1)
        keep = flat_labels != IGNORE_INDEX
        return flat_logits[keep], flat_labels[keep]
    flat_labels = labels.reshape(-1, num_labels)
    keep = flat_labels[:, 0] != IGNORE_INDEX
    return flat_logits[keep], flat_labels[keep].long()


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Softmax over classes (multiclass) or a sigmoid per label (multilabel), as ``predict_proba``."""
    return logits.sigmoid() if task == "multilabel" else logits.softmax(-1)


def flatten_for_metrics(logits: torch.Tensor, labels: torch.Tensor, task: str):
    """(probabilities [N, C], labels [N] or [N, C]) of the items the loss keeps (:func:`flatten_logits`)."""
    flat_logits, flat_labels = flatten_logits(logits, labels, task)
    return probabilities(flat_logits, task), flat_labels


BIO_PATTERN = r"^(O|[BI]-.+)$"


def is_bio(labels: list[str]) -> bool:
    """True when every label is O, B-<type> or I-<type> (a BIO tagging scheme)."""
    import re

    return (
        bool(labels)
        and all(re.match(BIO_PATTERN, name) for name in labels)
        and any(name != "O" for name in labels)
    )


class EntityMetrics(Metric):
    """Entity-level precision, recall and F1 of BIO tagging, computed by seqeval.

    Fed the same logits and -100-masked labels as the loss; one tag sequence per input, read at
    the labelled (first-subword) positions. ``strict=True`` uses seqeval's strict mode with IOB2.
    """

    full_state_update = False

    def __init__(self, labels: list[str], strict: bool = False):
        super().__init__()
        self.names = list(labels)
        self.strict = strict
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("lengths", default=[], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        keep = labels != IGNORE_INDEX
        self.preds.append(logits.argmax(-1)[keep])
        self.target.append(labels[keep])
        self.lengths.append(keep.sum(-1))

    def compute(self) -> dict[str, torch.Tensor]:
        from seqeval.metrics import f1_score, precision_score, recall_score
        from seqeval.scheme import IOB2
        from torchmetrics.utilities import dim_zero_cat

        preds, target = dim_zero_cat(self.preds).tolist(), dim_zero_cat(self.target).tolist()
        y_pred, y_true, start = [], [], 0
        for length in dim_zero_cat(self.lengths).tolist():
            y_pred.append([self.names[i] for i in preds[start : start + length]])
            y_true.append([self.names[i] for i in target[start : start + length]])
            start += length
        kwargs = {"mode": "strict", "scheme": IOB2} if self.strict else {}
        return {
            name: torch.tensor(fn(y_true, y_pred, zero_division=0, **kwargs), dtype=torch.float)
            for name, fn in (
                ("entity_precision", precision_score),
                ("entity_recall", recall_score),
                ("entity_f1", f1_score),
            )
        }


def majority_baseline(data, names: list[str] | None = None) -> dict | None:
    """Accuracy of always predicting train's most frequent label (multiclass), on validation and test.

    ``data`` is an :class:`~hydrahead.data.datamodule.EncodedData`; items are what the loss sees
    (sequences, labelled tokens, positions). A control run scores its own (control) labels.
    """
    from collections import Counter

    def items(split: str) -> list[int]:
        out = []
        for feature in data.splits.get(split) or []:
            labels = feature["labels"]
            out.extend(labels if isinstance(labels, list) else [labels])
        return [i for i in out if i != IGNORE_INDEX]

    train = Counter(items("train"))
    if not train:
        return None
    label = min(train, key=lambda i: (-train[i], i))  # ties: the lowest id
    out: dict = {"label": names[label] if names else label}
    for split, stage in (("validation", "val"), ("test", "test")):
        kept = items(split)
        if kept:
            out[f"{stage}/acc"] = sum(i == label for i in kept) / len(kept)
    return out
