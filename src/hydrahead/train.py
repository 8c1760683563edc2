"""``hydrahead-train`` (also ``python -m hydrahead.train``): one experiment, one run directory.

compose config -> validate (before any weights load) -> data -> model -> Lightning fit ->
evaluate the best checkpoint (test split, else validation) -> export -> ``metrics.json``.

Module-level imports stay light so ``hydrahead-train --cfg job`` answers in about two seconds;
torch, transformers, Lightning and W&B load only when a run starts.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import re
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path

import hydra
import hydra.experimental.callback
from omegaconf import DictConfig, OmegaConf, open_dict

from hydrahead.config import ConfigError, register_configs, validate
from hydrahead.utils.paths import config_dir, project_root

log = logging.getLogger("hydrahead.train")


def _invocation_id() -> str:
    """A short random id shared by a launch and every job process it starts (inherited env)."""
    return os.environ.setdefault("HYDRAHEAD_INVOCATION_ID", secrets.token_hex(3))


def _job_subdir(num, job_id) -> str:
    """``<num>`` for in-process jobs; ``<num>_<scheduler job id>`` under submitit/SLURM."""
    return str(num) if str(job_id) == str(num) else f"{num}_{job_id}"


def _mkdir(path: str) -> str:
    """The directory, created if needed (Optuna opens its SQLite file before Hydra makes the sweep dir)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


def register_resolvers() -> None:
    """Resolvers the shipped configs use (idempotent).

    ``hh.root``: where outputs/ and data/ live. ``hh.uid``: the invocation id (stable across the
    processes of one launch); ``hh.token``: fresh random hex per use. ``hh.job_subdir``:
    a sweep job's directory name. ``hh.direction``: task.mode (max/min) as an optimizer direction.
    ``hh.mkdir``: a directory path, created on first use.
    """
    resolvers = {
        "hh.root": lambda: str(project_root()),
        "hh.uid": _invocation_id,
        "hh.token": lambda: secrets.token_hex(3),
        "hh.job_subdir": _job_subdir,
        "hh.direction": lambda mode: {"max": "maximize", "min": "minimize"}[mode],
        "hh.mkdir": _mkdir,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_configs()
register_resolvers()


def write_json(path: Path, payload: dict) -> None:
    """Write atomically: a reader (compare, a sweep monitor) never sees half a file."""
    from hydrahead.utils.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str))


def _hydra_job_info() -> dict:
    """Run name, W&B group and mode from Hydra's runtime config (empty outside a Hydra job)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = hc.job.override_dirname or "defaults"
    return {
        "multirun": multirun,
        "overrides": list(hc.overrides.task),
        "name": f"{hc.job.num}-{overrides}" if multirun else overrides,
        "sweep_id": Path(hc.sweep.dir).name if multirun else None,
    }


SECRET_NAME = re.compile(r"(token|secret|passw(or)?d|api_?key|credential|private_key)", re.I)


def secret_values(cfg: DictConfig | None = None) -> set[str]:
    """Values that must not be written anywhere: secret-named env variables and config keys."""
    values = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 6}
    if cfg is not None:

        def walk(node, key=""):
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, str(k))
            elif isinstance(node, str) and SECRET_NAME.search(key) and len(node) >= 6:
                values.add(node)

        walk(OmegaConf.to_container(cfg, resolve=True))
    return values


def redact(text: str, secrets: set[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def masked_config(cfg: DictConfig) -> dict:
    """The resolved config as a plain dict, secrets masked: keys that name a secret, and values
    interpolated from environment variables that do (``${oc.env:HF_TOKEN}``). This is what W&B
    and the checkpoints receive."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    raw = OmegaConf.to_container(cfg, resolve=False)

    def walk(node, source, key=""):
        if isinstance(node, dict):
            inner = source if isinstance(source, dict) else {}
            return {k: walk(v, inner.get(k), str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, None, key) for v in node]
        env = re.findall(r"\$\{oc\.env:([^,}]+)", source) if isinstance(source, str) else []
        if node is not None and (SECRET_NAME.search(key) or any(SECRET_NAME.search(name) for name in env)):
            return "***"
        return node

    return walk(resolved, raw)


