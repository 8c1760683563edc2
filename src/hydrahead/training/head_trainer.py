"""Training a head on a frozen backbone's cached features: a plain loop, cheap enough to run
hundreds of jobs in one process.

A head over cached features trains in well under a second, less than a Lightning Trainer's own
set-up, per-step hooks, checkpoint callbacks and evaluation loops cost it; in a sweep of hundreds
of heads that overhead would be most of the bill. So this loop does, step for step, what the
Lightning path does for a frozen backbone, and nothing else:

- the same batches in the same order (``EpochBatchSampler`` on the same seed and lengths);
- AdamW or SGD on the same parameter groups, the scheduler stepped per optimizer step;
- gradient clipping by norm (``trainer.gradient_clip_val``), ``trainer.limit_*_batches``,
  ``trainer.check_val_every_n_epoch``, ``trainer.log_every_n_steps``;
- validation each epoch with the same torchmetrics, the best head kept on ``task.monitor``
  (``checkpoints/best.ckpt``), ``callbacks.early_stopping``, ``checkpoints/last.ckpt`` every epoch
  with optimizer, scheduler and RNG state (a requeued job resumes from it); under submitit a signal
  (time limit, preemption, scancel) stops it after the step in flight with a mid-epoch ``last.ckpt``
  (the batches trained on in its epoch too: :mod:`hydrahead.training.interrupt`);
- the best head evaluated on validation and test at the end.

Any other ``trainer`` or ``callbacks`` setting sends the run to the Lightning path
(:func:`unsupported` says why). Dropout draws from the global RNG, seeded per job right before
training, so a job's result does not depend on which jobs ran before it in the process.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import threading
import time
from pathlib import Path

import torch

from hydrahead.config.schema import CallbacksConfig, TrainConfig
from hydrahead.data.datamodule import EncodedData
from hydrahead.data.features import FeatureBatches

from . import interrupt
from .evaluation import SplitOutputs, collect
from .evaluation import score as score_outputs
from .metrics import EntityMetrics, is_bio
from .module import build_optimizer

log = logging.getLogger("hydrahead.run")
ENGINE = "head_trainer"
# Trainer keys this loop implements; the rest need Lightning. Placement keys (accelerator, devices,
# strategy, num_nodes) are honoured as "one device": a head on cached features needs no more.
SUPPORTED = {
    "accelerator", "devices", "strategy", "num_nodes", "precision", "max_epochs", "deterministic",
    "benchmark", "num_sanity_val_steps", "log_every_n_steps", "check_val_every_n_epoch",
    "gradient_clip_val", "limit_train_batches", "limit_val_batches", "limit_test_batches",
    "enable_progress_bar", "enable_model_summary",
}  # fmt: skip
# Keys this loop takes only at the value that changes nothing.
NO_OP = {"accumulate_grad_batches": 1, "fast_dev_run": False, "overfit_batches": 0.0}


def unsupported(trainer_args: dict, callbacks: CallbacksConfig) -> str | None:
    """Why this run needs the Lightning path (a trainer or callbacks setting this loop lacks), or None."""
    extra = sorted(
        k
        for k, v in trainer_args.items()
        if k not in SUPPORTED and v is not None and not (k in NO_OP and v == NO_OP[k])
    )
    if extra:
        return f"trainer.{extra[0]} needs the Lightning path"
    if trainer_args.get("gradient_clip_algorithm") not in (None, "norm"):
        return "trainer.gradient_clip_algorithm needs the Lightning path"
    if trainer_args.get("max_epochs", 1) < 1:
        return "trainer.max_epochs=-1 (train until stopped) needs the Lightning path"
    if callbacks.save_top_k != 1:
        return f"callbacks.save_top_k={callbacks.save_top_k} needs the Lightning path"
    return None


def _limit(limit, count: int) -> int:
    """Lightning's ``limit_*_batches``: an int is a count, a float a fraction."""
    if limit is None:
        return count
    if isinstance(limit, float) and limit <= 1.0:
        return int(count * limit) if limit < 1.0 else count
    return min(count, int(limit))


def head_mode(model, training: bool) -> None:
    """Train or eval mode for the head's modules only. On cached features the frozen backbone never
    runs (and stays in eval); walking its hundreds of modules at every evaluation would cost more
    than evaluating a small head."""
    model.training = training
    for name, child in model.named_children():
        if name != "backbone":
            child.train(training)


def _rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])


