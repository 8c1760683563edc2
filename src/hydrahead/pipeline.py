"""``run(cfg)``: one experiment from a composed config to a finished run directory.

validate (before any weights load) -> data -> model -> Lightning fit -> evaluate the best checkpoint
(test split, else validation) -> export -> ``metrics.json`` completed (or failed, with the error).
``hydrahead-train`` is this plus Hydra; from Python::

    from hydrahead import compose, run
    result = run(compose(["backbone=tiny_bert", "data=synthetic_sequences", "logger=none"]))
    print(result.run_dir, result.metrics["val/acc"])
"""

from __future__ import annotations

import gc
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hydrahead.config import TrainConfig, validate
from hydrahead.rundir import RunDir
from hydrahead.secrets import masked_config, redact, secret_values

log = logging.getLogger("hydrahead.run")


@dataclass
class RunResult:
    """What a finished run left: its directory and the ``metrics.json`` record."""

    run_dir: Path
    record: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.record["status"]

    @property
    def metrics(self) -> dict:
        return self.record.get("metrics", {})

    @property
    def best(self) -> float | None:
        """The monitored metric of the best checkpoint (what a sweeper optimises)."""
        return self.record.get("best")


def run(cfg: DictConfig) -> RunResult:
    """Run one job in ``cfg.paths.output_dir`` (:func:`hydrahead.config.compose` makes such a config).

    ``metrics.json`` says ``running`` while it trains, then ``completed``, or ``failed`` with the
    error, which is raised again. Config errors are raised before any weights load.
    """
    run_dir = RunDir(cfg.paths.output_dir).create()
    _keep_library_files_in(Path(cfg.paths.cache_dir))
    start = time.perf_counter()
    job = hydra_job()
    secrets = secret_values(cfg)  # resolved once: the whole config is walked
    run_dir.begin(
        monitor=cfg.task.monitor,
        seed=cfg.seed,
        overrides=[redact(o, secrets) for o in job.get("overrides", [])],
    )
    try:
        typed = validate(cfg)
        run_dir.save_config(cfg, job.get("overrides", []))
        run_dir.write()
        run_dir.record.update(_fit(cfg, typed, run_dir, job, secrets))
        run_dir.record["status"] = "completed"
        return RunResult(run_dir.path, run_dir.record)
    except BaseException as err:
        run_dir.fail(err)
        raise
    finally:
        run_dir.write(wall_s=round(time.perf_counter() - start, 3))
        _finish_wandb(run_dir.record["status"] == "completed")
        _release_memory()


