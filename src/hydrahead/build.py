"""One function from a typed backbone config (or a name) and a head spec to a model and its tokenizer."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .backbones import (
    EMBEDDED_ID,
    is_tiny,
    load_backbone_config,
    load_backbone_weights,
    load_tokenizer,
)
from .config.schema import BackboneConfig
from .modeling.head_spec import HeadSpec


def label_maps(labels: int | Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    """``id2label`` and ``label2id`` from label names or a label count."""
    if isinstance(labels, int):
        if labels < 1:
            raise ValueError(f"num_labels={labels} must be >= 1")
        names = [f"LABEL_{i}" for i in range(labels)]
    else:
        names = [str(name) for name in labels]
        if not names:
            raise ValueError("labels is empty: a classifier needs at least one label")
        if len(set(names)) != len(names):
            raise ValueError(f"labels has duplicates: {names}")
    return dict(enumerate(names)), {name: i for i, name in enumerate(names)}


def head_seed(seed: int) -> int:
    """The seed the head's initial weights are drawn with (apart from the backbone's draws)."""
    return (seed * 1_000_003 + 7) % 2**63


def random_backbone(truncated_config, full_depth: int):
    """Random weights that depend on the seed alone, not on the highest layer a head reads.

    Every layer is drawn, then the unread ones dropped: a head on layer 2 sits on the same layers
    0..2 as a head on layer 4 (so a random-encoder baseline is one network across a layer sweep, and
    a feature cache entry computed for one depth is right for every lower one).
    """
    import copy

    from transformers import AutoModel

    from .modeling.modeling_hydrahead import find_layer_list

    full = copy.deepcopy(truncated_config)
    full.num_hidden_layers = full_depth
    backbone = AutoModel.from_config(full)
    keep = truncated_config.num_hidden_layers
    if keep < full_depth:
        del find_layer_list(backbone)[keep:]
        backbone.config.num_hidden_layers = keep
    return backbone


def build_model(
    name_or_path: str | BackboneConfig = EMBEDDED_ID,
    *,
    labels: int | Sequence[str] = 2,
    head: HeadSpec | dict | None = None,
    task: str = "multiclass",
    level: str = "sequence",
    seed: int = 0,
    tokenizer=None,
    encoder=None,
    **backbone_options,
):
    """Build a :class:`HydraHeadModel` and the backbone's tokenizer.

    ``name_or_path`` is a :class:`~hydrahead.config.BackboneConfig` or a name (hub id, local dir,
    ``tiny:<family>``) with its options as keywords (``freeze``, ``pretrained``, ``dtype``, ...).
    ``head`` is a head spec (``HeadConfig``/``HeadSpec`` or a dict of its keys; missing keys take
    the defaults). Config and head spec are checked before any weights load. The backbone is
    truncated above the highest layer the head reads, so those layers are neither loaded nor
    computed. ``pretrained=False`` (and every ``tiny:`` backbone) gives random weights, seeded by ``seed``.

    ``encoder``: an already-built backbone of this config (at least as deep as the head reads) to
    put the head on instead of loading one; the frozen-head jobs of a sweep share one. The head's
    initial weights depend on ``seed`` and the head alone, so they are the same either way.

    ``adapter="lora"`` (``backbone.adapter``) wraps ``model.backbone`` (never the head) in a peft
    LoRA adapter: see :mod:`hydrahead.adapters`.
    """
    import torch

    from .modeling import HydraHeadConfig, HydraHeadModel

    if isinstance(name_or_path, BackboneConfig):
        if backbone_options:
            raise TypeError(f"build_model: {sorted(backbone_options)} belong in the BackboneConfig given")
        bb = name_or_path
    else:
        bb = BackboneConfig(name_or_path=str(name_or_path), **backbone_options)
    if isinstance(head, HeadSpec):
        head = head.model_spec() if hasattr(head, "model_spec") else dataclasses.asdict(head)
    name, options = bb.name_or_path, {"revision": bb.revision, "trust_remote_code": bb.trust_remote_code}
    if tokenizer is None:
        tokenizer = load_tokenizer(name, **options)
    backbone_config = load_backbone_config(name, tokenizer=tokenizer, **options)
    id2label, label2id = label_maps(labels)
    config = HydraHeadConfig(
        backbone_config=backbone_config,
        head=head,
        task=task,
        level=level,
        freeze=bb.freeze,
        id2label=id2label,
        label2id=label2id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(bb.weights_seed(seed))
        loaded = bb.pretrained and not is_tiny(name)
        shared = encoder is not None
        if shared:
            pass  # built (loaded or drawn, resized, cast) once for every head that shares it
        elif loaded:
            encoder = load_backbone_weights(
                name,
                config.backbone_config,
                **options,
                dtype=bb.dtype,
                attn_implementation=bb.attn_implementation,
            )
        else:
            if bb.attn_implementation:
                config.backbone_config._attn_implementation = bb.attn_implementation
            encoder = random_backbone(config.backbone_config, config.backbone_layers)
        # The head draws from a seed of its own, so loading or drawing the backbone (or reusing one)
        # never shifts its initial weights.
        torch.manual_seed(head_seed(seed))
        model = HydraHeadModel(config, backbone=encoder)
        if not shared and not loaded and bb.dtype not in (None, "auto"):  # random weights: honour dtype
            model.backbone.to(getattr(torch, bb.dtype) if isinstance(bb.dtype, str) else bb.dtype)
    if bb.resize_token_embeddings and not shared:
        model.resize_token_embeddings(bb.resize_token_embeddings)
    if bb.adapter:
        if shared:  # the adapter wraps the encoder in place: the other heads would train it too
            raise ValueError(f"backbone.adapter={bb.adapter}: an adapter cannot go on a shared encoder")
        from .adapters import add_adapter

        add_adapter(model, bb, seed)
    return model, tokenizer
