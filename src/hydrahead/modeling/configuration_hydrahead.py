"""Configuration of a HydraHead model: a backbone config, a head spec, a task and a level.

Self-contained (imports only transformers and the stdlib-only ``head_spec.py`` beside it), so an
exported folder loads with
``trust_remote_code=True`` on a machine where hydrahead is not installed.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

from .head_spec import LEVELS, TASKS, check_loss, normalize_head, resolve_layers

AUTO_MAP = {
    "AutoConfig": "configuration_hydrahead.HydraHeadConfig",
    "AutoModel": "modeling_hydrahead.HydraHeadModel",
    "AutoModelForSequenceClassification": "modeling_hydrahead.HydraHeadModel",
    "AutoModelForTokenClassification": "modeling_hydrahead.HydraHeadModel",
}


class HydraHeadConfig(PretrainedConfig):
    """Config of :class:`HydraHeadModel`.

    Args:
        backbone_config: the encoder's config (a ``PretrainedConfig`` or its dict).
        head: the head spec; see :class:`head_spec.HeadSpec` for keys and defaults.
        task: ``multiclass`` (softmax, cross-entropy) or ``multilabel`` (sigmoid, BCE).
        level: ``sequence`` (one prediction per input), ``token`` (one per token) or
            ``positions`` (one per entry of ``mask_indices``).
        freeze: ``True`` freezes the whole backbone, an int N the embeddings plus the bottom N
            layers, ``False`` nothing. Frozen parts stay in eval mode.
        backbone_layers: the backbone's full depth. The backbone is truncated above the highest
            layer the head reads; this keeps the original depth so layer specs resolve the same.
        loss: options of the training loss, resolved to numbers: ``class_weights`` (multiclass
            cross-entropy weight per label), ``pos_weight`` (multilabel BCE weight of the positive
            class, per label) and ``label_smoothing`` (multiclass: as ``torch.nn.CrossEntropyLoss``;
            multilabel: targets ``y * (1 - s) + s / 2``). Empty: the plain loss.
        calibration_temperature: the logits are divided by it (temperature scaling, fitted on
            validation after training); 1.0 leaves them as trained. ``predict_proba`` and
            ``pipeline()`` see the same.
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
        loss: dict | None = None,
        calibration_temperature: float = 1.0,
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
        temperature = calibration_temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ValueError(f"calibration_temperature={temperature!r} must be a positive number")
        self.calibration_temperature = float(temperature)
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
        self.loss = check_loss(loss, self.num_labels if (loss or {}) else None)

    @property
    def layers(self) -> list[int]:
        """The ``hidden_states`` indices the head reads, non-negative."""
        return resolve_layers(self.head["layer"], self.backbone_layers)
