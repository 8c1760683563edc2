"""HydraHead: one composable classification head over any Hugging Face encoder.

backbone -> layer selection (one / concat / scalar mix) -> representation (per token,
pooled, or gathered at ``mask_indices``) -> dropout + MLP -> Linear -> loss.

Self-contained (imports only torch and transformers): an exported folder holds this
file, ``configuration_hydrahead.py`` and ``head_spec.py`` and loads with ``trust_remote_code=True``
without hydrahead.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

from .configuration_hydrahead import HydraHeadConfig
from .head_spec import IGNORE_INDEX

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}


class ScalarMix(nn.Module):
    """ELMo-style mix of layers: ``gamma * sum_k softmax(w)_k * h_k``."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(1))

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        """Mix ``layers`` [..., L, H] over the layer dimension into [..., H]."""
        weights = torch.softmax(self.weights, dim=0).to(layers.dtype)
        return self.gamma.to(layers.dtype) * torch.einsum("...lh,l->...h", layers, weights)


class ClassifierHead(nn.Module):
    """Dropout, then ``Linear -> activation -> dropout`` per hidden width, then a Linear."""

    def __init__(self, in_features: int, hidden_layers, num_labels: int, dropout: float, activation: str):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        blocks, width = [], in_features
        for size in hidden_layers:
            blocks += [nn.Linear(width, size), _ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = size
        self.mlp = nn.Sequential(*blocks)
        self.classifier = nn.Linear(width, num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.mlp(self.dropout(features)))


def find_layer_list(backbone: nn.Module) -> nn.ModuleList | None:
    """The encoder's stack of transformer blocks (``encoder.layer``, ``transformer.layer``, ...)."""
    best = None
    for name, module in backbone.named_modules():
        is_stack = isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layer", "layers")
        if is_stack and (best is None or len(module) > len(best)):
            best = module
    return best


class HydraHeadPreTrainedModel(PreTrainedModel):
    config_class = HydraHeadConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, ScalarMix):
            module.weights.zero_()
            module.gamma.fill_(1.0)
        elif isinstance(module, nn.Linear):
            std = getattr(self.config.backbone_config, "initializer_range", 0.02)
            module.weight.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.zero_()


