"""The Trainer and what it is built with: logger, callbacks, cluster plugins (from typed configs)."""

from __future__ import annotations

import os
from pathlib import Path

from hydrahead.config.schema import CallbacksConfig, LoggerConfig, TaskConfig


def build_logger(
    cfg: LoggerConfig,
    run_dir: Path,
    config: dict,
    name: str,
    group: str | None,
    quiet: bool = False,
    run_id: str | None = None,
):
    """W&B (offline unless told otherwise), CSV, or none (False); ``config`` is what W&B records.

    ``run_id``: the W&B run's id (the run dir keeps it in metrics.json), resumed if it exists
    (``resume="allow"``), so a requeued or resumed job's attempts are one W&B run.

    ``quiet``: a W&B run without system metrics, machine and git probing or console capture (the
    frozen-head jobs of a sweep: a second each, hundreds per process; W&B's probes would cost more
    than the training).
    """
    if cfg.name == "none":
        return False
    if cfg.name == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    wb = cfg.wandb
    if wb.api_key:
        os.environ["WANDB_API_KEY"] = wb.api_key
    mode = wb.mode or os.environ.get("WANDB_MODE", "offline")
    # W&B's own lines (its version, "syncing is set to offline", the run's history and summary, where
    # its logs are) ask nothing of the user offline: hydrahead-train's summary gives the `wandb sync`
    # command, <run>/wandb/ keeps W&B's logs. Online, its warnings and the run's link stay.
    settings: dict = {"silent": True} if mode in ("offline", "disabled") else {"quiet": True}
    if quiet:
        settings.update(
            x_disable_stats=True,
            x_disable_meta=True,
            x_disable_machine_info=True,
            disable_git=True,
            save_code=False,
            x_save_requirements=False,
            console="off",
            silent=True,
        )
    logger = WandbLogger(
        settings=wandb.Settings(**settings),
        project=wb.project,
        entity=wb.entity,
        name=name,
        group=wb.group or group,
        tags=list(wb.tags),
        save_dir=str(run_dir),
        mode=mode,
        config=config,
        **({"id": run_id, "resume": "allow"} if run_id else {}),
    )
    # Lightning hands wandb.init anonymous=None, a setting W&B no longer reads and warns about in every
    # process (before any silent setting applies): leave it out.
    getattr(logger, "_wandb_init", {}).pop("anonymous", None)
    return logger


def build_callbacks(cfg: CallbacksConfig, task: TaskConfig, checkpoints: Path, logging: bool) -> list:
    """Best (on ``task.monitor``) and last checkpoints, throughput, and the optional extras."""
    from lightning.pytorch import callbacks as cb

    from .callbacks import RunCheckpoint, SamplerEpoch, StopOnSignal, Throughput

    best = RunCheckpoint(
        dirpath=str(checkpoints),
        filename="best" if cfg.save_top_k == 1 else "best-epoch{epoch:02d}",
        monitor=task.monitor,
        mode=task.mode,
        save_top_k=cfg.save_top_k,
        auto_insert_metric_name=False,
    )
    # A checkpoint of its own for last.ckpt: Lightning's save_last only rewrites it when the
    # monitored metric improved, so a resume would restart from the best epoch, not the last.
    # At every epoch's end, validated or not: a signal at an epoch boundary stops there (StopOnSignal).
    last = RunCheckpoint(
        dirpath=str(checkpoints),
        filename="last",
        save_top_k=1,
        enable_version_counter=False,
        save_on_train_epoch_end=True,
    )
    callbacks = [best, last, SamplerEpoch(), Throughput()]
    if cfg.lr_monitor and logging:
        callbacks.append(cb.LearningRateMonitor(logging_interval="step"))
    if cfg.rich_progress_bar:
        callbacks.append(cb.RichProgressBar())
    if cfg.early_stopping.enabled:
        callbacks.append(
            cb.EarlyStopping(
                monitor=task.monitor,
                mode=task.mode,
                patience=cfg.early_stopping.patience,
                min_delta=cfg.early_stopping.min_delta,
            )
        )
    # After SamplerEpoch: the mid-epoch checkpoint it saves holds the sampler's position of this batch.
    callbacks.append(StopOnSignal(Path(checkpoints) / "last.ckpt"))
    return callbacks


def cluster_plugins() -> list:
    """Lightning's cluster environment under SLURM/submitit.

    A single-task job (one GPU per job, the sweep default) must not be treated as a SLURM-managed
    multi-process run, so it gets the plain environment. Multi-task jobs (``trainer=ddp`` with
    tasks_per_node = devices) use SLURM's, without Lightning's own requeue: submitit requeues.
    """
    if "SLURM_NTASKS" not in os.environ:
        return []
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    if int(os.environ["SLURM_NTASKS"]) > 1:
        return [SLURMEnvironment(auto_requeue=False)]
    return [LightningEnvironment()]


def build_trainer(
    trainer_args: dict, run_dir: Path, logger, callbacks: list, progress_bar: bool, worker: dict | None = None
):
    """``L.Trainer(**trainer_args)``: the trainer group as given (``++trainer.<arg>=`` included), plus
    the atomic checkpoint IO and the cluster environment unless ``plugins`` is set.

    DDP (``strategy: ddp``, or several devices): the other ranks start as ``hydrahead.cli.ddp_worker``
    with ``worker`` (the job's resolved config; None in a replica, which starts nothing), never
    through Hydra (``training.ddp``). Lightning injects no DistributedSampler: the loaders shard
    themselves (``EpochBatchSampler``, the eval shares).
    """
    import lightning as L

    from .checkpoint import AtomicCheckpointIO
    from .ddp import strategy_for

    args = {k: v for k, v in trainer_args.items() if v is not None}
    args.setdefault("plugins", [*cluster_plugins(), AtomicCheckpointIO()])
    strategy = strategy_for(args, worker)
    if strategy is not None:
        args["strategy"] = strategy
    args.setdefault("use_distributed_sampler", False)
    return L.Trainer(
        **args,
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
    )
