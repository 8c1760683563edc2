"""Frozen-backbone feature cache: a head sweep pays for one encoder pass, not one per job and epoch.

When the whole backbone is frozen (and so in eval mode), what the head sees for an input never
changes. One no-grad pass (length-sorted batches, optional bf16 autocast) stores each input's
per-layer representation, exactly ``HydraHeadModel.layer_features``: the pooled vector at
sequence level, the labelled tokens at token level, the gathered positions at positions level.
Training then runs the head on these tensors, in the same batches as the uncached path.

Entries live under ``<cache_dir>/features/<key>/`` where the key covers the weights' source, the
tokenized data (file content, tokenizer, max_length, labels), the representation and the storage
dtype; each file holds a set of layers and serves any head that reads a subset of them. Writes go
to a temporary file renamed into place, so parallel jobs of a sweep never read half an entry.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch

from hydrahead.config.schema import BackboneConfig
from hydrahead.modeling.head_spec import IGNORE_INDEX
from hydrahead.utils.atomic import atomic_path

from .cache import digest, file_digest
from .datamodule import Collator, EncodedData, EpochBatchSampler

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def use_cache(mode: str, freeze) -> tuple[bool, str]:
    """Whether to train on cached features, and why (for the log and metrics.json)."""
    if mode == "off":
        return False, "off (backbone.cache=off)"
    if freeze is not True:
        if mode == "on":
            raise ValueError(
                f"backbone.cache=on needs the whole backbone frozen (backbone.freeze=true), got "
                f"backbone.freeze={freeze}: trainable backbone layers change the features every step"
            )
        return False, f"off (backbone.freeze={freeze}: the features change while training)"
    return True, "on"


def _weights_digest(folder: Path) -> str | None:
    files = sorted(p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin", ".pt", ".h5"))
    return digest({path.name: file_digest(path) for path in files}) if files else None


def weights_source(backbone_cfg: BackboneConfig, model, seed: int) -> dict:
    """What determines the frozen backbone's weights, independent of how deep it was truncated."""
    from hydrahead.backbones import is_tiny, resolve_name_or_path

    name = str(backbone_cfg.name_or_path)
    source: dict = {
        "name": name,
        "revision": backbone_cfg.revision,
        "dtype": backbone_cfg.dtype,
        "attn": getattr(model.config.backbone_config, "_attn_implementation", None),
        "resize": backbone_cfg.resize_token_embeddings,
    }
    if is_tiny(name) or not backbone_cfg.pretrained:
        source["random_init_seed"] = seed
        return source
    path = Path(resolve_name_or_path(name))
    if path.is_dir():
        source["weights"] = _weights_digest(path)
    else:
        source["commit"] = getattr(model.config.backbone_config, "_commit_hash", None)
    return source


def representation_kind(model) -> str:
    config = model.config
    if config.level != "sequence":
        return config.level
    return {"pooler": "cls"}.get(config.head["pooling"], config.head["pooling"])


def _rows_kept(labels: torch.Tensor, task: str) -> torch.Tensor:
    """Which token/position rows of one input carry a label (the only ones its head is trained on)."""
    return labels != IGNORE_INDEX if task == "multiclass" else labels[..., 0] != IGNORE_INDEX


@torch.inference_mode()
def compute_split(
    model,
    features: list[dict],
    level: str,
    task: str,
    num_labels: int,
    pad_id: int,
    layers: list[int],
    batch_size: int = 32,
    autocast_dtype=None,
    store_dtype: torch.dtype = torch.float32,
) -> dict:
    """One no-grad pass over a split, in input order: labels, and per-layer representations stored
    layer-major (``[L, rows, H]``: each layer one contiguous block) in ``store_dtype``."""
    was_training = model.training
    model.eval()
    try:
        return _compute_split(
            model, features, level, task, num_labels, pad_id, layers, batch_size, autocast_dtype, store_dtype
        )
    finally:
        model.train(was_training)  # Lightning keeps module modes as it finds them


