"""LoRA adapters on the backbone (``backbone.adapter=lora``, through ``peft``).

Only ``model.backbone`` is wrapped, never the head: every weight of the backbone itself is frozen
and the low-rank updates train, with the head. ``backbone.freeze`` says where the updates go:
false, on every targeted module; N, none in the embeddings and bottom N layers. A checkpoint keeps
the adapter and the head (``training.module``); an export merges the updates into the backbone's
weights (:func:`merged`), so it is a plain network that loads without peft, with the same logits.
"""

from __future__ import annotations

import copy as _copy
import warnings

from hydrahead.config.schema import BackboneConfig, ConfigError, LoraConfig

ADAPTER_MARK = ".lora_"
"""In the name of every adapter weight (``...query.lora_A.default.weight``), in no base weight's."""
# Attention query and value projections by name, for architectures peft has no default for (DistilBERT).
QUERY_VALUE = ("query", "value", "q_lin", "v_lin", "q_proj", "v_proj", "query_proj", "value_proj")


def adapter_seed(seed: int) -> int:
    """The seed the adapter's initial weights are drawn with (apart from the backbone's and the head's)."""
    return (seed * 1_000_003 + 11) % 2**63


def has_adapter(model) -> bool:
    """Whether ``model.backbone`` is wrapped in a peft adapter."""
    return hasattr(getattr(model, "backbone", None), "peft_config")


def is_base_weight(key: str, prefix: str = "backbone.") -> bool:
    """A state-dict key of the backbone's own weights (under ``prefix``): neither adapter nor head."""
    return key.startswith(prefix) and ADAPTER_MARK not in key


def default_targets(backbone_config) -> list[str]:
    """peft's LoRA targets for the architecture (query and value projections), else those found by name."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    return list(DEFAULTS.get(getattr(backbone_config, "model_type", None)) or QUERY_VALUE)


def adapter_targets(model, lora: LoraConfig, freeze) -> list[str]:
    """The full names of the backbone's modules that get an adapter.

    Leaf modules whose name is, or ends with ``.`` + , one of ``lora.target_modules`` (null: the
    architecture's query and value projections), except inside what ``freeze`` (false or N) holds
    frozen: the embeddings and bottom N layers. ConfigError when nothing matches.
    """
    wanted = list(lora.target_modules or default_targets(model.backbone.config))
    excluded = {id(m) for frozen in model._frozen_modules(freeze) for m in frozen.modules()}
    leaves = [(n, m) for n, m in model.backbone.named_modules() if n and not any(True for _ in m.children())]
    names = [
        name
        for name, module in leaves
        if id(module) not in excluded and any(name == t or name.endswith("." + t) for t in wanted)
    ]
    if not names:
        where = f" above layer {freeze} (backbone.freeze={freeze})" if not isinstance(freeze, bool) else ""
        available = sorted({name.rsplit(".", 1)[-1] for name, m in leaves if hasattr(m, "weight")})
        raise ConfigError(
            f"backbone.lora.target_modules={wanted}: no module of the backbone "
            f"({type(model.backbone).__name__}) matches{where}; its modules with weights are named "
            + ", ".join(available)
        )
    return names


def add_adapter(model, bb: BackboneConfig, seed: int) -> None:
    """Wrap ``model.backbone`` in the LoRA adapter ``bb.lora`` describes, in place.

    Afterwards only the adapter's weights (and the head) require grad. The adapter's initial weights
    depend on ``seed`` alone (a seed of their own, as the head's).
    """
    import peft
    import torch

    lora = bb.lora
    config = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=adapter_targets(model, lora, bb.freeze),
        bias="none",
    )
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft calls a transformers API it renamed
        torch.manual_seed(adapter_seed(seed))
        model.backbone = peft.get_peft_model(model.backbone, config)
    model.train(model.training)  # what freeze=N holds stays in eval mode (no dropout), as when frozen


def merged(model, copy: bool = True):
    """``model`` with its adapter merged into the backbone's weights: a plain HydraHeadModel with the
    same logits, no peft in it (what an export holds). A copy, so ``model`` stays as it is, unless
    ``copy=False``; ``model`` itself when it has no adapter."""
    if not has_adapter(model):
        return model
    if copy:
        model = _copy.deepcopy(model)
    model.backbone = model.backbone.merge_and_unload()
    model.config.backbone_config = model.backbone.config
    model.freeze_backbone(model.config.freeze)  # requires_grad as a loaded export has it
    return model


def adapter_record(model, bb: BackboneConfig) -> dict:
    """What metrics.json says of the adapter: its settings, what it adapts, its parameter count."""
    targets = sorted(model.backbone.peft_config["default"].target_modules)
    return {
        "name": bb.adapter,
        "r": bb.lora.r,
        "alpha": bb.lora.alpha,
        "dropout": bb.lora.dropout,
        "target_modules": sorted({name.rsplit(".", 1)[-1] for name in targets}),
        "modules": len(targets),
        "trainable_params": sum(
            p.numel() for n, p in model.backbone.named_parameters() if ADAPTER_MARK in n and p.requires_grad
        ),
    }
