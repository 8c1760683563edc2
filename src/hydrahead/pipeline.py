"""``run(cfg)``: one experiment from a composed config to a finished run directory.

validate (before any weights load) -> data -> model -> Lightning fit -> evaluate the best checkpoint
(test split, else validation) -> export -> ``metrics.json`` completed (or failed, with the error).
``hydrahead-train`` is this plus Hydra; from Python::

    from hydrahead import compose, run
    result = run(compose(["backbone=tiny_bert", "data=synthetic_sequences", "logger=none"]))
    print(result.run_dir, result.metrics["val/acc"])
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import signal
import socket
import sys
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

    Under submitit hydrahead owns the job's signals (``training.interrupt``): a time limit or a
    preemption ends it ``requeued`` (resumable mid-epoch ``last.ckpt``, submitit requeues it into
    this dir, where the next attempt goes on), ``scancel`` ends it ``cancelled``.
    """
    from hydrahead.data.cache import digest
    from hydrahead.training import interrupt

    if _replica_rank() > 0:  # a task of a multi-task SLURM job other than rank 0
        return _run_slurm_replica(cfg)
    interrupt.install()  # under submitit: SIGUSR2 and SIGTERM are hydrahead's from here on
    run_dir = RunDir(cfg.paths.output_dir).create()
    _keep_library_files_in(Path(cfg.paths.cache_dir))
    start = time.perf_counter()
    job = hydra_job()
    secrets = secret_values(cfg)  # resolved once: the whole config is walked
    config_digest = digest(OmegaConf.to_container(cfg, resolve=True))
    done = run_dir.completed_record(config_digest)
    if done is not None:
        # A requeued chunk of sweep jobs runs its finished jobs again: they are done, not redone.
        log.info("%s already holds this run, completed; nothing to do", run_dir.path)
        return RunResult(run_dir.path, done)
    run_dir.begin(
        monitor=cfg.task.monitor,
        seed=cfg.seed,
        overrides=[redact(o, secrets) for o in job.get("overrides", [])],
        config_digest=config_digest,
    )
    if cfg.logger.name == "wandb":  # one W&B run per job: its attempts append to it
        run_dir.record.setdefault("wandb_id", _new_wandb_id())
    stopped = None
    steps_before = run_dir.record.get("steps_executed", 0)
    try:
        with interrupt.job():
            typed = validate(cfg)
            run_dir.save_config(cfg, job.get("overrides", []))
            run_dir.write()
            record = _fit(cfg, typed, run_dir, job, secrets)
            interrupt.finishing()  # trained, evaluated, exported: a signal now changes nothing
            run_dir.record.update(record)
            run_dir.record["status"] = "completed"
        return RunResult(run_dir.path, run_dir.record)
    except interrupt.Interrupted as stop:
        with interrupt.deferred():
            stopped = interrupt.outcome()
            log.warning("%s: the job stops (%s, %s)", stop, stopped.status, stopped.reason)
            if stopped.status == "requeued":
                run_dir.requeue(stopped.reason, interrupt.progress.global_step)
            elif stopped.status == "cancelled":
                run_dir.cancel(stopped.reason)
            else:
                run_dir.fail(f"{stop}: {stopped.reason}")
        raise
    except BaseException as err:
        run_dir.fail(err)
        raise
    finally:
        with interrupt.deferred():
            run_dir.write(
                wall_s=round(time.perf_counter() - start, 3),
                steps_executed=steps_before + interrupt.progress.steps,
            )
            _finish_wandb(run_dir.record["status"])
            _finish_ddp(run_dir.record["status"] == "completed")
            _release_memory()
        if stopped is not None:
            interrupt.hand_over(stopped)  # submitit requeues (no result pickle), or the job ends


def _replica_rank() -> int:
    """This process's rank in a multi-process (DDP) job; 0 in rank 0 and in a one-process job."""
    imported = "hydrahead.training.ddp" in sys.modules or "HYDRAHEAD_DDP_RANK" in os.environ
    if not imported and int(os.environ.get("SLURM_NTASKS", "1") or 1) <= 1:
        return 0  # without importing Lightning
    from hydrahead.training.ddp import replica_rank

    return replica_rank()