class _Sigterm:
    """Notes a SIGTERM (the loop stops at the next step, as Lightning's does); main thread only.
    Not under submitit, where ``training.interrupt`` owns the signals (``enabled=False``)."""

    def __init__(self, enabled: bool = True):
        self.received = False
        self._previous = None
        self.enabled = enabled

    def __enter__(self):
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._note)
        return self

    def _note(self, signum, frame):
        self.received = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class HeadTrainer:
    """Trains one job's head on its cached feature splits and writes its checkpoints."""

    def __init__(
        self,
        model,
        splits: dict,
        data: EncodedData,
        typed: TrainConfig,
        checkpoints: Path,
        hparams: dict,
        trainer_args: dict,
        logger=None,
        extra_state: dict | None = None,
        quiet: bool = False,
    ):
        self.model = model
        self.splits = splits
        self.data = data
        self.typed = typed
        self.checkpoints = Path(checkpoints) if checkpoints is not None else None
        """None: checkpoints stay in memory (``kept``), for probes nothing resumes (MDL blocks)."""
        self.kept: dict[str, dict] = {}
        self.final_outputs: dict[str, SplitOutputs] = {}
        """After :meth:`fit`: the best head's test outputs (calibration and the reports read them)."""
        self.quiet = quiet
        self.hparams = hparams
        self.args = trainer_args
        self.logger = logger
        self.extra_state = extra_state or {}
        self.task = typed.task
        accelerator = str(trainer_args.get("accelerator", "auto"))
        on_gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
        self.device = torch.device("cuda" if on_gpu else "cpu")
        precision = str(trainer_args.get("precision", "32-true"))
        self.autocast = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision.split("-")[0])
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        # A control task's tags are random per word type: entity metrics would mean nothing.
        self.bio = (
            model.config.level == "token"
            and self.task.name == "multiclass"
            and is_bio(labels)
            and not self.task.control
        )
        self.labels = labels

    # -- batches ----------------------------------------------------------------------------
    def _batches(self, split: str, train: bool) -> FeatureBatches:
        d = self.data
        return FeatureBatches(
            self.splits[split],
            d.level,
            d.batch_size if train else d.eval_batch_size,
            d.lengths(split),
            d.seed,
            d.group_by_length,
            shuffle=train,
        )

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None)

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, split: str, stage: str, limit=None) -> dict[str, float]:
        """``<stage>/loss`` (mean over batches weighted by batch size, as Lightning logs it) and metrics."""
        return score_outputs(
            self.outputs(split, limit),
            self.task.name,
            self.model.config.num_labels,
            self.task.threshold,
            stage,
        )

    def outputs(self, split: str, limit=None) -> SplitOutputs:
        """The model's logits and labels on ``split`` (eval mode; the training mode is restored after)."""
        model = self.model
        was_training = model.training
        head_mode(model, False)
        # A probe nothing resumes, picked on its loss (an MDL block's), needs no other metric.
        loss_only = self.checkpoints is None and self.task.monitor.endswith("/loss")
        entities = EntityMetrics(self.labels, self.typed.data.seqeval_strict) if self.bio else None
        batches = self._batches(split, train=False)
        try:
            return collect(
                model,
                batches,
                self.task.name,
                self.device,
                self.autocast,
                entities=None if loss_only else entities,
                limit=_limit(limit, len(batches)),
                keep=not loss_only,
            )
        finally:
            head_mode(model, was_training)

    # -- checkpoints ------------------------------------------------------------------------
    def _head_state(self) -> dict:
        """Every weight but the backbone's (read module by module: the backbone's are never walked)."""
        state = {
            f"model.{name}.{k}": v.detach().cpu().clone()
            for name, child in self.model.named_children()
            if name != "backbone"
            for k, v in child.state_dict().items()
        }
        own = {
            **dict(self.model.named_parameters(recurse=False)),
            **dict(self.model.named_buffers(recurse=False)),
        }
        state.update({f"model.{k}": v.detach().cpu().clone() for k, v in own.items()})
        return state

    def _save(self, name: str, state: dict) -> Path | None:
        from hydrahead.utils.atomic import atomic_path

        if self.checkpoints is None:
            self.kept[name] = state
            return None
        path = self.checkpoints / f"{name}.ckpt"
        with atomic_path(path, sync=name == "last") as tmp:
            torch.save(state, tmp)
        return path

    def _base_state(self, epoch: int, step: int) -> dict:
        return {
            "engine": ENGINE,
            "state_dict": self._head_state(),
            "frozen_backbone_dropped": True,
            "hyper_parameters": self.hparams,
            "epoch": epoch,
            "global_step": step,
            **self.extra_state,
        }

    def _carry_best(self, resumed_from: Path) -> None:
        """Resuming into another run dir: bring the best head so far along (a later epoch may not beat it)."""
        import shutil

        ours, theirs = self.checkpoints / "best.ckpt", resumed_from.parent / "best.ckpt"
        if not ours.exists() and theirs.is_file():
            ours.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(theirs, ours)

    # -- training ---------------------------------------------------------------------------
    def fit(self, resume: str | Path | None = None) -> dict:
        """Train, keep the best head, evaluate it; returns what ``metrics.json`` records."""
        import lightning as L

        from hydrahead.training.checkpoint import read_checkpoint

        typed, args, model = self.typed, self.args, self.model
        task = typed.task
        max_epochs = int(args.get("max_epochs") or 1)
        train_batches = self._batches("train", train=True)
        per_epoch = _limit(args.get("limit_train_batches"), len(train_batches))
        total = max(1, per_epoch * max_epochs)
        if any(p.device != self.device for p in model.head.parameters()):
            model.to(self.device)
        optimizer, scheduler = build_optimizer(model, typed.optimizer, typed.scheduler, total)
        clip = args.get("gradient_clip_val")
        log_every = int(args.get("log_every_n_steps") or 50)
        val_every = int(args.get("check_val_every_n_epoch") or 1)
        stopping = typed.callbacks.early_stopping
        better = (lambda a, b: a > b) if task.mode == "max" else (lambda a, b: a < b)
        L.seed_everything(typed.seed, workers=True, verbose=False)

        start_epoch, step, position = 0, 0, 0
        # The best checkpoint's score, and early stopping's own best (improvements beyond min_delta),
        # kept apart as Lightning's ModelCheckpoint and EarlyStopping keep them.
        best_score, best_epoch, stop_best, wait = None, None, None, 0
        if resume:
            state = read_checkpoint(resume)
            if state.get("engine") != ENGINE:
                from hydrahead.config.schema import ConfigError

                raise ConfigError(
                    f"ckpt_path={resume} was written by the Lightning path; resume it with "
                    "backbone.cache=off (or start this frozen-head run afresh)"
                )
            model.load_state_dict(
                {k.removeprefix("model."): v for k, v in state["state_dict"].items()}, strict=False
            )
            optimizer.load_state_dict(state["optimizer_states"][0])
            scheduler.load_state_dict(state["lr_schedulers"][0])
            _set_rng_state(state["rng_state"])
            # A mid-epoch checkpoint (a signalled job's) names its epoch and the batches trained on.
            position = int(state.get("position") or 0)
            start_epoch, step = state["epoch"] + (0 if position else 1), state["global_step"]
            best_score, best_epoch = state["best_score"], state["best_epoch"]
            stop_best, wait = state["stop_best"], state["wait"]
            stopped_early = bool(state.get("stopped_early"))
            self._carry_best(Path(resume))
            log.info("resumed from %s at epoch %d, batch %d, step %d", resume, start_epoch, position, step)

        train_seconds, samples = 0.0, 0
        if not resume:
            stopped_early = False
        epoch = start_epoch - 1
        head_mode(model, True)
        # A run with checkpoints stops for a signal at an optimizer step (training.interrupt); a probe
        # nothing resumes (MDL blocks) is simply interrupted.
        resumable = self.checkpoints is not None
        if resumable:
            interrupt.progress.at(step)

        def last_state(epoch: int, position: int = 0) -> dict:
            return {
                **self._base_state(epoch, step),
                "optimizer_states": [optimizer.state_dict()],
                "lr_schedulers": [scheduler.state_dict()],
                "rng_state": _rng_state(),
                "best_score": best_score,
                "best_epoch": best_epoch,
                "stop_best": stop_best,
                "wait": wait,
                "position": position,
                "stopped_early": stopped_early,
            }

        signals = interrupt.deferred() if resumable else contextlib.nullcontext()
        with _Sigterm(enabled=not interrupt.owned()) as sigterm, signals:
            for epoch in range(start_epoch, max_epochs if not stopped_early else start_epoch):
                sampler = train_batches.batch_sampler
                sampler.set_epoch(epoch)
                skip = position if epoch == start_epoch else 0
                if skip:
                    sampler.load_state_dict({"epoch": epoch, "position": skip})
                epoch_start = time.perf_counter()
                for index, batch in enumerate(train_batches, start=skip):
                    if index >= per_epoch:
                        break
                    if sigterm.received:
                        raise RuntimeError(
                            f"stopped by SIGTERM in epoch {epoch}; resume with "
                            f"ckpt_path={self.checkpoints / 'last.ckpt'}"
                        )
                    batch = self._to_device(batch)
                    optimizer.zero_grad(set_to_none=True)
                    with self._autocast():
                        loss = model(**batch).loss
                    loss.backward()
                    if clip:
                        torch.nn.utils.clip_grad_norm_(
                            [p for g in optimizer.param_groups for p in g["params"]], clip
                        )
                    optimizer.step()
                    scheduler.step()
                    step += 1
                    samples += int(batch["labels"].shape[0])
                    if self.logger and step % log_every == 0:
                        values = {"train/loss": float(loss.detach()), "epoch": epoch}
                        if typed.callbacks.lr_monitor:
                            for group in optimizer.param_groups:
                                values[f"lr-{type(optimizer).__name__}/{group['name']}"] = group["lr"]
                        self.logger.log_metrics(values, step=step - 1)
                    if resumable:
                        interrupt.progress.step(step)
                        # Signalled: keep this step (the epoch's last waits for the epoch's last.ckpt).
                        if interrupt.requested() and index + 1 < per_epoch:
                            self._save("last", last_state(epoch, position=index + 1))
                            raise interrupt.stop(f"after step {step} (epoch {epoch}, batch {index + 1})")
                train_seconds += time.perf_counter() - epoch_start
                last_epoch = epoch == max_epochs - 1
                if (epoch + 1) % val_every == 0 or last_epoch:
                    val = self.evaluate("validation", "val", args.get("limit_val_batches"))
                    if self.logger:
                        self.logger.log_metrics({**val, "epoch": epoch}, step=step - 1)
                    score = val.get(task.monitor)
                    if score is None:
                        raise KeyError(
                            f"task.monitor={task.monitor!r} is not a validation metric; "
                            f"available: {', '.join(sorted(val))}"
                        )
                    log.log(
                        logging.DEBUG if self.quiet else logging.INFO,
                        "epoch %d/%d: %s",
                        epoch + 1,
                        max_epochs,
                        ", ".join(f"{k}={v:.4f}" for k, v in val.items()),
                    )
                    if best_score is None or better(score, best_score):
                        best_score, best_epoch = score, epoch
                        best_state = {**self._base_state(epoch, step), "score": score, "val_metrics": val}
                        self._save("best", best_state)
                    sign = 1 if task.mode == "max" else -1
                    if stop_best is None or better(score - sign * stopping.min_delta, stop_best):
                        stop_best, wait = score, 0
                    else:
                        wait += 1
                    if stopping.enabled and wait >= stopping.patience and not last_epoch:
                        stopped_early = True
                if resumable:  # in memory (a probe nothing resumes): no last
                    self._save("last", last_state(epoch))
                    interrupt.raise_if_requested(f"after epoch {epoch}")  # resumes after this epoch
                if stopped_early:
                    log.log(
                        logging.DEBUG if self.quiet else logging.INFO,
                        "early stopping after epoch %d (%s did not improve)",
                        epoch + 1,
                        task.monitor,
                    )
                    break

        best_path = self.checkpoints / "best.ckpt" if self.checkpoints is not None else None
        metrics = None
        best = self.kept.get("best")
        if best is None and best_path is not None and best_path.is_file():
            best = read_checkpoint(best_path)
        if best is not None:
            model.load_state_dict(
                {k.removeprefix("model."): v for k, v in best["state_dict"].items()}, strict=False
            )
            # The best head's validation, as measured when it was saved (evaluation is deterministic:
            # running it again on the same weights gives these numbers).
            metrics = dict(best.get("val_metrics") or {}) or None
        if metrics is None:
            metrics = self.evaluate("validation", "val", args.get("limit_val_batches"))
        if "test" in self.splits:
            test = self.final_outputs["test"] = self.outputs("test", args.get("limit_test_batches"))
            num_labels = model.config.num_labels
            metrics.update(score_outputs(test, self.task.name, num_labels, self.task.threshold, "test"))
        if self.device.type != "cpu":
            model.cpu()
        return {
            "metrics": metrics,
            "best_checkpoint": str(best_path) if best_path is not None and best_path.is_file() else None,
            "best_epoch": best_epoch,
            "epochs": epoch + 1,
            "global_step": step,
            "stopped_early": stopped_early,
            "train_s": round(train_seconds, 3),
            "train_samples_per_s": round(samples / train_seconds, 2) if train_seconds > 0 else None,
        }
