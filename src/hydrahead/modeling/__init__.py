"""The HF-compatible model: importing this registers it with the transformers Auto classes."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_hydrahead import HEAD_DEFAULTS, HydraHeadConfig, resolve_layers
from .modeling_hydrahead import HydraHeadModel, ScalarMix, compute_loss, find_layer_list

AutoConfig.register("hydrahead", HydraHeadConfig, exist_ok=True)
for _auto in (AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification):
    _auto.register(HydraHeadConfig, HydraHeadModel, exist_ok=True)

__all__ = [
    "HEAD_DEFAULTS",
    "HydraHeadConfig",
    "HydraHeadModel",
    "ScalarMix",
    "compute_loss",
    "find_layer_list",
    "resolve_layers",
]