def _compute_split(
    model, features, level, task, num_labels, pad_id, layers, batch_size, autocast_dtype, store_dtype
) -> dict:
    device = next(model.parameters()).device
    collate = Collator(pad_id, level, task, num_labels)
    # Longest batches first: the allocator's first (largest) buffers are reused by every shorter batch
    # after them, so peak memory stays near one batch's working set; an out-of-memory error comes at once.
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    chunks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}  # sequence level: filled in place, no per-input copies to join
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = collate([features[i] for i in index])
        labels = batch.pop("labels")
        inputs = {k: v.to(device) for k, v in batch.items() if k != "mask_indices"}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            hidden = model.backbone(**inputs, output_hidden_states=True, return_dict=True).hidden_states
            mask_indices = batch.get("mask_indices")
            reps = model.layer_features(
                hidden,
                inputs.get("attention_mask"),
                None if mask_indices is None else mask_indices.to(device),
                layers=layers,
            )
        reps = reps.to(device="cpu", dtype=store_dtype).movedim(-2, 0)  # layer-major: [L, B, ...]
        if level == "sequence":
            if not out:
                out["features"] = reps.new_empty((reps.shape[0], len(features), *reps.shape[2:]))
                out["labels"] = labels.new_empty((len(features), *labels.shape[1:]))
            out["features"][:, index] = reps
            out["labels"][index] = labels
            continue
        for row, i in enumerate(index):
            keep = _rows_kept(labels[row], task)
            chunks[i] = (reps[:, row][:, keep], labels[row][keep])
    if level == "sequence":
        return {**out, "offsets": torch.arange(len(features) + 1)}
    rows = [chunks[i] for i in range(len(features))]
    counts = torch.tensor([len(r[1]) for r in rows])
    return {
        "features": torch.cat([r[0] for r in rows], dim=1),
        "labels": torch.cat([r[1] for r in rows]),
        "offsets": torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]),
    }


class FeatureCache:
    """The on-disk entries of one (weights, data, representation, dtype) key."""

    def __init__(self, cache_dir: str | Path, key_parts: dict):
        self.key = digest(key_parts)
        self.folder = Path(cache_dir) / "features" / self.key

    def find(self, layers: list[int]) -> Path | None:
        """An entry holding every one of ``layers`` (the smallest such), or None."""
        if not self.folder.is_dir():
            return None
        best = None
        for path in self.folder.glob("layers-*.pt"):
            held = {int(x) for x in path.stem.split("-")[1:]}
            if set(layers) <= held and (best is None or len(held) < best[0]):
                best = (len(held), path)
        return best[1] if best else None

    def store(self, layers: list[int], payload: dict) -> Path:
        target = self.folder / ("layers-" + "-".join(str(i) for i in layers) + ".pt")
        with atomic_path(target) as tmp:
            torch.save(payload, tmp)
        return target


def load_features(
    model,
    data: EncodedData,
    cache_dir,
    *,
    weights: dict,
    store_layers: str = "read",
    dtype: str = "float32",
    autocast_dtype=None,
) -> tuple[dict, str]:
    """Per split ``{features [rows, L, H], labels, offsets}`` for the model's layers; cached on disk.

    ``weights`` says where the backbone's weights come from (:func:`weights_source`).
    ``store_layers="computed"`` stores every layer up to the highest one read (the pass computes
    them anyway), so a later job reading a lower layer reuses the entry; ``"read"`` stores only
    the layers read.
    """
    needed = list(model.layer_indices)
    cache = FeatureCache(
        cache_dir,
        {
            "weights": weights,
            "data": data.key,
            "kind": representation_kind(model),
            "dtype": dtype,
            "autocast": str(autocast_dtype),
            "layout": "layer-major",
        },
    )
    found = cache.find(needed)
    status = "hit"
    if found is not None:
        try:
            # Memory-mapped: only the pages of the layers read are touched (an entry may hold many).
            payload = torch.load(found, weights_only=True, mmap=True)
        except Exception as err:  # a damaged entry is a miss, never a crash
            log.warning("feature cache entry %s unreadable (%s); recomputing", found, err)
            found = None
    if found is None:
        status = "computed"
        layers = list(range(max(needed) + 1)) if store_layers == "computed" else sorted(set(needed))
        payload = {"layers": torch.tensor(layers), "splits": {}}
        for split, features in data.splits.items():
            result = compute_split(
                model,
                features,
                data.level,
                data.task,
                data.num_labels,
                data.pad_id,
                layers,
                batch_size=data.eval_batch_size,
                autocast_dtype=autocast_dtype,
                store_dtype=DTYPES[dtype],
            )
            payload["splits"][split] = result
        found = cache.store(layers, payload)
    held = payload["layers"].tolist()
    pick = torch.tensor([held.index(i) for i in needed])
    splits = {}
    for split, data in payload["splits"].items():
        splits[split] = {
            "features": data["features"].index_select(0, pick).movedim(0, -2).contiguous(),
            "labels": data["labels"].clone(),  # copies: the entry's file mapping is released
            "offsets": data["offsets"].clone(),
        }
    log.info(
        "feature cache %s: %s (%s)",
        status,
        found,
        ", ".join(f"{s}={len(d['offsets']) - 1}" for s, d in splits.items()),
    )
    return splits, status