def hydra_job() -> dict:
    """This job's overrides, run name and W&B group from Hydra's runtime config ({} outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = hc.job.override_dirname or "defaults"
    return {
        "overrides": list(hc.overrides.task),
        "name": f"{hc.job.num}-{overrides}" if multirun else overrides,
        "sweep_id": Path(hc.sweep.dir).name if multirun else None,
    }


def _fit(cfg: DictConfig, typed: TrainConfig, run_dir: RunDir, job: dict, secrets: set[str]) -> dict:
    """Train, evaluate the best checkpoint and export; returns what metrics.json adds."""
    import lightning as L
    from lightning.pytorch.accelerators import CPUAccelerator

    from hydrahead.backbones import load_tokenizer
    from hydrahead.build import build_model
    from hydrahead.data.datamodule import HeadDataModule
    from hydrahead.data.features import training_data
    from hydrahead.export import export_model
    from hydrahead.training import factories
    from hydrahead.training.checkpoint import labels_of
    from hydrahead.training.module import HeadModule
    from hydrahead.utils import malloc

    _route_library_logs()
    L.seed_everything(typed.seed, workers=True)
    bb, data = typed.backbone, typed.data
    tokenizer = load_tokenizer(
        bb.name_or_path,
        revision=bb.revision,
        trust_remote_code=bb.trust_remote_code,
        words=data.level != "sequence",
    )
    ckpt_path = typed.ckpt_path
    if ckpt_path is None and run_dir.last_checkpoint.is_file():
        # This run dir already trained: a requeued (preempted, timed-out) or restarted job.
        log.info("resuming from this run's own %s", run_dir.last_checkpoint)
        ckpt_path = str(run_dir.last_checkpoint)
    if data.prepare:
        from hydrahead.data.prepare import ensure_prepared

        ensure_prepared(data.prepare, Path(typed.paths.data_dir))
    labels = labels_of(ckpt_path) if ckpt_path else None
    datamodule = HeadDataModule(
        data, tokenizer, typed.task.name, labels=labels, cache_dir=typed.paths.cache_dir
    )
    datamodule.load()
    run_dir.write_labels(datamodule.labels)
    model, _ = build_model(
        bb,
        labels=datamodule.labels,
        head=typed.head,
        task=typed.task.name,
        level=data.level,
        seed=typed.seed,
        tokenizer=tokenizer,
    )
    params_total = sum(p.numel() for p in model.parameters())
    params_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)  # ++trainer.<arg>= included
    train_on, feature_cache = training_data(
        model,
        datamodule,
        bb,
        cache_dir=typed.paths.cache_dir,
        seed=typed.seed,
        precision=trainer_args["precision"],
        accelerator=trainer_args["accelerator"],
    )
    if bb.compile and feature_cache not in ("hit", "computed"):
        model.backbone.compile()
    hparams = {**masked_config(cfg), "labels": datamodule.labels}
    module = HeadModule(
        model, typed.optimizer, typed.scheduler, typed.task, data.seqeval_strict, hparams=hparams
    )
    logger = factories.build_logger(
        typed.logger, run_dir.path, hparams, redact(job.get("name", "run"), secrets), job.get("sweep_id")
    )
    if logger:
        logger.log_hyperparams({"params_total": params_total, "params_trainable": params_trainable})
    callbacks = factories.build_callbacks(typed.callbacks, typed.task, run_dir.checkpoints, bool(logger))
    trainer = factories.build_trainer(
        trainer_args, run_dir.path, logger, callbacks, typed.callbacks.rich_progress_bar
    )
    heap = malloc.policy(
        typed.malloc,
        trains_backbone=any(p.requires_grad for p in model.backbone.parameters()),
        on_cpu=isinstance(trainer.accelerator, CPUAccelerator),
    )
    log.info("C heap: %s", heap)
    trainer.fit(module, datamodule=train_on, ckpt_path=ckpt_path)
    if trainer.received_sigterm:  # Lightning stops quietly; this run must not look finished
        raise RuntimeError(
            f"stopped by SIGTERM in epoch {trainer.current_epoch}; "
            f"resume with ckpt_path={run_dir.last_checkpoint}"
        )
    throughput = next(c for c in callbacks if type(c).__name__ == "Throughput")
    best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    metrics = {}
    for stage, evaluate in (("validate", trainer.validate), ("test", trainer.test)):
        if stage == "test" and not datamodule.has_test:
            continue
        for result in evaluate(
            module, datamodule=train_on, ckpt_path="best" if best_path else None, verbose=False
        ):
            metrics.update({k: float(v) for k, v in result.items()})
    if typed.export:
        export_model(module.model, run_dir.model_dir, tokenizer)
    best = metrics.get(typed.task.monitor)
    if logger and typed.logger.name == "wandb":
        logger.experiment.summary.update({**metrics, "best": best})
    return {
        "metrics": metrics,
        "monitor": typed.task.monitor,
        "best": best,
        "best_checkpoint": best_path or None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "params_trainable": params_trainable,
        "params_total": params_total,
        "labels": datamodule.labels,
        "feature_cache": feature_cache,
        "malloc": heap,
        "train_s": round(throughput.seconds, 3),
        "train_samples_per_s": throughput.samples_per_s,
    }


def _keep_library_files_in(cache_dir: Path) -> None:
    """W&B keeps settings, caches and debug logs under $HOME unless told otherwise: keep them here."""
    os.environ.setdefault("WANDB_CACHE_DIR", str(cache_dir / "wandb"))
    os.environ.setdefault("WANDB_CONFIG_DIR", str(cache_dir / "wandb-config"))
    os.environ.setdefault("WANDB_DATA_DIR", str(cache_dir / "wandb-data"))
    os.environ.setdefault("MPLCONFIGDIR", str(cache_dir / "matplotlib"))  # imported by logging libraries


def _route_library_logs() -> None:
    """Lightning installs its own console handlers; under Hydra's logging they print every line twice."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if logging.getLogger().handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True


def _finish_wandb(ok: bool) -> None:
    """Close this job's W&B run, so each job of a multirun is a run of its own."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=0 if ok else 1)


def _release_memory() -> None:
    """Free this job's model and hand its memory back before a sweep's next job builds one.

    Trainer and module hold each other (a cycle: ``gc``); glibc keeps freed heap pages resident, so
    without a trim each job of a multirun would start from the previous job's peak.
    """
    from hydrahead.utils import malloc

    gc.collect()
    malloc.trim()
