"""hydrahead: composable classification heads over Hugging Face encoders.

Importing the package is cheap; everything loads on first use (and loading the model classes
registers them with the transformers Auto classes)::

    from hydrahead import compose, run
    result = run(compose(["head=mlp", "backbone.freeze=true"]))   # as hydrahead-train head=mlp ...

"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "run": "hydrahead.pipeline",
    "RunResult": "hydrahead.pipeline",
    "compose": "hydrahead.config",
    "load_run": "hydrahead.rundir",
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