def build_logger(cfg: DictConfig, run_dir: Path, resolved: dict):
    name = cfg.logger.name
    if name == "none":
        return False
    if name == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
    from lightning.pytorch.loggers import WandbLogger

    job = _hydra_job_info()
    wb = cfg.logger.wandb
    if wb.api_key:
        os.environ["WANDB_API_KEY"] = wb.api_key
    return WandbLogger(
        project=wb.project,
        entity=wb.entity,
        name=redact(job.get("name", "run"), secret_values(cfg)),
        group=wb.group or job.get("sweep_id"),
        tags=list(wb.tags),
        save_dir=str(run_dir),
        mode=wb.mode or os.environ.get("WANDB_MODE", "offline"),
        config=resolved,
    )


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list:
    from lightning.pytorch import callbacks as cb

    from hydrahead.training.callbacks import RunCheckpoint, Throughput

    c = cfg.callbacks
    directory = str(run_dir / "checkpoints")
    best = RunCheckpoint(
        dirpath=directory,
        filename="best" if c.save_top_k == 1 else "best-epoch{epoch:02d}",
        monitor=cfg.task.monitor,
        mode=cfg.task.mode,
        save_top_k=c.save_top_k,
        auto_insert_metric_name=False,
    )
    # A checkpoint of its own for last.ckpt: Lightning's save_last only rewrites it when the
    # monitored metric improved, so a resume would restart from the best epoch, not the last.
    last = RunCheckpoint(dirpath=directory, filename="last", save_top_k=1, enable_version_counter=False)
    callbacks = [best, last, Throughput()]
    if c.lr_monitor and cfg.logger.name != "none":
        callbacks.append(cb.LearningRateMonitor(logging_interval="step"))
    if c.rich_progress_bar:
        callbacks.append(cb.RichProgressBar())
    if c.early_stopping.enabled:
        callbacks.append(
            cb.EarlyStopping(
                monitor=cfg.task.monitor,
                mode=cfg.task.mode,
                patience=c.early_stopping.patience,
                min_delta=c.early_stopping.min_delta,
            )
        )
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


def labels_from_checkpoint(ckpt_path: str) -> list[str] | None:
    """The label vocabulary a checkpoint was trained with (so a resume never re-derives it)."""
    from hydrahead.config import read_checkpoint

    return (read_checkpoint(ckpt_path).get("hyper_parameters") or {}).get("labels")


