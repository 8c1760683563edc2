"""The HF-compatible model: ``HydraHeadConfig`` + ``HydraHeadModel`` and the head spec they share.

Importing this package is cheap (the head spec only). The model classes load on first use, and
loading them registers them with the transformers Auto classes, so an exported folder then loads
without remote code: ``from hydrahead.modeling import HydraHeadModel``.
"""

from __future__ import annotations

import importlib

from .head_spec import HEAD_KEYS, IGNORE_INDEX, LEVELS, TASKS, HeadSpec, normalize_head, resolve_layers

_LAZY = {
    "HydraHeadConfig": "configuration_hydrahead",
    "HydraHeadModel": "modeling_hydrahead",
    "ScalarMix": "modeling_hydrahead",
    "compute_loss": "modeling_hydrahead",
    "find_layer_list": "modeling_hydrahead",
}
_registered = False


def register_auto_classes() -> None:
    """Register the classes with AutoConfig, AutoModel and the sequence/token classification Autos."""
    global _registered
    if _registered:
        return
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    from .configuration_hydrahead import HydraHeadConfig
    from .modeling_hydrahead import HydraHeadModel

    AutoConfig.register("hydrahead", HydraHeadConfig, exist_ok=True)
    for auto in (AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification):
        auto.register(HydraHeadConfig, HydraHeadModel, exist_ok=True)
    _registered = True


def __getattr__(name: str):
    if name in _LAZY:
        register_auto_classes()
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HEAD_KEYS",
    "IGNORE_INDEX",
    "LEVELS",
    "TASKS",
    "HeadSpec",
    "normalize_head",
    "register_auto_classes",
    "resolve_layers",
    *_LAZY,
]