def _finish_ddp(ok: bool) -> None:
    """Out of the process group, DDP workers reaped, the environment Lightning's launch set undone."""
    if "hydrahead.training.ddp" in sys.modules:
        from hydrahead.training import ddp

        ddp.finish(ok)


def run_replica(config: dict, check_done: bool = False) -> RunResult:
    """DDP rank > 0 of a job rank 0 runs (``hydrahead.cli.ddp_worker``, or a SLURM task): the same
    data, model and Lightning fit, its share of every batch and evaluation, and nothing written:
    rank 0 keeps the run dir. ``config`` is the job's resolved config (a plain dict).
    ``check_done``: a job this dir already completed is not trained again (rank 0 skips it too).
    """
    from hydrahead.config.schema import TrainConfig
    from hydrahead.data.cache import digest

    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), config)
    run_dir = RunDir(cfg.paths.output_dir)
    rank = _replica_rank()
    if check_done and run_dir.completed_record(digest(config)) is not None:
        return RunResult(run_dir.path, {"status": "completed", "rank": rank})
    _keep_library_files_in(Path(cfg.paths.cache_dir))
    typed = validate(cfg, deep=False)  # rank 0 has checked it deeply
    _fit(cfg, typed, run_dir, {}, secret_values(cfg))
    return RunResult(run_dir.path, {"status": "replica", "rank": rank})


def _run_slurm_replica(cfg: DictConfig) -> RunResult:
    """``run(cfg)`` in a SLURM task of rank > 0: :func:`run_replica`, then out of the process group.

    A signalled job (time limit, preemption, scancel) stops on every rank at the same optimizer step
    (``StopOnSignal`` reduces rank 0's decision); rank 0 records it and hands over to submitit, which
    requeues the whole job from rank 0. This rank waits quietly for that (as submitit's own handler
    does on ranks > 0), then exits without a result.
    """
    from hydrahead.training import interrupt

    ok, stopped = False, None
    try:
        result = run_replica(OmegaConf.to_container(cfg, resolve=True), check_done=True)
        ok = True
        return result
    except interrupt.Interrupted as stop:
        stopped = stop
        log.info("rank %d stops with rank 0 (%s): rank 0 records the job, requeues it", _replica_rank(), stop)
    finally:
        _finish_ddp(ok)
        _release_memory()
    time.sleep(120)  # SLURM's requeue (or the cancel) ends this task first
    raise SystemExit(-1 if stopped.signum == signal.SIGUSR2 else 128 + stopped.signum)


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
    """Train, evaluate the best checkpoint and export; returns what metrics.json adds.

    A whole frozen backbone trains on cached features: with the head trainer (a plain loop, see
    ``training.head_trainer``) unless a trainer or callbacks setting needs Lightning. Everything
    else (fine-tuning, partial freezing, ``backbone.cache=off``) is a Lightning fit.
    """
    import lightning as L

    from hydrahead.data.features import use_cache
    from hydrahead.training import head_trainer
    from hydrahead.training.checkpoint import labels_of

    _route_library_logs()
    L.seed_everything(typed.seed, workers=True)
    ckpt_path = typed.ckpt_path
    if ckpt_path is None and run_dir.last_checkpoint.is_file():
        # This run dir already trained: a requeued (preempted, timed-out) or restarted job.
        log.info("resuming from this run's own %s", run_dir.last_checkpoint)
        ckpt_path = str(run_dir.last_checkpoint)
    if typed.data.prepare:
        from hydrahead.data.prepare import ensure_prepared

        ensure_prepared(typed.data.prepare, Path(typed.paths.data_dir))
    labels = labels_of(ckpt_path) if ckpt_path else None
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)  # ++trainer.<arg>= included
    hparams_base = masked_config(cfg)
    cached, why = use_cache(typed.backbone.cache, typed.backbone.freeze)
    if not cached:
        log.info("feature cache %s", why)
        return _fit_lightning(cfg, typed, run_dir, job, secrets, trainer_args, ckpt_path, labels, why)
    needs_lightning = head_trainer.unsupported(trainer_args, typed.callbacks)
    if needs_lightning:
        log.info("head trainer: %s", needs_lightning)
        return _fit_lightning(
            cfg, typed, run_dir, job, secrets, trainer_args, ckpt_path, labels, None, needs_lightning
        )
    if _replica_rank() > 0:
        # The head trainer is one process (a head on cached features gains nothing from more): under
        # a multi-task SLURM job rank 0 trains it alone, and the other tasks go on to the next job.
        log.info("head trainer: rank 0 trains this frozen head alone")
        return {}
    return _fit_head(typed, run_dir, job, secrets, trainer_args, ckpt_path, labels, hparams_base)


