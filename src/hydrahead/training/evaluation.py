"""Evaluate a model on a split: one loop for the head trainer, ``hydrahead-eval`` and the run's reports.

:func:`collect` runs the model over batches (token batches or cached features) and keeps the logits
and labels of the items the loss sees; :func:`score` turns them into the same torchmetrics the
training loop logs. :func:`fit_temperature` fits temperature scaling on them (``calibrate=temperature``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .metrics import EntityMetrics, build_metrics, flatten_logits, is_bio, probabilities


@dataclass
class SplitOutputs:
    """A split's predictions: the items the loss sees, flattened."""

    logits: torch.Tensor
    """[N, C] float32 on the CPU."""
    labels: torch.Tensor
    """[N] class ids, or [N, C] 0/1 (-100 inside a kept multilabel row)."""
    loss: float
    """Mean of the batch losses weighted by batch size (as Lightning logs ``<stage>/loss``)."""
    entities: dict[str, float] | None = None
    """BIO tagging: seqeval's entity precision, recall and F1."""


def entity_metrics(model, task_cfg, strict: bool = False) -> EntityMetrics | None:
    """seqeval entity metrics when the model tags BIO labels per token (never for a control task)."""
    config = model.config
    names = [config.id2label[i] for i in range(config.num_labels)]
    bio = config.level == "token" and config.task == "multiclass" and is_bio(names)
    return EntityMetrics(names, strict) if bio and not getattr(task_cfg, "control", False) else None


@torch.no_grad()
def collect(
    model,
    batches,
    task: str,
    device: torch.device | None = None,
    autocast: torch.dtype | None = None,
    entities: EntityMetrics | None = None,
    limit: int | None = None,
    keep: bool = True,
) -> SplitOutputs:
    """Run ``model`` (in eval mode) over ``batches`` (dicts of model inputs with ``labels``).

    ``limit``: at most this many batches. ``keep=False`` keeps the loss only (no logits).
    """
    device = device or next(model.parameters()).device
    context = (
        torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    )
    loss_sum, weight = torch.zeros((), dtype=torch.float64), 0
    kept_logits, kept_labels = [], []
    for index, batch in enumerate(batches):
        if limit is not None and index >= limit:
            break
        if device.type != "cpu":
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with context:
            out = model(**batch)
        size = batch["labels"].shape[0]
        loss_sum += out.loss.detach().double().cpu() * size
        weight += size
        if not keep:
            continue
        logits, labels = flatten_logits(out.logits, batch["labels"], task)
        kept_logits.append(logits.cpu())
        kept_labels.append(labels.cpu())
        if entities is not None:
            entities.update(out.logits.detach().cpu(), batch["labels"].cpu())
    num_labels = model.config.num_labels
    empty_labels = torch.zeros((0,) if task == "multiclass" else (0, num_labels), dtype=torch.long)
    return SplitOutputs(
        logits=torch.cat(kept_logits) if kept_logits else torch.zeros(0, num_labels),
        labels=torch.cat(kept_labels) if kept_labels else empty_labels,
        loss=float(loss_sum / max(weight, 1)),
        entities={k: float(v) for k, v in entities.compute().items()} if entities is not None else None,
    )


def score(
    outputs: SplitOutputs, task: str, num_labels: int, threshold: float, stage: str, temperature: float = 1.0
) -> dict[str, float]:
    """``<stage>/loss``, the task's metrics (:func:`~hydrahead.training.metrics.build_metrics`) and,
    for BIO tagging, the entity metrics. ``temperature`` rescales the logits first."""
    results = {f"{stage}/loss": outputs.loss}
    if len(outputs.labels):
        metrics = build_metrics(task, num_labels, threshold)
        metrics.update(probabilities(outputs.logits / temperature, task), outputs.labels)
        results.update({f"{stage}/{k}": float(v) for k, v in metrics.compute().items()})
    if outputs.entities:
        results.update({f"{stage}/{k}": v for k, v in outputs.entities.items()})
    return results


def nll(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """Mean negative log-likelihood of the labels (multilabel: per kept (item, label) pair)."""
    if task == "multiclass":
        return torch.nn.functional.cross_entropy(logits, labels)
    keep = labels >= 0
    losses = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, labels.clamp(min=0).to(logits.dtype), reduction="none"
    )
    return (losses * keep).sum() / keep.sum().clamp(min=1)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, task: str) -> float:
    """The temperature T > 0 minimising the NLL of ``labels`` under ``logits / T`` (Guo et al. 2017).

    One scalar for all classes (multilabel: all labels), fitted by L-BFGS on log T, so accuracy and
    the ranking of classes never change. Returns 1.0 when there is nothing to fit on.
    """
    if not len(labels):
        return 1.0
    logits = logits.detach().double()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nll(logits / log_t.exp(), labels, task)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp().clamp(1e-2, 1e2))
    # Never worse than leaving the logits alone (a degenerate split: all one class, say).
    with torch.no_grad():
        if nll(logits / temperature, labels, task) > nll(logits, labels, task):
            return 1.0
    return temperature


def finish(
    model,
    task_cfg,
    calibrate: str | None,
    outputs: dict[str, SplitOutputs],
    out_dir,
    metrics: dict[str, float],
) -> tuple[dict, dict]:
    """After training: fit the temperature (``calibrate=temperature``), then write the reports.

    ``outputs``: the best model's (uncalibrated) outputs per split ("validation", "test"). The fitted
    temperature goes into ``model.config`` (so the export and ``predict_proba`` use it); ``metrics``
    gains ``<stage>/ece_calibrated`` and ``<stage>/brier_calibrated``. Returns (the record's
    ``calibration`` and ``reports`` entries, the report files).
    """
    from . import reports

    task = task_cfg.name
    config = model.config
    names = [config.id2label[i] for i in range(config.num_labels)]
    record: dict = {}
    temperature = 1.0
    if calibrate == "temperature":
        val = outputs["validation"]
        temperature = fit_temperature(val.logits, val.labels, task)
        before, after = {}, {}
        for split, stage in (("validation", "val"), ("test", "test")):
            if split not in outputs:
                continue
            out = outputs[split]
            for scale, into in ((1.0, before), (temperature, after)):
                scored = score(out, task, config.num_labels, task_cfg.threshold, stage, scale)
                into.update({f"{stage}/{k}": scored[f"{stage}/{k}"] for k in ("ece", "brier")})
                into[f"{stage}/nll"] = float(nll(out.logits.double() / scale, out.labels, task))
            for key in ("ece", "brier"):
                metrics[f"{stage}/{key}_calibrated"] = after[f"{stage}/{key}"]
        config.calibration_temperature = temperature
        record["calibration"] = {
            "method": "temperature",
            "temperature": temperature,
            "fitted_on": "validation",
            "before": before,
            "after": after,
        }
    split = "test" if "test" in outputs else "validation"
    out = outputs[split]
    files = reports.write(
        out_dir, out.logits, out.labels, task, names, task_cfg.threshold, temperature, split
    )
    record["reports"] = {"split": split, "files": sorted(path.name for path in files.values())}
    return record, files