class HydraHeadModel(HydraHeadPreTrainedModel):
    """An encoder with one composable classification head.

    ``forward`` returns ``SequenceClassifierOutput`` at sequence level and
    ``TokenClassifierOutput`` at token and positions level (logits ``[B, M, L]``).
    """

    _auto_class = "AutoModel"
    # forward takes **kwargs (for the backbone) but its loss is a per-batch mean: tell HF's Trainer
    # not to pass num_items_in_batch, so it divides the loss by the gradient-accumulation steps.
    accepts_loss_kwargs = False

    def __init__(self, config: HydraHeadConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError("HydraHeadConfig.backbone_config is required to build a model")
        if backbone is None:
            backbone = AutoModel.from_config(config.backbone_config)
        else:
            # Pretrained weights: keep them out of post_init's weight initialisation.
            for module in backbone.modules():
                module._is_hf_initialized = True
        self.backbone = backbone
        # from_config may copy the config; keep one object so resize etc. stay in sync.
        config.backbone_config = backbone.config
        head = config.head
        self.layer_indices = config.layers
        hidden = config.backbone_config.hidden_size
        needs_pooler = head["pooling"] == "pooler" and config.level == "sequence"
        if needs_pooler and getattr(backbone, "pooler", None) is None:
            raise ValueError(
                f"head.pooling='pooler' but {type(backbone).__name__} has no pooler; use cls, mean or max"
            )
        if len(self.layer_indices) > 1 and head["combine"] == "scalar_mix":
            self.mix = ScalarMix(len(self.layer_indices))
            in_features = hidden
        else:
            self.mix = None
            in_features = hidden * len(self.layer_indices)
        self.head = ClassifierHead(
            in_features, head["hidden_layers"], config.num_labels, head["dropout"], head["activation"]
        )
        self.post_init()
        self.freeze_backbone(config.freeze)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True
        # Loading swaps in new parameters (requires_grad=True): apply the saved freeze again.
        model.freeze_backbone(model.config.freeze)
        return loaded

    # -- backbone -----------------------------------------------------------------------------
    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.backbone.set_input_embeddings(value)

    def resize_token_embeddings(self, *args, **kwargs):
        embeddings = self.backbone.resize_token_embeddings(*args, **kwargs)
        self.config.backbone_config = self.backbone.config
        return embeddings

    def _frozen_modules(self, freeze: bool | int) -> list[nn.Module]:
        if freeze is True:
            return [self.backbone]
        if freeze is False:
            return []
        # Partial: every embedding module (word/position embeddings, ELECTRA's projection,
        # DeBERTa's relative embeddings) plus the bottom N blocks.
        embeddings = [m for name, m in self.backbone.named_modules() if "embed" in name.split(".")[-1]]
        return embeddings + list((find_layer_list(self.backbone) or [])[:freeze])

    def freeze_backbone(self, freeze: bool | int = True) -> None:
        """Freeze the whole backbone (True), its embeddings plus bottom N layers (N), or nothing."""
        self.config.freeze = freeze
        self._frozen = self._frozen_modules(freeze)
        for param in self.backbone.parameters():
            param.requires_grad = True
        for module in self._frozen:
            for param in module.parameters():
                param.requires_grad = False
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen parts never get dropout noise: a frozen run is deterministic features + head.
        for module in getattr(self, "_frozen", ()):
            module.eval()
        return self

    # -- forward ------------------------------------------------------------------------------
    def _represent(self, hidden: torch.Tensor, attention_mask, mask_indices, pooling=None) -> torch.Tensor:
        """One layer's [B, T, H] as per token [B, T, H], pooled [B, H] or gathered [B, M, H]."""
        level = self.config.level
        if level == "token":
            return hidden
        if level == "positions":
            batch = torch.arange(hidden.size(0), device=hidden.device).unsqueeze(1)
            return hidden[batch, mask_indices]
        pooling = pooling or self.config.head["pooling"]
        if pooling in ("cls", "pooler"):  # the pooler itself runs after the layers are combined
            return hidden[:, 0]
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], device=hidden.device)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if pooling == "mean":
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(dim=1).values

    def layer_features(
        self, hidden_states, attention_mask=None, mask_indices=None, layers=None, pooling=None
    ) -> torch.Tensor:
        """Each read layer's representation, stacked: [B, L, H], [B, T, L, H] or [B, M, L, H].

        Pooling and gathering are per layer, before the layers are combined: for cls, mean and
        gather that equals combining first (they are linear); max pooling pools each layer.
        What this returns is what a frozen backbone's feature cache stores (``layers`` and
        ``pooling`` other than the head's own let one cached pass serve other heads too).
        """
        indices = self.layer_indices if layers is None else layers
        reps = [self._represent(hidden_states[i], attention_mask, mask_indices, pooling) for i in indices]
        return torch.stack(reps, dim=-2)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from per-layer features [..., L, H]: combine layers, (pooler), dropout, MLP, Linear."""
        combined = self.mix(features) if self.mix is not None else features.flatten(-2)
        if self.config.level == "sequence" and self.config.head["pooling"] == "pooler":
            combined = self.backbone.pooler(combined.unsqueeze(1))
        logits = self.head(combined.to(self.head.classifier.weight.dtype))
        temperature = getattr(self.config, "calibration_temperature", 1.0)
        return logits if temperature == 1.0 else logits / temperature

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        mask_indices: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_dict: bool | None = None,
        features: torch.Tensor | None = None,
        **kwargs,
    ):
        """Run backbone and head; or, given ``features`` (from a frozen backbone's cache), the head alone."""
        if features is None:
            reference = input_ids if input_ids is not None else inputs_embeds
            if reference is None:
                raise ValueError("forward needs input_ids (or inputs_embeds, or cached features)")
            self._check_mask_indices(mask_indices, reference.shape[0], reference.shape[1])
            backbone_inputs = {
                "attention_mask": attention_mask,
                "output_hidden_states": True,
                "return_dict": True,
            }
            if input_ids is not None:
                backbone_inputs["input_ids"] = input_ids
            else:
                backbone_inputs["inputs_embeds"] = inputs_embeds
            if token_type_ids is not None:
                backbone_inputs["token_type_ids"] = token_type_ids
            if position_ids is not None:
                backbone_inputs["position_ids"] = position_ids
            outputs = self.backbone(**backbone_inputs, **kwargs)
            features = self.layer_features(outputs.hidden_states, attention_mask, mask_indices)
        logits = self.classify(features)
        loss = None
        if labels is not None:
            labels = self._check_labels(labels, logits)
            loss = self.loss(logits, labels)
        output_class = SequenceClassifierOutput if self.config.level == "sequence" else TokenClassifierOutput
        return output_class(loss=loss, logits=logits)

    # -- loss, probabilities, checks ---------------------------------------------------------
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean loss over the labels that are not -100 (0 when every label is ignored), with the
        config's class weights, positive weights and label smoothing."""
        return compute_loss(logits, labels, self.config.task, **(getattr(self.config, "loss", None) or {}))

    def predict_proba(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over classes (multiclass) or per-label sigmoid (multilabel)."""
        if self.config.task == "multilabel":
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=-1)

    def _check_mask_indices(self, mask_indices, batch: int, seq_len: int) -> None:
        if self.config.level != "positions":
            if mask_indices is not None:
                raise ValueError(
                    f"mask_indices was given but this model's level is {self.config.level!r}; "
                    "only level='positions' reads mask_indices"
                )
            return
        if mask_indices is None:
            raise ValueError("level='positions' needs mask_indices, a long tensor [batch, num_positions]")
        if mask_indices.dtype != torch.long:
            raise ValueError(f"mask_indices must be a long (int64) tensor, got {mask_indices.dtype}")
        if mask_indices.dim() != 2 or mask_indices.shape[0] != batch:
            raise ValueError(
                f"mask_indices must have shape [batch={batch}, num_positions], got {list(mask_indices.shape)}"
            )
        if mask_indices.numel() and (mask_indices.min() < 0 or mask_indices.max() >= seq_len):
            raise ValueError(
                f"mask_indices must lie in [0, {seq_len - 1}] (sequence length {seq_len}); got values in "
                f"[{int(mask_indices.min())}, {int(mask_indices.max())}]. Pad detections with an "
                "in-bounds index (e.g. 0) and label -100"
            )

    def _check_labels(self, labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return check_labels(labels, logits, self.config.task, self.config.level)


_LEVEL_DIMS = {"sequence": "[batch]", "token": "[batch, seq_len]", "positions": "[batch, num_positions]"}


def check_labels(labels: torch.Tensor, logits: torch.Tensor, task: str, level: str) -> torch.Tensor:
    """Check label shape and dtype against task and level; return them in the dtype the loss needs."""
    num_labels = logits.shape[-1]
    if task == "multiclass":
        expected = list(logits.shape[:-1])
        if list(labels.shape) != expected:
            raise ValueError(
                f"multiclass {level}-level labels must have shape {_LEVEL_DIMS[level]} = {expected} "
                f"(class ids, -100 to ignore), got {list(labels.shape)}"
            )
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"multiclass labels must be integer class ids, got dtype {labels.dtype}")
        labels = labels.long()
        bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_labels))
        if bad.any():
            raise ValueError(
                f"multiclass label {int(labels[bad][0])} is outside [0, {num_labels - 1}] "
                f"(num_labels={num_labels}; -100 means ignore)"
            )
        return labels
    expected = list(logits.shape)
    if list(labels.shape) != expected:
        raise ValueError(
            f"multilabel {level}-level labels must have shape {_LEVEL_DIMS[level][:-1]}, num_labels] "
            f"= {expected} (0/1 per label, -100 to ignore), got {list(labels.shape)}"
        )
    return labels.to(logits.dtype if logits.is_floating_point() else torch.float)


def compute_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    task: str,
    class_weights=None,
    pos_weight=None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy (multiclass) or BCE-with-logits (multilabel), ignoring -100 labels.

    Multilabel: each element with -100 is ignored, and a whole row (sequence, token or
    detection) is ignored when its first label is -100. ``class_weights`` (multiclass) weigh each
    item by its label's weight, normalised by the kept items' weights (as ``CrossEntropyLoss``);
    ``pos_weight`` (multilabel) weighs the positive term of each label; ``label_smoothing`` mixes
    the targets with the uniform distribution (multilabel: towards 1/2).
    """
    if task == "multiclass":
        flat_labels = labels.reshape(-1)
        if (flat_labels != IGNORE_INDEX).sum() == 0:
            return logits.sum() * 0.0
        weight = None if class_weights is None else torch.tensor(class_weights, device=logits.device)
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            flat_labels,
            weight=weight,
            ignore_index=IGNORE_INDEX,
            label_smoothing=float(label_smoothing),
        )
    mask = (labels != IGNORE_INDEX) & (labels[..., :1] != IGNORE_INDEX)
    targets = labels.float().clamp(min=0.0)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / 2
    losses = nn.functional.binary_cross_entropy_with_logits(
        logits.float(),
        targets,
        reduction="none",
        pos_weight=None if pos_weight is None else torch.tensor(pos_weight, device=logits.device),
    )
    return (losses * mask).sum() / mask.sum().clamp(min=1)


HydraHeadConfig.register_for_auto_class()