def _fit_head(typed, run_dir, job, secrets, trainer_args, ckpt_path, labels, hparams_base) -> dict:
    """A frozen-backbone job on cached features with the head trainer: no Lightning Trainer."""
    from hydrahead.build import build_model
    from hydrahead.data.features import select
    from hydrahead.export import export_model
    from hydrahead.training import factories, interrupt
    from hydrahead.training.head_trainer import ENGINE, HeadTrainer
    from hydrahead.utils import malloc

    bb, data = typed.backbone, typed.data
    shared, feature_cache = shared_frozen(typed, labels, trainer_args)
    run_dir.write_labels(shared.labels, shared.encoded.control)
    model, _ = build_model(
        bb,
        labels=shared.labels,
        head=typed.head,
        task=typed.task.name,
        level=data.level,
        seed=typed.seed,
        tokenizer=shared.tokenizer,
        encoder=shared.encoder,
    )
    loss_record = _loss_options(model, typed, shared.encoded, shared.labels)
    splits = select(shared.payload, model.layer_indices, typed.head.pooling, data.level, shared.row_labels)
    params_total, params_trainable = _parameter_counts(model, head_only=True)
    hparams = {**hparams_base, "labels": shared.labels}
    with interrupt.deferred():  # W&B's init is not stopped halfway
        logger = factories.build_logger(
            typed.logger,
            run_dir.path,
            hparams,
            redact(job.get("name", "run"), secrets),
            job.get("sweep_id"),
            quiet=True,
            run_id=run_dir.record.get("wandb_id"),
        )
        if logger:
            logger.log_hyperparams({"params_total": params_total, "params_trainable": params_trainable})
    reference = _backbone_reference(typed)
    trainer = HeadTrainer(
        model,
        splits,
        shared.encoded,
        typed,
        run_dir.checkpoints,
        hparams,
        trainer_args,
        logger=logger,
        extra_state={"backbone_ref": reference} if reference else None,
    )
    heap = malloc.policy(typed.malloc, trains_backbone=False, on_cpu=trainer.device.type == "cpu")
    result = trainer.fit(resume=ckpt_path)
    metrics = result.pop("metrics")
    outputs = dict(trainer.final_outputs)
    if "validation" not in outputs and (typed.calibrate or "test" not in outputs):
        outputs["validation"] = trainer.outputs("validation")
    extra = {**loss_record, **_finish(model, typed, outputs, run_dir, metrics, logger)}
    extra.update(_controls_record(typed, shared.encoded, shared.labels))
    if typed.task.mdl:
        from hydrahead.training.mdl import online_code

        extra["mdl"] = online_code(model, splits, shared.encoded, typed, trainer_args)
        metrics.update(extra["mdl"]["metrics"])
    best = metrics.get(typed.task.monitor)
    if typed.export is True:  # the card's metrics are metrics.json's: all of them are known here
        card = {**run_dir.record, **result, "metrics": metrics, "engine": ENGINE, "config": hparams}
        export_model(model, run_dir.model_dir, shared.tokenizer, card=card)
    if logger:
        logger.log_metrics({f"final/{k}": v for k, v in metrics.items()})
        if typed.logger.name == "wandb":
            logger.experiment.summary.update({**metrics, "best": best})
        logger.finalize("success")
    # A finished frozen-head run keeps its best head (what export and reproduce read), not the
    # optimizer state only a resume would need: a sweep job stays head-sized on disk.
    interrupt.finishing()  # without last.ckpt a requeued attempt would train again from scratch
    run_dir.last_checkpoint.unlink(missing_ok=True)
    return {
        "metrics": metrics,
        "monitor": typed.task.monitor,
        "best": best,
        **result,
        "params_trainable": params_trainable,
        "params_total": params_total,
        "labels": shared.labels,
        "feature_cache": feature_cache,
        "engine": ENGINE,
        "malloc": heap,
        "backbone_ref": reference,
        **extra,
    }


