"""hydrahead: composable classification heads over Hugging Face encoders.

Importing the package is cheap; model symbols load on first use (and importing
``hydrahead.modeling`` registers the model with the transformers Auto classes).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "HydraHeadConfig": "hydrahead.modeling",
    "HydraHeadModel": "hydrahead.modeling",
    "build_model": "hydrahead.build",
    "export_model": "hydrahead.export",
    "load_tokenizer": "hydrahead.backbones",
    "tiny_tokenizer": "hydrahead.backbones",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hydrahead' has no attribute {name!r}")