def _route_library_logs() -> None:
    """Lightning installs its own console handlers; under Hydra's logging they print every line twice."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if logging.getLogger().handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True


def fit(cfg: DictConfig, run_dir: Path) -> dict:
    """Train, evaluate the best checkpoint and export; returns the metrics.json payload."""
    import lightning as L
    from lightning.pytorch.accelerators import CPUAccelerator

    from hydrahead.utils import malloc
    from hydrahead.backbones import load_tokenizer
    from hydrahead.build import build_model
    from hydrahead.data.datamodule import HeadDataModule
    from hydrahead.export import export_model
    from hydrahead.training.callbacks import AtomicCheckpointIO
    from hydrahead.training.module import HeadModule

    _route_library_logs()
    L.seed_everything(cfg.seed, workers=True)
    bb = cfg.backbone
    tokenizer = load_tokenizer(
        bb.name_or_path,
        revision=bb.revision,
        trust_remote_code=bb.trust_remote_code,
        words=cfg.data.level != "sequence",
    )
    ckpt_path = cfg.ckpt_path
    own_last = run_dir / "checkpoints" / "last.ckpt"
    if ckpt_path is None and own_last.is_file():
        # This run dir already trained: a requeued (preempted, timed-out) or restarted job.
        log.info("resuming from this run's own %s", own_last)
        ckpt_path = str(own_last)
    labels = labels_from_checkpoint(ckpt_path) if ckpt_path else None
    if cfg.data.prepare:
        from hydrahead.prepare import ensure_prepared

        ensure_prepared(cfg.data.prepare, Path(cfg.paths.data_dir))
    datamodule = HeadDataModule(
        cfg.data, tokenizer, cfg.task.name, labels=labels, cache_dir=cfg.paths.cache_dir
    ).load()
    write_json(run_dir / "labels.json", {"labels": datamodule.labels})
    model, _ = build_model(
        bb.name_or_path,
        labels=datamodule.labels,
        head=_head_spec(cfg),
        task=cfg.task.name,
        level=cfg.data.level,
        freeze=bb.freeze,
        pretrained=bb.pretrained,
        revision=bb.revision,
        trust_remote_code=bb.trust_remote_code,
        dtype=bb.dtype,
        attn_implementation=bb.attn_implementation,
        resize_token_embeddings=bb.resize_token_embeddings,
        seed=cfg.seed,
        tokenizer=tokenizer,
    )
    params_total = sum(p.numel() for p in model.parameters())
    params_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    training_data, feature_cache = cached_features(cfg, model, datamodule)
    if bb.compile and feature_cache == "off":
        model.backbone.compile()
    resolved = masked_config(cfg)
    resolved["labels"] = datamodule.labels
    module = HeadModule(model, resolved)
    logger = build_logger(cfg, run_dir, resolved)
    if logger:
        logger.log_hyperparams({"params_total": params_total, "params_trainable": params_trainable})
    callbacks = build_callbacks(cfg, run_dir)
    trainer_args = {
        k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if v is not None
    }
    trainer_args.setdefault("plugins", [*cluster_plugins(), AtomicCheckpointIO()])
    trainer = L.Trainer(
        **trainer_args,
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        enable_progress_bar=cfg.callbacks.rich_progress_bar,
        enable_model_summary=False,
    )
    heap = malloc.policy(
        cfg.malloc,
        trains_backbone=any(p.requires_grad for p in model.backbone.parameters()),
        on_cpu=isinstance(trainer.accelerator, CPUAccelerator),
    )
    log.info("C heap: %s", heap)
    trainer.fit(module, datamodule=training_data, ckpt_path=ckpt_path)
    if trainer.received_sigterm:  # Lightning stops quietly; this run must not look finished
        raise RuntimeError(
            f"stopped by SIGTERM in epoch {trainer.current_epoch}; resume with "
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
        )
    throughput = next(c for c in callbacks if type(c).__name__ == "Throughput")
    best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    ckpt = "best" if best_path else None
    metrics = {}
    for stage, run in (("validate", trainer.validate), ("test", trainer.test)):
        if stage == "test" and not datamodule.has_test:
            continue
        for result in run(module, datamodule=training_data, ckpt_path=ckpt, verbose=False):
            metrics.update({k: float(v) for k, v in result.items()})
    if cfg.export:
        export_model(module.model, run_dir / "model", tokenizer)
    best = metrics.get(cfg.task.monitor)
    if logger and hasattr(logger, "experiment") and cfg.logger.name == "wandb":
        logger.experiment.summary.update({**metrics, "best": best})
    return {
        "metrics": metrics,
        "monitor": cfg.task.monitor,
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


def cached_features(cfg: DictConfig, model, datamodule):
    """The data to train on: cached features of a frozen backbone when valid, else the token batches.

    Returns (datamodule, how: "hit" | "computed" | "off (why)").
    """
    import torch

    from hydrahead.features import feature_datamodule, load_features, use_cache, weights_source

    use, why = use_cache(cfg.backbone.cache, cfg.backbone.freeze)
    if not use:
        log.info("feature cache %s", why)
        return datamodule, why
    precision = str(cfg.trainer.precision)
    autocast = torch.bfloat16 if precision.startswith("bf16") else None
    accelerator = str(cfg.trainer.accelerator)
    on_gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    if on_gpu:
        model.cuda()
    try:
        splits, status = load_features(
            model,
            datamodule,
            cfg.paths.cache_dir,
            key_parts={
                "weights": weights_source(cfg.backbone, model, cfg.seed),
                "data": datamodule.data_key(),
            },
            store_layers=cfg.backbone.cache_layers,
            dtype=cfg.backbone.cache_dtype,
            autocast_dtype=autocast,
        )
    finally:
        if on_gpu:
            model.cpu()
    return feature_datamodule(datamodule, splits), status


def _head_spec(cfg: DictConfig) -> dict:
    head = OmegaConf.to_container(cfg.head, resolve=True)
    head.pop("level", None)
    return head


def train(cfg: DictConfig) -> float | None:
    """Run one job in ``cfg.paths.output_dir``; returns the monitored metric (for sweepers).

    ``metrics.json`` says ``running`` while it trains, then ``completed`` or ``failed`` with the
    error. Config errors are raised before any weights load.
    """
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # W&B keeps settings, caches and debug logs under $HOME unless told otherwise: keep them here.
    cache_dir = Path(cfg.paths.cache_dir)
    os.environ.setdefault("WANDB_CACHE_DIR", str(cache_dir / "wandb"))
    os.environ.setdefault("WANDB_CONFIG_DIR", str(cache_dir / "wandb-config"))
    os.environ.setdefault("WANDB_DATA_DIR", str(cache_dir / "wandb-data"))
    os.environ.setdefault("MPLCONFIGDIR", str(cache_dir / "matplotlib"))  # imported by logging libraries
    start = time.perf_counter()
    status_file = run_dir / "metrics.json"
    secrets = secret_values(cfg)  # resolved once: the whole config is walked
    payload: dict = {
        "status": "running",
        "monitor": cfg.task.monitor,
        # Who runs it: a reader can tell a live run from a killed one (pid gone on this host).
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": cfg.seed,
        "overrides": [redact(o, secrets) for o in _hydra_job_info().get("overrides", [])],
    }
    try:
        validate(cfg)
        write_json(status_file, payload)
        payload.update(fit(cfg, run_dir))
        payload["status"] = "completed"
        return payload["best"]
    except BaseException as err:
        payload.update(status="failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        payload["wall_s"] = round(time.perf_counter() - start, 3)
        write_json(status_file, payload)
        _finish_wandb(payload["status"] == "completed")
        _release_memory()


def _release_memory() -> None:
    """Free this job's model and hand its memory back before a sweep's next job builds one.

    Trainer and module hold each other (a cycle: ``gc``); glibc keeps freed heap pages resident, so
    without a trim each job of a multirun would start from the previous job's peak.
    """
    from hydrahead.utils import malloc

    gc.collect()
    malloc.trim()


def _finish_wandb(ok: bool) -> None:
    """Close this job's W&B run, so each job of a multirun is a run of its own."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=0 if ok else 1)