def _controls_record(typed: TrainConfig, encoded, labels: list[str]) -> dict:
    """What metrics.json keeps beside the metrics: the control task and the majority-class baseline."""
    from hydrahead.training.metrics import majority_baseline

    out = {}
    if encoded.control is not None:
        out["control"] = {k: v for k, v in encoded.control.items() if k != "mapping"}
        if typed.data.level == "token":
            out["control"]["note"] = (
                "control tags are random per word type: entity-level metrics are not computed; "
                "compare token accuracy"
            )
    baseline = majority_baseline(encoded, labels) if typed.task.name == "multiclass" else None
    if baseline:
        out["baselines"] = {"majority": baseline}
    return out


def _loss_options(model, typed: TrainConfig, encoded, labels: list[str]) -> dict:
    """Class weights, positive weights and label smoothing resolved (``balanced``: from train's
    counts) into the model's config, which the loss reads; returns metrics.json's ``loss`` entry."""
    from hydrahead.training.imbalance import resolve

    options, record = resolve(typed.task, encoded, labels)
    model.config.loss = options
    return {"loss": record} if record else {}


def _finish(model, typed: TrainConfig, outputs: dict, run_dir: RunDir, metrics: dict, logger) -> dict:
    """Calibrate (``calibrate=temperature``) and write the per-class, confusion and reliability reports
    of the best model; they go to W&B too. Returns metrics.json's ``calibration`` and ``reports``."""
    from hydrahead.training.evaluation import finish

    record, files = finish(model, typed.task, typed.calibrate, outputs, run_dir.path, metrics)
    if logger and typed.logger.name == "wandb":
        import csv

        with open(files["per_class"], newline="") as handle:
            rows = list(csv.reader(handle))
        logger.log_table("reports/per_class", columns=rows[0], data=rows[1:])
        logger.log_image("reports/confusion_matrix", [str(files["confusion_png"])])
        logger.log_image("reports/reliability", [str(files["reliability_png"])])
    if "calibration" in record:
        log.info("calibration: temperature %.4g", record["calibration"]["temperature"])
    return record


def _backbone_reference(typed) -> dict | None:
    """Where a frozen run's backbone comes from (name, revision, weight digests), for hydrahead-export."""
    try:
        from hydrahead.backbone_ref import backbone_reference
    except ImportError:
        return None
    return backbone_reference(typed.backbone, typed.seed)


def _parameter_counts(model, head_only: bool = False) -> tuple[int, int]:
    """(total, trainable) parameters of the network the run trains (with an adapter: trainable is the
    adapter's and the head's); a shared backbone (``head_only``) counts only up to the highest layer
    this head reads, as a backbone built for it alone would."""
    from hydrahead.modeling.modeling_hydrahead import find_layer_list

    unread: set[int] = set()
    if head_only:
        stack = find_layer_list(model.backbone) or []
        unread = {id(p) for block in list(stack)[max(model.layer_indices) :] for p in block.parameters()}
    total = sum(p.numel() for p in model.parameters() if id(p) not in unread)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


