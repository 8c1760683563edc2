"""Checkpoint IO and reading: atomic weights-only saves, safe loads, and what a checkpoint says.

Every checkpoint hydrahead reads is loaded with ``torch.load(weights_only=True)``: they hold only
tensors and plain data, so one carrying pickled code is refused, never run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from hydrahead.config.schema import ConfigError, TrainConfig
from hydrahead.utils.atomic import atomic_path


def read_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint, loaded with weights_only=True; ConfigError if missing, truncated or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        reason = str(err).splitlines()[0][:200]
        raise ConfigError(
            f"ckpt_path={path}: not a readable checkpoint (truncated or corrupt? "
            f"{type(err).__name__}: {reason})"
        ) from None


def saved_config(path: str | Path) -> dict:
    """The run config a checkpoint was trained with (``{}`` when it has none)."""
    return read_checkpoint(path).get("hyper_parameters") or {}


def labels_of(path: str | Path) -> list[str] | None:
    """The label vocabulary a checkpoint was trained with (so a resume never re-derives it)."""
    return saved_config(path).get("labels")


# What must match between a checkpoint and the config that resumes from it.
_RESUME_KEYS = [
    ("backbone", "name_or_path"),
    ("backbone", "adapter"),
    ("head", "layer"),
    ("head", "combine"),
    ("head", "pooling"),
    ("head", "hidden_layers"),
    ("head", "activation"),
    ("task", "name"),
    ("data", "level"),
]


def check_checkpoint(path: str | Path, typed: TrainConfig) -> dict:
    """The checkpoint's saved config must describe the same network as this config."""
    state = read_checkpoint(path)
    saved = state.get("hyper_parameters") or {}
    if "head" not in saved:
        raise ConfigError(f"ckpt_path={path}: not a hydrahead checkpoint (no saved run config)")
    differ = []
    for group, key in _RESUME_KEYS:
        old, new = saved.get(group, {}).get(key), getattr(getattr(typed, group), key)
        if old != new and not (isinstance(old, list) and list(new or []) == old):
            differ.append(f"{group}.{key}: checkpoint {old!r}, config {new!r}")
    if differ:
        raise ConfigError(f"ckpt_path={path} is incompatible with this config: " + "; ".join(differ))
    return state


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, synced, then renamed over the old one.

    A kill during a save leaves the previous ``last.ckpt`` intact, never half a file. Loading
    goes through :func:`read_checkpoint` (weights only; a truncated or corrupt file is a clear
    error naming it).
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path, sync=True) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return read_checkpoint(path)
