"""Save a trained model as a HydraHead folder or, for a standard head, as the backbone's own HF class.

HydraHead folder: safetensors, a config with ``auto_map`` and the two self-contained code files,
plus the tokenizer. Loads with ``AutoModelFor...from_pretrained(dir, trust_remote_code=True)``
anywhere, and with no remote code at all once ``hydrahead.modeling`` is imported.

Native: a linear head on the last layer, per token (``*ForTokenClassification``) or on the
backbone's pooler (``*ForSequenceClassification``), becomes the plain HF class with the same weights
and logits, loadable without ``trust_remote_code``.
"""

from __future__ import annotations

from pathlib import Path

import torch


def native_head_kind(config) -> str | None:
    """``"token"`` or ``"sequence"`` when the head has a native HF equivalent, else None."""
    head = config.head
    standard = (
        config.layers == [config.backbone_layers]
        and not head["hidden_layers"]
        and config.backbone_config.num_hidden_layers == config.backbone_layers
    )
    if not standard:
        return None
    if config.level == "token" and config.task == "multiclass":
        return "token"
    if config.level == "sequence" and head["pooling"] == "pooler":
        return "sequence"
    return None


def _native_config(config):
    native = config.backbone_config.__class__.from_dict(config.backbone_config.to_dict())
    native.id2label = dict(config.id2label)
    native.label2id = dict(config.label2id)
    native.problem_type = config.problem_type
    native.classifier_dropout = config.head["dropout"]
    native.architectures = None
    return native


def to_native(model):
    """The same network as the backbone's native ``*ForTokenClassification`` / ``*ForSequenceClassification``.

    Raises ValueError when the head is not standard or the native class lays its head out differently.
    """
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    config = model.config
    kind = native_head_kind(config)
    if kind is None:
        raise ValueError(
            "only a standard head exports as a native HF class: a linear head (hidden_layers=[]) on the "
            "last layer, per token with task=multiclass, or at sequence level with pooling=pooler. "
            f"This head is level={config.level}, task={config.task}, {config.head}; export it as hydrahead"
        )
    auto = AutoModelForTokenClassification if kind == "token" else AutoModelForSequenceClassification
    native = auto.from_config(_native_config(config))
    wanted = native.state_dict()
    prefix = native.base_model_prefix
    source = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbone."):
            source[f"{prefix}.{key[len('backbone.') :]}"] = value
        elif key.startswith("head.classifier."):
            source[key[len("head.") :]] = value
    # RoBERTa-style sequence heads keep the pooler's dense layer inside the classifier.
    renames = {
        "classifier.weight": "classifier.out_proj.weight",
        "classifier.bias": "classifier.out_proj.bias",
        f"{prefix}.pooler.dense.weight": "classifier.dense.weight",
        f"{prefix}.pooler.dense.bias": "classifier.dense.bias",
    }
    for old, new in renames.items():
        if old in source and old not in wanted and new in wanted:
            source[new] = source.pop(old)
    missing = sorted(set(wanted) - set(source))
    if missing:
        raise ValueError(
            f"cannot export as {type(native).__name__}: its weights {missing[:4]} have no counterpart "
            "in this model; export it as hydrahead instead"
        )
    native.load_state_dict({key: source[key] for key in wanted}, strict=True)
    native.to(next(model.parameters()).dtype)
    return native


def _check_same_logits(model, native) -> float:
    ids = torch.arange(5, 13).remainder(model.config.backbone_config.vocab_size).unsqueeze(0)
    ids = ids.to(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    native.eval()
    with torch.no_grad():
        diff = (model(input_ids=ids).logits - native(input_ids=ids).logits).abs().max().item()
    model.train(was_training)
    if diff > 1e-4:
        raise RuntimeError(f"native export differs from the model: max |logit diff| = {diff:.3g}")
    return diff


def export_model(model, out_dir: str | Path, tokenizer=None, native: bool = False) -> Path:
    """Write ``model`` (and ``tokenizer``) to ``out_dir``; ``native=True`` uses the backbone's HF class."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if native:
        target = to_native(model)
        _check_same_logits(model, target.to(next(model.parameters()).device))
    else:
        target = model
    target.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir
