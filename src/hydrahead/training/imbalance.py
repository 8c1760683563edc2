"""Class imbalance in the loss: ``task.class_weights``, ``task.pos_weight``, ``task.label_smoothing``.

``balanced`` weights come from the train split's label counts, over the items the loss sees (sequences,
labelled tokens, positions): multiclass ``n / (k * n_c)`` (scikit-learn's ``balanced``), multilabel
``negatives_c / positives_c``. A label train never shows gets weight 1. The resolved numbers go into the
model's config (``HydraHeadConfig.loss``), so the loss, a resume and the export agree, and into
``metrics.json`` under ``loss``.
"""

from __future__ import annotations

import torch

from hydrahead.config.schema import ConfigError, TaskConfig
from hydrahead.modeling.head_spec import IGNORE_INDEX


def check_lengths(task: TaskConfig, labels: list[str]) -> None:
    """A list of weights must have one entry per label: ConfigError naming both counts (and the labels)."""
    for key in ("class_weights", "pos_weight"):
        value = getattr(task, key)
        if value is None or value == "balanced":
            continue
        if len(value) != len(labels):
            shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
            raise ConfigError(
                f"task.{key} has {len(value)} entries but the data has {len(labels)} labels ({shown}); "
                f"give one weight per label, in this order, or task.{key}=balanced"
            )


def label_counts(encoded, num_labels: int) -> tuple[list[int], int]:
    """(positives per label, items) over train's labelled items; multiclass: an item's count is its class."""
    counts = torch.zeros(num_labels, dtype=torch.long)
    items = 0
    for feature in encoded.splits.get("train") or []:
        labels = torch.as_tensor(feature["labels"])
        if encoded.task == "multiclass":
            kept = labels.reshape(-1)
            kept = kept[kept != IGNORE_INDEX]
            counts += torch.bincount(kept, minlength=num_labels)
            items += kept.numel()
        else:
            rows = labels.reshape(-1, num_labels)
            rows = rows[rows[:, 0] != IGNORE_INDEX]
            counts += (rows > 0).sum(0).long()
            items += rows.shape[0]
    return counts.tolist(), items


def resolve(task: TaskConfig, encoded, labels: list[str]) -> tuple[dict, dict]:
    """(the model config's ``loss`` options, the ``metrics.json`` record); both empty for the plain loss."""
    check_lengths(task, labels)
    options: dict = {}
    record: dict = {}
    for key, name in (("class_weights", "multiclass"), ("pos_weight", "multilabel")):
        value = getattr(task, key)
        if value is None or task.name != name:
            continue
        if value == "balanced":
            counts, items = label_counts(encoded, len(labels))
            if key == "class_weights":
                weights = [items / (len(labels) * n) if n else 1.0 for n in counts]
            else:
                weights = [(items - n) / n if n else 1.0 for n in counts]
            record["train_counts"] = dict(zip(labels, counts))
            record["train_items"] = items
        else:
            weights = [float(w) for w in value]
        options[key] = weights
        record[key] = dict(zip(labels, (round(w, 6) for w in weights)))
        record[f"{key}_from"] = "balanced" if value == "balanced" else "config"
    if task.label_smoothing:
        options["label_smoothing"] = float(task.label_smoothing)
        record["label_smoothing"] = float(task.label_smoothing)
    return options, record
