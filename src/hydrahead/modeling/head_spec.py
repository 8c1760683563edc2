"""The head spec, the tasks and levels, the ignore index: defined here once, for the model and the runner.

Standard library only: an exported folder carries this file beside the model code (a relative import,
so ``save_pretrained`` copies it), and hydrahead's config schema imports it without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

TASKS = ("multiclass", "multilabel")
LEVELS = ("sequence", "token", "positions")
IGNORE_INDEX = -100
"""A label (or the first entry of a multilabel row) that the loss and the metrics skip."""
POOLINGS = ("cls", "mean", "max", "pooler")
COMBINES = ("concat", "scalar_mix")
ACTIVATIONS = ("gelu", "relu", "tanh", "silu")


@dataclass
class HeadSpec:
    """One composable head: layer selection -> combination -> pooling/gather -> MLP -> Linear."""

    layer: Any = -1
    """Which ``hidden_states`` the head reads (0 = embedding output, negatives count from the top):
    an int, a list of ints, 'all', or a Python-style slice 'lo:hi'."""
    combine: str = "concat"
    """How several selected layers become one: concat, or scalar_mix (an ELMo-style learned mix)."""
    pooling: str = "cls"
    """Sequence level only: cls, mean, max or pooler (the backbone's own pooler on [CLS])."""
    hidden_layers: list[int] = field(default_factory=list)
    """Widths of the MLP between the representation and the output Linear; [] is a linear head."""
    activation: str = "gelu"
    """gelu, relu, tanh or silu."""
    dropout: float = 0.1
    """Before the MLP and after each of its blocks, in [0, 1)."""


HEAD_KEYS = tuple(f.name for f in fields(HeadSpec))


def resolve_layers(spec, num_layers: int) -> list[int]:
    """Turn a layer spec into non-negative ``hidden_states`` indices for a backbone of ``num_layers``.

    ``hidden_states`` has ``num_layers + 1`` entries: index 0 is the embedding output.
    Raises ValueError naming the valid range when an index is out of range.
    """
    count = num_layers + 1
    valid = f"valid indices are 0..{num_layers} or -{count}..-1 (0 is the embedding output)"
    if isinstance(spec, str):
        text = spec.strip()
        if text == "all":
            return list(range(count))
        if ":" in text:
            try:
                lo, hi = (int(p) if p.strip() else None for p in text.split(":", 1))
            except ValueError:
                raise ValueError(f"head.layer={spec!r} is not a slice like '1:5'; {valid}") from None
            indices = list(range(count))[slice(lo, hi)]
            if not indices:
                raise ValueError(
                    f"head.layer={spec!r} selects no layer of this backbone ({num_layers} layers); {valid}"
                )
            return indices
        try:
            spec = int(text)
        except ValueError:
            raise ValueError(
                f"head.layer={spec!r} must be an int, a list of ints, 'all' or a slice 'lo:hi'"
            ) from None
    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not items:
        raise ValueError("head.layer is an empty list; give at least one layer index")
    resolved = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ValueError(f"head.layer entry {item!r} is not an int; {valid}")
        if not -count <= item < count:
            raise ValueError(
                f"head.layer={item} is out of range for this backbone ({num_layers} layers): {valid}"
            )
        resolved.append(item % count)
    return resolved


def normalize_head(head: dict | None) -> dict:
    """Fill :class:`HeadSpec`'s defaults into a head dict and check every value; ValueError names the key."""
    head = dict(head or {})
    unknown = sorted(set(head) - set(HEAD_KEYS))
    if unknown:
        raise ValueError(f"unknown head key(s) {unknown}; allowed: {sorted(HEAD_KEYS)}")
    spec = {**vars(HeadSpec()), **head}
    for key, allowed in (("combine", COMBINES), ("pooling", POOLINGS), ("activation", ACTIVATIONS)):
        if spec[key] not in allowed:
            raise ValueError(f"head.{key}={spec[key]!r} is not one of {list(allowed)}")
    dropout = spec["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"head.dropout={dropout!r} must be a number in [0, 1)")
    widths = spec["hidden_layers"]
    if isinstance(widths, int):
        widths = [widths]
    widths = list(widths)
    if any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in widths):
        raise ValueError(f"head.hidden_layers={widths} must be positive ints, e.g. [512, 256]")
    spec["hidden_layers"] = widths
    spec["dropout"] = float(dropout)
    if isinstance(spec["layer"], tuple):
        spec["layer"] = list(spec["layer"])
    return spec


LOSS_KEYS = ("class_weights", "pos_weight", "label_smoothing")


def check_loss(loss: dict | None, num_labels: int | None = None) -> dict:
    """The model's loss options (see ``HydraHeadConfig``), checked: numbers only, one weight per label."""
    loss = {k: v for k, v in dict(loss or {}).items() if v is not None}
    unknown = sorted(set(loss) - set(LOSS_KEYS))
    if unknown:
        raise ValueError(f"unknown loss key(s) {unknown}; allowed: {list(LOSS_KEYS)}")
    for key in ("class_weights", "pos_weight"):
        if key not in loss:
            continue
        weights = loss[key]
        if not isinstance(weights, (list, tuple)) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights
        ):
            raise ValueError(f"loss {key}={weights!r} must be a list of non-negative numbers, one per label")
        if num_labels is not None and len(weights) != num_labels:
            raise ValueError(f"loss {key} has {len(weights)} entries but the model has {num_labels} labels")
        loss[key] = [float(w) for w in weights]
    smoothing = loss.get("label_smoothing", 0.0)
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
        raise ValueError(f"loss label_smoothing={smoothing!r} must be a number in [0, 1)")
    if not smoothing:
        loss.pop("label_smoothing", None)
    return loss