@dataclass
class SharedFrozen:
    """What the frozen-head jobs of one process share: tokenizer, encoded data, backbone, feature entry."""

    key: str
    tokenizer: object
    labels: list[str]
    encoded: object
    encoder: object
    payload: dict
    path: Path
    depth: int
    """The entry (and the shared backbone) hold layers 0..depth."""
    full_depth: int
    status: str
    entry_stat: tuple | None = None
    """The entry file when it was mapped: a file replaced since is mapped again, never read stale."""
    row_labels: dict | None = None
    """Per split, the labels of the entry's rows from ``encoded`` (a control task's); None: the entry's."""
    variants: dict = dataclasses.field(default_factory=dict)
    """Control variants of the data (control spec -> (labels, encoded, row_labels)) on the same features."""

    def variant(self, spec, typed, labels):
        """This slot with the data relabelled by control task ``spec`` (the real task: None); each
        variant is loaded once (from the tokenized cache after its first run) and kept with the slot."""
        found = self.variants.get(spec)
        if found is None:
            from hydrahead.data.features import row_labels

            _, datamodule = _load_data(typed, labels)
            encoded = datamodule.encoded()
            if encoded.inputs_key != self.encoded.inputs_key:
                raise RuntimeError("a control task changed the inputs: its features cannot be shared")
            found = self.variants[spec] = (datamodule.labels, encoded, row_labels(encoded))
        return dataclasses.replace(self, labels=found[0], encoded=found[1], row_labels=found[2])


_SHARED: dict[str, SharedFrozen] = {}


def shared_frozen(typed: TrainConfig, labels: list[str] | None, trainer_args: dict):
    """The tokenizer, data, backbone and feature-cache entry for this frozen job, and how the entry
    was had: "computed" (this job ran the encoder pass), "hit" (read from the cache dir) or
    "memory" (kept from an earlier job of this process, which is how a sweep pays one pass).

    One slot: a sweep's jobs on one backbone and data share it; a job on other data replaces it.
    """
    import torch

    from hydrahead.build import build_model
    from hydrahead.data.cache import digest
    from hydrahead.data.control import spec_of
    from hydrahead.data.features import load_entry, weights_source

    bb, data = typed.backbone, typed.data
    control = spec_of(typed.task)
    precision = str(trainer_args.get("precision", "32-true"))
    autocast = torch.bfloat16 if precision.startswith("bf16") else None
    accelerator = str(trainer_args.get("accelerator"))
    on_gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    random_weights = not bb.pretrained or bb.name_or_path.startswith("tiny")
    key = digest(
        {
            "backbone": dataclasses.asdict(bb),
            "data": dataclasses.asdict(data),
            "task": typed.task.name,
            "labels": labels,
            "seed": bb.weights_seed(typed.seed) if random_weights else None,
            "cache_dir": typed.paths.cache_dir,  # data files are in "data", resolved
            "autocast": str(autocast),
            "gpu": on_gpu,
            # an edited data file makes another entry (its content is in the cache key; this is cheaper)
            "files": [_stat(getattr(data, k)) for k in ("train_file", "validation_file", "test_file")],
        }
    )
    from hydrahead.modeling.head_spec import resolve_layers

    found = _SHARED.get("slot")
    reusable = found is not None and found.key == key and _stat(found.path) == found.entry_stat
    if reusable and max(resolve_layers(typed.head.layer, found.full_depth)) <= found.depth:
        return found.variant(control, typed, labels), "memory"
    _SHARED.clear()
    # The backbone pass reads the inputs alone: a control task's data (other labels, the same inputs
    # and labelled items) shares the real task's entry, and so the pass.
    tokenizer, datamodule = _load_data(typed, labels, control=False)
    # The backbone as deep as the entry: every layer (backbone.cache_layers=all), or up to the
    # highest this job reads (read).
    reads = {"layer": "all"} if bb.cache_layers == "all" else {"layer": typed.head.layer}
    model, _ = build_model(
        bb,
        labels=datamodule.labels,
        head=reads,
        task=typed.task.name,
        level=data.level,
        seed=typed.seed,
        tokenizer=tokenizer,
    )
    depth = max(model.layer_indices)
    encoded = datamodule.encoded()
    if on_gpu:
        model.cuda()
    try:
        payload, path, status = load_entry(
            model,
            encoded,
            typed.paths.cache_dir,
            weights=weights_source(bb, model, typed.seed),
            depth=depth,
            dtype=bb.cache_dtype,
            autocast_dtype=autocast,
        )
    finally:
        if on_gpu:
            model.cpu()
    log.info("feature cache %s: %s", status, path)
    shared = SharedFrozen(
        key,
        tokenizer,
        datamodule.labels,
        encoded,
        model.backbone,
        payload,
        path,
        depth,
        model.config.backbone_layers,
        status,
        _stat(path),
    )
    shared.variants[None] = (shared.labels, shared.encoded, None)
    _SHARED["slot"] = shared
    # The encoded data is millions of small Python objects that live as long as the slot: keep them
    # out of every later full garbage collection (one per job otherwise costs 0.3 s on MiniLM's data).
    # Reference counting still frees them when the slot is replaced.
    import gc

    gc.collect()
    gc.freeze()
    return shared.variant(control, typed, labels), status


