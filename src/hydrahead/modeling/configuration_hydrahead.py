"""Configuration of a HydraHead model: a backbone config, a head spec, a task and a level.

Self-contained (imports only transformers) so that an exported folder loads with
``trust_remote_code=True`` on a machine where hydrahead is not installed.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

TASKS = ("multiclass", "multilabel")
LEVELS = ("sequence", "token", "positions")
POOLINGS = ("cls", "mean", "max", "pooler")
COMBINES = ("concat", "scalar_mix")
ACTIVATIONS = ("gelu", "relu", "tanh", "silu")

HEAD_DEFAULTS = {
    # Which entries of ``hidden_states`` the head reads (0 = embedding output, negatives count
    # from the last layer): an int, a list of ints, "all", or a Python-style slice "lo:hi".
    "layer": -1,
    # How several selected layers become one: concatenated features, or an ELMo scalar mix.
    "combine": "concat",
    # Sequence level only: how token vectors become one vector.
    "pooling": "cls",
    # Widths of the MLP between the representation and the output Linear; () is a linear head.
    "hidden_layers": (),
    "activation": "gelu",
    "dropout": 0.1,
}

AUTO_MAP = {
    "AutoConfig": "configuration_hydrahead.HydraHeadConfig",
    "AutoModel": "modeling_hydrahead.HydraHeadModel",
    "AutoModelForSequenceClassification": "modeling_hydrahead.HydraHeadModel",
    "AutoModelForTokenClassification": "modeling_hydrahead.HydraHeadModel",
}


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
    """Fill defaults into a head spec and check every value; raises ValueError naming the key."""
    head = dict(head or {})
    unknown = sorted(set(head) - set(HEAD_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown head key(s) {unknown}; allowed: {sorted(HEAD_DEFAULTS)}")
    spec = {**HEAD_DEFAULTS, **head}
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


class HydraHeadConfig(PretrainedConfig):
    """Config of :class:`HydraHeadModel`.

    Args:
        backbone_config: the encoder's config (a ``PretrainedConfig`` or its dict).
        head: the head spec; see ``HEAD_DEFAULTS`` for keys and defaults.
        task: ``multiclass`` (softmax, cross-entropy) or ``multilabel`` (sigmoid, BCE).
        level: ``sequence`` (one prediction per input), ``token`` (one per token) or
            ``positions`` (one per entry of ``mask_indices``).
        freeze: ``True`` freezes the whole backbone, an int N the embeddings plus the bottom N
            layers, ``False`` nothing. Frozen parts stay in eval mode.
        backbone_layers: the backbone's full depth. The backbone is truncated above the highest
            layer the head reads; this keeps the original depth so layer specs resolve the same.
    """

    model_type = "hydrahead"

    def __init__(
        self,
        backbone_config=None,
        head: dict | None = None,
        task: str = "multiclass",
        level: str = "sequence",
        freeze: bool | int = False,
        backbone_layers: int | None = None,
        **kwargs,
    ):
        if task not in TASKS:
            raise ValueError(f"task={task!r} is not one of {list(TASKS)}")
        if level not in LEVELS:
            raise ValueError(f"level={level!r} is not one of {list(LEVELS)}")
        if not isinstance(freeze, (bool, int)) or (not isinstance(freeze, bool) and freeze < 0):
            raise ValueError(f"freeze={freeze!r} must be true, false or a non-negative int")
        if isinstance(backbone_config, dict):
            backbone_config = dict(backbone_config)
            backbone_config = AutoConfig.for_model(backbone_config.pop("model_type"), **backbone_config)
        self.head = normalize_head(head)
        self.task = task
        self.level = level
        self.freeze = freeze
        self.backbone_config = backbone_config
        self.backbone_layers = backbone_layers
        if backbone_config is not None:
            if backbone_layers is None:
                self.backbone_layers = backbone_config.num_hidden_layers
            layers = resolve_layers(self.head["layer"], self.backbone_layers)
            if not isinstance(freeze, bool) and freeze > self.backbone_layers:
                raise ValueError(f"freeze={freeze} exceeds the backbone's {self.backbone_layers} layers")
            # Layers above the highest one read are never computed: drop them from the encoder.
            # Keep at least one block: with zero, encoders return no hidden_states at all (so
            # even the embedding output, index 0, is lost) and some (DeBERTa) fail outright.
            backbone_config.num_hidden_layers = max(1, max(layers))
        kwargs.setdefault(
            "problem_type",
            "multi_label_classification" if task == "multilabel" else "single_label_classification",
        )
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        super().__init__(**kwargs)

    @property
    def layers(self) -> list[int]:
        """The ``hidden_states`` indices the head reads, non-negative."""
        return resolve_layers(self.head["layer"], self.backbone_layers)
