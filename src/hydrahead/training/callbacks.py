"""Callbacks with behaviour Lightning's defaults lack."""

from __future__ import annotations

import shutil
import signal
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
            from lightning.pytorch.utilities.rank_zero import rank_zero_only

            state_dict = dict(state_dict)
            writes = rank_zero_only.rank == 0  # under DDP rank 0 copies; every rank re-points its state
            if writes:
                Path(self.dirpath).mkdir(parents=True, exist_ok=True)

            def carried(path: str) -> str:
                if not path or not Path(path).is_file():
                    return path
                target = Path(self.dirpath) / Path(path).name
                if writes and not target.exists():
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
    """Tells the training batch sampler which epoch starts, so each epoch has its own shuffle, and
    how many of the epoch's batches are trained on (``position``), which a mid-epoch checkpoint keeps.

    Lightning only calls ``set_epoch`` on a sampler it finds at ``loader.sampler`` or
    ``loader.batch_sampler.sampler``; the length-grouped ``EpochBatchSampler`` is the batch sampler
    itself, which Lightning never tells, so without this every epoch would repeat the first one's order.
    The sampler cannot count the position itself: the loader fetches batches ahead of training.
    """

    @staticmethod
    def _samplers(trainer) -> list:
        loaders = trainer.train_dataloader
        found = []
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            batch_sampler = getattr(loader, "batch_sampler", None)
            if callable(getattr(batch_sampler, "set_epoch", None)):
                found.append(batch_sampler)
        return found

    def on_train_start(self, trainer, pl_module) -> None:
        # A mid-epoch resume: Lightning 2.6 gives the train loader its saved state only when it sets
        # the loader up after reading the checkpoint, but ``estimated_stepping_batches`` (the
        # scheduler's step count) set it up before; the loader's iterator has not started yet.
        fit_loop = trainer.fit_loop
        if getattr(fit_loop, "_combined_loader_states_to_load", None):
            fit_loop._load_combined_loader_states()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        for batch_sampler in self._samplers(trainer):
            batch_sampler.set_epoch(trainer.current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for batch_sampler in self._samplers(trainer):
            batch_sampler.position = batch_idx + 1


class StopOnSignal(Callback):
    """Stops a signalled job (time limit, preemption, scancel: :mod:`hydrahead.training.interrupt`)
    at the next optimizer-step boundary, with a resumable mid-epoch ``last.ckpt``: the loops'
    progress, optimizer, scheduler, RNG (HeadModule) and the train loader's position, so the next
    attempt goes on from the next batch as if never stopped. A signal during an epoch's last step or
    its validation stops the fit at the next epoch's start, where that epoch's own ``last.ckpt`` is
    written. Also counts the optimizer steps each attempt executes, and keeps a run that early
    stopping had ended stopped when it is resumed (Lightning forgets ``should_stop``).
    """

    def __init__(self, last: Path):
        self.last = Path(last)

    def _requested(self, trainer) -> bool:
        from . import interrupt

        flag = interrupt.requested()
        if trainer.world_size > 1:  # every rank stops at the same step (rank 0 holds the signal)
            flag = trainer.strategy.reduce_boolean_decision(flag, all=False)
        return flag

    def _stop(self, where: str):
        from . import interrupt

        if interrupt.requested():
            return interrupt.stop(where)
        return interrupt.Interrupted(signal.SIGUSR2, where)  # a DDP rank stopping with rank 0

    def on_train_start(self, trainer, pl_module) -> None:
        from lightning.pytorch.callbacks import EarlyStopping
        from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

        from . import interrupt

        interrupt.progress.at(trainer.global_step)
        if any(
            isinstance(c, EarlyStopping) and c.stopping_reason != EarlyStoppingReason.NOT_STOPPED
            for c in trainer.callbacks
        ):
            trainer.should_stop = True  # resumed from the last.ckpt of a fit early stopping ended

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._requested(trainer):  # last.ckpt holds the epoch before (or nothing was trained yet)
            raise self._stop(f"at the start of epoch {trainer.current_epoch}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from . import interrupt

        done = batch_idx + 1
        last_of_epoch = done >= trainer.num_training_batches
        if done % trainer.accumulate_grad_batches and not last_of_epoch:
            return  # accumulating: no optimizer step yet
        interrupt.progress.step(trainer.global_step)
        if last_of_epoch or not self._requested(trainer):
            return
        trainer.save_checkpoint(self.last)
        raise self._stop(f"after step {trainer.global_step} (epoch {trainer.current_epoch}, batch {done})")


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