def _load_data(typed: TrainConfig, labels: list[str] | None, control: bool = True):
    """The backbone's tokenizer and the loaded (read, labelled, encoded) data module: relabelled by
    the run's control task (``task.control``) unless ``control=False``."""
    from hydrahead.backbones import load_tokenizer
    from hydrahead.data.control import spec_of
    from hydrahead.data.datamodule import HeadDataModule

    bb, data = typed.backbone, typed.data
    tokenizer = load_tokenizer(
        bb.name_or_path,
        revision=bb.revision,
        trust_remote_code=bb.trust_remote_code,
        words=data.level != "sequence",
    )
    datamodule = HeadDataModule(
        data,
        tokenizer,
        typed.task.name,
        labels=labels,
        cache_dir=typed.paths.cache_dir,
        control=spec_of(typed.task) if control else None,
    )
    datamodule.load()
    from hydrahead.training.imbalance import check_lengths

    check_lengths(typed.task, datamodule.labels)  # before any weights load or any encoder pass
    return tokenizer, datamodule


def _stat(path) -> tuple | None:
    try:
        info = os.stat(path)
    except (OSError, TypeError):
        return None
    return (str(path), info.st_ino, info.st_size, info.st_mtime_ns)


def _fit_lightning(
    cfg, typed, run_dir, job, secrets, trainer_args, ckpt_path, labels, uncached_why, lightning_why=None
) -> dict:
    """A Lightning fit: on token batches, or on cached features when the head trainer cannot take the run."""
    import torch
    from lightning.pytorch.accelerators import CPUAccelerator

    from hydrahead.build import build_model
    from hydrahead.data.features import FeatureDataModule, select
    from hydrahead.export import export_model
    from hydrahead.training import factories, interrupt
    from hydrahead.training.evaluation import SplitOutputs
    from hydrahead.training.module import HeadModule
    from hydrahead.utils import malloc

    bb, data = typed.backbone, typed.data
    # DDP: rank 0 (lead) writes everything; the other ranks train and evaluate their shares alone.
    lead = _replica_rank() == 0
    if uncached_why is None:  # cached features, Lightning loop
        shared, feature_cache = shared_frozen(typed, labels, trainer_args)
        tokenizer, labels = shared.tokenizer, shared.labels
    else:
        shared, feature_cache = None, uncached_why
        tokenizer, datamodule = _load_data(typed, labels)
        labels = datamodule.labels
    encoded = shared.encoded if shared else datamodule.encoded()
    if lead:
        run_dir.write_labels(labels, encoded.control)
    model, _ = build_model(
        bb,
        labels=labels,
        head=typed.head,
        task=typed.task.name,
        level=data.level,
        seed=typed.seed,
        tokenizer=tokenizer,
        encoder=shared.encoder if shared else None,
    )
    loss_record = _loss_options(model, typed, encoded, labels)
    if shared:
        splits = select(
            shared.payload, model.layer_indices, typed.head.pooling, data.level, shared.row_labels
        )
        train_on, has_test = FeatureDataModule(shared.encoded, splits), "test" in splits
    else:
        train_on, has_test = datamodule, datamodule.has_test
    params_total, params_trainable = _parameter_counts(model)
    if bb.compile and shared is None:
        model.backbone.compile()
    hparams = {**masked_config(cfg), "labels": labels}
    module = HeadModule(
        model, typed.optimizer, typed.scheduler, typed.task, data.seqeval_strict, hparams=hparams
    )
    with interrupt.deferred():  # W&B's init is not stopped halfway
        logger = lead and factories.build_logger(
            typed.logger,
            run_dir.path,
            hparams,
            redact(job.get("name", "run"), secrets),
            job.get("sweep_id"),
            run_id=run_dir.record.get("wandb_id"),
        )
        if logger:
            logger.log_hyperparams({"params_total": params_total, "params_trainable": params_trainable})
    callbacks = factories.build_callbacks(typed.callbacks, typed.task, run_dir.checkpoints, bool(logger))
    # What DDP workers start from: this job's config, resolved, resuming where this rank resumes.
    worker = None
    if lead:
        worker = {"config": {**OmegaConf.to_container(cfg, resolve=True), "ckpt_path": ckpt_path}}
    trainer = factories.build_trainer(
        trainer_args, run_dir.path, logger, callbacks, typed.callbacks.rich_progress_bar, worker=worker
    )
    heap = malloc.policy(
        typed.malloc,
        trains_backbone=any(p.requires_grad for p in model.backbone.parameters()),
        on_cpu=isinstance(trainer.accelerator, CPUAccelerator),
    )
    log.info("C heap: %s", heap)
    interrupt.quiet_lightning(trainer)  # under submitit the signals are hydrahead's alone
    with interrupt.deferred():  # a signal stops the fit at an optimizer step (StopOnSignal)
        trainer.fit(module, datamodule=train_on, ckpt_path=ckpt_path)
    if trainer.received_sigterm:  # Lightning stops quietly; this run must not look finished
        raise RuntimeError(
            f"stopped by SIGTERM in epoch {trainer.current_epoch}; "
            f"resume with ckpt_path={run_dir.last_checkpoint}"
        )
    throughput = next(c for c in callbacks if type(c).__name__ == "Throughput")
    best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    metrics = {}
    module.keep_outputs = True  # the best checkpoint's logits: calibration and reports read them
    for stage, evaluate in (("validate", trainer.validate), ("test", trainer.test)):
        if stage == "test" and not has_test:
            continue
        for result in evaluate(
            module, datamodule=train_on, ckpt_path="best" if best_path else None, verbose=False
        ):
            metrics.update({k: float(v) for k, v in result.items()})
    module.keep_outputs = False
    ddp_record = None
    if trainer.world_size > 1:
        from hydrahead.training import ddp

        module.kept = ddp.gather_kept(module.kept)  # every rank's share of the final evaluation
        ranks = ddp.gather(
            {
                "rank": trainer.global_rank,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "feature_cache": feature_cache,
                "train_samples": throughput.samples,
            }
        )
        ddp.end_collectives()
        if not lead:
            return {}
        ddp_record = {
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "cluster": type(trainer.strategy.cluster_environment).__name__,
            "ranks": ranks,
        }
        throughput.samples = sum(r["train_samples"] for r in ranks)  # the job's, not rank 0's
    outputs = {
        split: SplitOutputs(
            torch.cat(module.kept[stage]["logits"]),
            torch.cat(module.kept[stage]["labels"]),
            metrics.get(f"{stage}/loss", float("nan")),
        )
        for split, stage in (("validation", "val"), ("test", "test"))
        if module.kept.get(stage, {}).get("logits")
    }
    finished = _finish(module.model, typed, outputs, run_dir, metrics, logger)
    extra = {**loss_record, **finished, **_controls_record(typed, encoded, labels)}
    if typed.task.mdl and shared:
        from hydrahead.training.mdl import online_code

        extra["mdl"] = online_code(module.model, splits, shared.encoded, typed, trainer_args)
        metrics.update(extra["mdl"]["metrics"])
    if bb.adapter:
        from hydrahead.adapters import adapter_record

        extra["adapter"] = adapter_record(module.model, bb)
    if typed.export is True or (typed.export == "auto" and bb.freeze is not True):
        # After MDL: the card's metrics are metrics.json's, every one known by now.
        card = {**run_dir.record, **extra, "metrics": metrics, "epochs": trainer.current_epoch}
        export_model(module.model, run_dir.model_dir, tokenizer, card={**card, "config": hparams})
    best = metrics.get(typed.task.monitor)
    if logger and typed.logger.name == "wandb":
        logger.experiment.summary.update({**metrics, "best": best})
    return {
        **extra,
        "metrics": metrics,
        "monitor": typed.task.monitor,
        "best": best,
        "best_checkpoint": best_path or None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "params_trainable": params_trainable,
        "params_total": params_total,
        "labels": labels,
        "feature_cache": feature_cache,
        "engine": "lightning" + (f" ({lightning_why})" if lightning_why else ""),
        "malloc": heap,
        "train_s": round(throughput.seconds, 3),
        "train_samples_per_s": throughput.samples_per_s,
        **({"ddp": ddp_record} if ddp_record else {}),
    }