class FeatureBatches:
    """Batches of cached features, the same batches (and order) the token batches would have been.

    Token and position rows are padded per input (labels -100), so losses, metrics and seqeval see
    the same shapes as on the uncached path. ``batch_sampler.set_epoch`` is called by Lightning.
    """

    def __init__(
        self,
        data: dict,
        level: str,
        batch_size: int,
        lengths: list[int] | None = None,
        seed: int = 0,
        group_by_length: bool = False,
        shuffle: bool = False,
    ):
        self.data = data
        self.level = level
        count = len(data["offsets"]) - 1
        if shuffle:
            self.batch_sampler = EpochBatchSampler(lengths, batch_size, seed, group_by_length)
        else:  # length-sorted, as the token-level eval loaders are: the same batches, the same losses
            order = sorted(range(count), key=lambda i: lengths[i]) if lengths else list(range(count))
            self.batch_sampler = [order[i : i + batch_size] for i in range(0, count, batch_size)]

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self):
        features, labels, offsets = self.data["features"], self.data["labels"], self.data["offsets"]
        for index in self.batch_sampler:
            if self.level == "sequence":
                rows = torch.tensor(index)
                yield {
                    "features": features.index_select(0, rows).float(),
                    "labels": labels.index_select(0, rows),
                }
                continue
            spans = [(int(offsets[i]), int(offsets[i + 1])) for i in index]
            width = max(1, max(end - start for start, end in spans))
            feats = features.new_zeros((len(index), width, *features.shape[1:]), dtype=torch.float32)
            labs = labels.new_full((len(index), width, *labels.shape[1:]), IGNORE_INDEX)
            for row, (start, end) in enumerate(spans):
                feats[row, : end - start] = features[start:end].float()
                labs[row, : end - start] = labels[start:end]
            yield {"features": feats, "labels": labs}


class FeatureDataModule(L.LightningDataModule):
    """Serves cached features in place of token batches: the same batches, in the same order."""

    def __init__(self, data: EncodedData, splits: dict):
        super().__init__()
        self.data = data
        self.splits = splits

    def train_dataloader(self) -> FeatureBatches:
        d = self.data
        return FeatureBatches(
            self.splits["train"],
            d.level,
            d.batch_size,
            d.lengths("train"),
            d.seed,
            d.group_by_length,
            shuffle=True,
        )

    def _eval(self, split: str) -> FeatureBatches:
        return FeatureBatches(
            self.splits[split], self.data.level, self.data.eval_batch_size, self.data.lengths(split)
        )

    def val_dataloader(self) -> FeatureBatches:
        return self._eval("validation")

    def test_dataloader(self) -> FeatureBatches:
        return self._eval("test" if "test" in self.splits else "validation")


def training_data(
    model, datamodule, backbone: BackboneConfig, *, cache_dir, seed: int, precision, accelerator
):
    """What to train on: cached features of a frozen backbone when the cache applies, else ``datamodule``.

    Returns (datamodule, how: "hit" | "computed" | "off (why)"). The feature pass runs on the GPU
    when the trainer will use one, with bf16 autocast under a bf16 precision.
    """
    use, why = use_cache(backbone.cache, backbone.freeze)
    if not use:
        log.info("feature cache %s", why)
        return datamodule, why
    autocast = torch.bfloat16 if str(precision).startswith("bf16") else None
    on_gpu = torch.cuda.is_available() and str(accelerator) in ("auto", "gpu", "cuda")
    if on_gpu:
        model.cuda()
    data = datamodule.encoded()
    try:
        splits, status = load_features(
            model,
            data,
            cache_dir,
            weights=weights_source(backbone, model, seed),
            store_layers=backbone.cache_layers,
            dtype=backbone.cache_dtype,
            autocast_dtype=autocast,
        )
    finally:
        if on_gpu:
            model.cpu()
    return FeatureDataModule(data, splits), status
