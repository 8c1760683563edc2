"""What Hydra needs before it composes: the ``hh.*`` resolvers and the schema in its ConfigStore."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from omegaconf import OmegaConf


def invocation_id() -> str:
    """A short random id shared by a launch and every job process it starts (inherited env)."""
    return os.environ.setdefault("HYDRAHEAD_INVOCATION_ID", secrets.token_hex(3))


def job_subdir(num, job_id) -> str:
    """``<num>`` for in-process jobs; ``<num>_<scheduler job id>`` under submitit/SLURM."""
    return str(num) if str(job_id) == str(num) else f"{num}_{job_id}"


def mkdir(path: str) -> str:
    """The directory, created if needed (Optuna opens its SQLite file before Hydra makes the sweep dir)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


def if_frozen(freeze, frozen_value, trainable_value):
    """``frozen_value`` when the whole backbone is frozen (``backbone.freeze=true``), else the other:
    the shipped defaults that differ between training a probe and fine-tuning."""
    return frozen_value if freeze is True else trainable_value


def if_tiny(name_or_path, tiny_value, other_value):
    """``tiny_value`` for a tiny random encoder (``backbone.name_or_path=tiny:*``), else the other: a
    4-layer, 32-wide encoder trained from scratch needs learning rates no pretrained backbone wants."""
    return tiny_value if str(name_or_path).startswith("tiny:") else other_value


def if_cpu(accelerator, cpu_value, other_value):
    """``cpu_value`` when the trainer runs on the CPU (``trainer.accelerator=cpu``), else the other:
    bf16 autocast pays on a GPU, not on a CPU."""
    return cpu_value if str(accelerator) == "cpu" else other_value


def register_resolvers() -> None:
    """Resolvers the shipped configs use (idempotent).

    ``hh.root``: where outputs/ and data/ live. ``hh.uid``: the invocation id (stable across the
    processes of one launch); ``hh.token``: fresh random hex per use. ``hh.job_subdir``: a sweep
    job's directory name. ``hh.direction``: task.mode (max/min) as an optimizer direction.
    ``hh.mkdir``: a directory path, created on first use. ``hh.if_frozen``: one value for a
    frozen backbone, another for a trainable one (``${hh.if_frozen:${backbone.freeze},A,B}``).
    ``hh.if_tiny``: one value for a tiny random encoder, another for the rest
    (``${hh.if_tiny:${backbone.name_or_path},A,B}``). ``hh.if_cpu``: one value on the CPU, another
    elsewhere (``${hh.if_cpu:${trainer.accelerator},A,B}``).
    """
    from hydrahead.utils.paths import project_root

    resolvers = {
        "hh.root": lambda: str(project_root()),
        "hh.uid": invocation_id,
        "hh.token": lambda: secrets.token_hex(3),
        "hh.job_subdir": job_subdir,
        "hh.direction": lambda mode: {"max": "maximize", "min": "minimize"}[mode],
        "hh.mkdir": mkdir,
        "hh.if_frozen": if_frozen,
        "hh.if_tiny": if_tiny,
        "hh.if_cpu": if_cpu,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def register_configs() -> None:
    """Put the schema into Hydra's ConfigStore as ``train_schema``, and the launchers as
    ``hydra/launcher=hydrahead`` (the default), ``hydrahead_local``, ``hydrahead_slurm`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    from hydrahead.sweep.launchers import register_launchers

    from .schema import TrainConfig

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    register_launchers()


def register() -> None:
    """Both: call before composing (the CLI does at import, :func:`hydrahead.config.compose` itself)."""
    register_configs()
    register_resolvers()