def _keep_library_files_in(cache_dir: Path) -> None:
    """W&B keeps settings, caches and debug logs under $HOME unless told otherwise: keep them here."""
    os.environ.setdefault("WANDB_CACHE_DIR", str(cache_dir / "wandb"))
    os.environ.setdefault("WANDB_CONFIG_DIR", str(cache_dir / "wandb-config"))
    os.environ.setdefault("WANDB_DATA_DIR", str(cache_dir / "wandb-data"))
    os.environ.setdefault("MPLCONFIGDIR", str(cache_dir / "matplotlib"))  # imported by logging libraries
    # W&B's service makes its log folders 0o755 whatever the umask; made here first, they follow it
    # (so colleagues sharing the cache dir can add theirs).
    (cache_dir / "wandb" / "wandb" / "logs").mkdir(parents=True, exist_ok=True)


def _route_library_logs() -> None:
    """Lightning installs its own console handlers; under Hydra's logging they print every line twice."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if logging.getLogger().handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True


def _new_wandb_id() -> str:
    """A W&B run id (8 lowercase letters and digits, as W&B's own), kept in metrics.json."""
    import secrets as random_source
    import string

    alphabet = string.ascii_lowercase + string.digits
    return "".join(random_source.choice(alphabet) for _ in range(8))


def _finish_wandb(status: str) -> None:
    """Close this job's W&B run, so each job of a multirun is a run of its own (``status``: the
    run's; a requeued run is marked preempting: its next attempt resumes it)."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            folder = Path(wandb.run.dir)
            try:
                if status == "requeued":
                    wandb.run.mark_preempting()
                wandb.finish(exit_code=0 if status == "completed" else 1)
            except Exception as err:
                # scancel's SIGTERM reaches W&B's service process too, and it stops at once: its
                # offline log keeps what it had flushed (every 15 s). Nothing more to close.
                log.warning("W&B's service is gone (%s: %s); the run is not closed", type(err).__name__, err)
                with contextlib.suppress(Exception):
                    wandb.teardown()
                return
            # W&B writes the captured console 0o644 whatever the umask: rewritten, it follows it.
            from hydrahead.utils.atomic import atomic_path

            for path in folder.glob("output.log"):
                data = path.read_bytes()
                with atomic_path(path) as tmp:
                    tmp.write_bytes(data)


def _release_memory() -> None:
    """Free this job's model and hand its memory back before a sweep's next job builds one.

    Trainer and module hold each other (a cycle: ``gc``); glibc keeps freed heap pages resident, so
    without a trim each job of a multirun would start from the previous job's peak.
    """
    from hydrahead.utils import malloc

    gc.collect()
    malloc.trim()