def sweep_summary(sweep_dir: str | Path) -> tuple[list[str], list[str]]:
    """Lines naming each job of a sweep dir that did not complete, and those that did."""
    failed, completed = [], []
    for job in sorted(p for p in Path(sweep_dir).iterdir() if (p / ".hydra").is_dir()):
        overrides = (job / ".hydra" / "overrides.yaml").read_text().replace("\n- ", " ").strip("- \n")
        try:
            status = json.loads((job / "metrics.json").read_text())
        except (OSError, ValueError):
            status = {"status": "failed", "error": "no metrics.json: killed before it started?"}
        line = f"{job.name} ({overrides})"
        if status.get("status") == "completed":
            completed.append(line)
        else:
            failed.append(f"{line}: {status.get('status')}: {status.get('error', '')}".rstrip(": "))
    return failed, completed


class SweepReport(hydra.experimental.callback.Callback):
    """Names the jobs of a multirun that failed (Hydra re-raises only the first error)."""

    sweep_dir: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        SweepReport.sweep_dir = str(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        report_sweep()


def report_sweep() -> None:
    if not SweepReport.sweep_dir or not Path(SweepReport.sweep_dir).is_dir():
        return
    failed, completed = sweep_summary(SweepReport.sweep_dir)
    total = len(failed) + len(completed)
    log.info("sweep %s: %d of %d jobs completed", SweepReport.sweep_dir, len(completed), total)
    if failed:
        message = "\n".join(f"  FAILED {line}" for line in failed)
        print(f"{len(failed)} of {total} sweep jobs failed:\n{message}", file=sys.stderr)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from hydrahead.data.encode import DataError

    try:
        return train(cfg)
    except SystemExit as stop:
        if type(stop).__name__ == "SIGTERMException":  # Lightning's, a SystemExit with status 0
            print(
                f"hydrahead-train: stopped by SIGTERM; resume with ckpt_path={cfg.paths.output_dir}/"
                "checkpoints/last.ckpt",
                file=sys.stderr,
            )
            raise SystemExit(143) from None
        raise
    except (ConfigError, DataError, OSError) as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweep records it and goes on with the other jobs
        if isinstance(err, OSError) and err.errno not in _DISK_ERRORS:
            raise
        where = f" (recorded in {cfg.paths.output_dir}/metrics.json)" if isinstance(err, OSError) else ""
        fail(f"{err}{where}")


# A full disk, a quota, a read-only or forbidden place: the user's to fix, said in one line.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def fail(message: str) -> None:
    """One line on stderr, exit status 2: the error a user can act on, without a traceback."""
    print(f"hydrahead-train: error: {message}", file=sys.stderr)
    raise SystemExit(2)


_NOT_A_RUN = (
    "-m",
    "--multirun",
    "--cfg",
    "-c",
    "--help",
    "-h",
    "--hydra-help",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--version",
    "--resolve",
    "-p",
    "--package",
)


def preflight(argv: list[str]) -> None:
    """Compose and validate a single run before Hydra creates its directory; exit 2 with one line.

    So a bad override, value, path or checkpoint never leaves a run dir behind, and the message
    names the key (or file) and what is allowed. Sweeps get the same checks per job.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if any(arg in _NOT_A_RUN or arg.startswith(("--config", "-cp", "-cn", "-cd")) for arg in argv):
        return
    overrides = [*argv, "paths.output_dir=/nonexistent/preflight"]
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        run_dir = Path(OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"])
        with open_dict(cfg):
            del cfg["hydra"]
        validate(cfg)
    except ConfigError as err:
        fail(str(err))
    except (HydraException, OmegaConfBaseException) as err:
        fail(describe_config_error(err))
    probe = next((p for p in [run_dir, *run_dir.parents] if p.exists()), None)
    try:  # try it for real: root passes every permission check, a read-only mount does not
        handle, probe_file = tempfile.mkstemp(dir=probe, prefix=".hydrahead-write-test-")
        os.close(handle)
        os.unlink(probe_file)
    except OSError as err:
        fail(
            f"cannot write the run directory {run_dir} ({probe}: {err.strerror}); set paths.log_dir "
            "or hydra.run.dir to a writable place"
        )


def describe_config_error(err: Exception) -> str:
    """Hydra's and OmegaConf's multi-line composition errors, as one line naming the key."""
    import re

    from hydrahead import config as schema

    text = str(err.__cause__ or err) if not str(err).startswith("Could not override") else str(err)
    full = f"{err}\n{err.__cause__ or ''}"
    key = re.search(r"full_key: (\S+)", full)
    key = key.group(1) if key else None
    missing = re.search(r"Key '([^']+)' not in '(\w+)'", full)
    if missing and key:
        node = getattr(schema, missing.group(2), None)
        allowed = ", ".join(node.__dataclass_fields__) if node is not None else ""
        return f"unknown key {key}; {key.rsplit('.', 1)[0]} has: {allowed}"
    option = re.search(r"Could not find '([^']+)'", full)
    if option:
        group, name = option.group(1).rsplit("/", 1) if "/" in option.group(1) else ("", option.group(1))
        choices = re.findall(r"^\t(\S+)$", full, re.M)
        return f"{group}={name}: no such option; available: {', '.join(choices)}"
    value = re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", full)
    if value and key:
        return f"{key}={value.group(1)}: expected {value.group(2).lower()}"
    if "Missing mandatory value" in full and key:
        return f"{key} is required (it has no value; set {key}=...)"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"{first}" + (f" ({key})" if key and key not in first else "")


def main() -> None:
    """Console entry point: preflight checks, Hydra's main, and a list of failed jobs when a sweep fails."""
    preflight(sys.argv[1:])
    try:
        _hydra_main()
    except SystemExit as stop:
        if stop.code not in (None, 0):
            report_sweep()
        raise


if __name__ == "__main__":
    main()
