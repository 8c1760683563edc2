"""Callbacks with behaviour Lightning's defaults lack."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback, ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint that resumes into a new run directory without forgetting what was best.

    Lightning drops ``best_model_score`` and the top-k record when the checkpoint dir changed, so
    the first epoch after a resume would become "best" whatever it scores. This copies the earlier
    run's best checkpoints into this run's dir and re-points the state at the copies.
    """

    def load_state_dict(self, state_dict: dict) -> None:
        old_dir = state_dict.get("dirpath")
        if old_dir and self.dirpath and Path(old_dir).resolve() != Path(self.dirpath).resolve():
            state_dict = dict(state_dict)
            Path(self.dirpath).mkdir(parents=True, exist_ok=True)

            def carried(path: str) -> str:
                if not path or not Path(path).is_file():
                    return path
                target = Path(self.dirpath) / Path(path).name
                if not target.exists():
                    shutil.copy2(path, target)
                return str(target)

            state_dict["best_k_models"] = {
                carried(path): score for path, score in state_dict.get("best_k_models", {}).items()
            }
            for key in ("best_model_path", "kth_best_model_path"):
                state_dict[key] = carried(state_dict.get(key, ""))
            state_dict["last_model_path"] = ""
            state_dict["dirpath"] = self.dirpath
        super().load_state_dict(state_dict)


class SamplerEpoch(Callback):
    """Tells the training batch sampler which epoch starts, so each epoch has its own shuffle.

    Lightning only calls ``set_epoch`` on a sampler it finds at ``loader.sampler`` or
    ``loader.batch_sampler.sampler``; the length-grouped ``EpochBatchSampler`` is the batch sampler
    itself, which Lightning never tells, so without this every epoch would repeat the first one's order.
    """

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        loaders = trainer.train_dataloader
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            batch_sampler = getattr(loader, "batch_sampler", None)
            if callable(getattr(batch_sampler, "set_epoch", None)):
                batch_sampler.set_epoch(trainer.current_epoch)


class Throughput(Callback):
    """Training samples per second: from each epoch's first batch to its last (data loading
    included, validation not), summed over the epochs this fit ran."""

    def __init__(self):
        self.seconds = 0.0
        self.samples = 0
        self._epoch_start: float | None = None
        self._last_end: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._epoch_start is None:
            self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += int(batch["labels"].shape[0])
        self._last_end = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._epoch_start is not None and self._last_end is not None:
            self.seconds += self._last_end - self._epoch_start
        self._epoch_start = self._last_end = None

    @property
    def samples_per_s(self) -> float | None:
        return round(self.samples / self.seconds, 2) if self.seconds > 0 else None
