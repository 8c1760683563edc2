"""torchmetrics per task, fed exactly the labels the loss sees (-100 masked, flattened to (N, C))."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelAUROC,
    MultilabelAveragePrecision,
    MultilabelF1Score,
)

IGNORE = -100


def build_metrics(task: str, num_labels: int, threshold: float = 0.5) -> MetricCollection:
    """multiclass: acc, f1_macro, f1_micro; multilabel: f1_micro, f1_macro, auroc_macro, map_macro."""
    if task == "multiclass":
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(num_labels, average="micro"),
                "f1_macro": MulticlassF1Score(num_labels, average="macro"),
                "f1_micro": MulticlassF1Score(num_labels, average="micro"),
            }
        )
    return MetricCollection(
        {
            "f1_micro": MultilabelF1Score(num_labels, threshold=threshold, average="micro", ignore_index=IGNORE),
            "f1_macro": MultilabelF1Score(num_labels, threshold=threshold, average="macro", ignore_index=IGNORE),
            "auroc_macro": MultilabelAUROC(num_labels, average="macro", ignore_index=IGNORE),
            "map_macro": MultilabelAveragePrecision(num_labels, average="macro", ignore_index=IGNORE),
        }
    )


def flatten_for_metrics(logits: torch.Tensor, labels: torch.Tensor, task: str):
    """(probabilities [N, C], labels [N] or [N, C]) keeping only what the loss keeps.

    Multiclass drops -100 labels. Multilabel drops a row whose first label is -100 (padding, or an
    ignored detection); -100 elements inside kept rows stay for the metrics' ``ignore_index``.
    """
    num_labels = logits.shape[-1]
    flat_logits = logits.detach().reshape(-1, num_labels).float()
    if task == "multiclass":
        flat_labels = labels.reshape(-1)
        keep = flat_labels != IGNORE
        return flat_logits[keep].softmax(-1), flat_labels[keep]
    flat_labels = labels.reshape(-1, num_labels)
    keep = flat_labels[:, 0] != IGNORE
    kept = flat_labels[keep]
    return flat_logits[keep].sigmoid(), kept.long()
