"""Frozen-backbone feature cache: a head sweep pays for one encoder pass, not one per job and epoch.

When the whole backbone is frozen (and so in eval mode), what the head sees for an input never
changes. One no-grad pass (length-sorted batches, optional bf16 autocast) stores each input's
per-layer representation, exactly ``HydraHeadModel.layer_features``: the pooled vectors at
sequence level, the labelled tokens at token level, the gathered positions at positions level.
Training then runs the head on these tensors, in the same batches as the uncached path.

Entries live under ``<cache_dir>/features/<key>/`` where the key covers the weights' source, the
tokenized data (file content, tokenizer, max_length, labels), the level and the storage dtype. One
entry holds every layer up to its depth and, at sequence level, every pooling (cls, mean, max), so a
sweep over layers, poolings, head shapes, learning rates and seeds on one frozen backbone pays one
pass. Writes go to a temporary file renamed into place, and a lock per key makes concurrent jobs
compute a missing entry once.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch

from hydrahead.backbone_ref import weights_digest as _weights_digest
from hydrahead.config.schema import BackboneConfig
from hydrahead.modeling.head_spec import IGNORE_INDEX
from hydrahead.utils.atomic import atomic_path

from .cache import digest
from .datamodule import Collator, EncodedData, EpochBatchSampler, eval_share

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
        source["random_init_seed"] = backbone_cfg.weights_seed(seed)
        return source
    path = Path(resolve_name_or_path(name))
    if path.is_dir():
        source["weights"] = _weights_digest(path)
    else:
        source["commit"] = getattr(model.config.backbone_config, "_commit_hash", None)
    return source


POOLINGS = ("cls", "mean", "max")  # what a sequence-level entry holds; the pooler runs on cls


def pooling_index(pooling: str) -> int:
    return POOLINGS.index({"pooler": "cls"}.get(pooling, pooling))


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
    poolings=POOLINGS,
) -> dict:
    """One no-grad pass over a split, in input order: labels, and per-layer representations stored
    layer-major in ``store_dtype``: ``[P, L, rows, H]`` at sequence level (every pooling in
    ``poolings``), ``[L, rows, H]`` at token and positions level (each layer one contiguous block)."""
    with _eval_mode(model):  # Lightning keeps module modes as it finds them
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
                if mask_indices is not None:
                    mask_indices = mask_indices.to(device)
                mask = inputs.get("attention_mask")
                if level == "sequence":  # [P, B, L, H]: every pooling of every layer
                    reps = torch.stack(
                        [model.layer_features(hidden, mask, None, layers=layers, pooling=p) for p in poolings]
                    )
                else:
                    reps = model.layer_features(hidden, mask, mask_indices, layers=layers)
            reps = reps.to(device="cpu", dtype=store_dtype).movedim(-2, 0)  # layer-major: [L, (P,) B, ...]
            if level == "sequence":
                reps = reps.movedim(1, 0)  # [P, L, B, H]
                if not out:
                    out["features"] = reps.new_empty((*reps.shape[:2], len(features), reps.shape[-1]))
                    out["labels"] = labels.new_empty((len(features), *labels.shape[1:]))
                out["features"][:, :, index] = reps
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


@contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class FeatureCache:
    """The on-disk entries of one (weights, tokenized data, level, dtype) key.

    An entry ``depth-<d>.pt`` holds layers 0..d (every pooling at sequence level) and serves every
    head that reads at most layer d, whatever its pooling.
    """

    def __init__(self, cache_dir: str | Path, key_parts: dict):
        self.key = digest(key_parts)
        self.folder = Path(cache_dir) / "features" / self.key

    def find(self, depth: int) -> Path | None:
        """The shallowest entry holding layers 0..``depth``, or None."""
        if not self.folder.is_dir():
            return None
        held = []
        for path in self.folder.glob("depth-*.pt"):
            try:
                held.append((int(path.stem.split("-")[1]), path))
            except ValueError:
                continue
        fits = sorted(entry for entry in held if entry[0] >= depth)
        return fits[0][1] if fits else None

    def store(self, depth: int, payload: dict) -> Path:
        target = self.folder / f"depth-{depth}.pt"
        with atomic_path(target) as tmp:
            torch.save(payload, tmp)
        return target

    def lock(self):
        from hydrahead.utils.lock import FileLock

        # A pass can take long on a big model: a holder that stops refreshing its heartbeat for
        # 10 minutes (or whose pid is gone on this host) is taken over.
        return FileLock(self.folder / "compute.lock", stale_after_s=600.0)


def entry_key(data: EncodedData, weights: dict, dtype: str, autocast_dtype) -> dict:
    return {
        "weights": weights,
        "data": data.inputs_key or data.key,
        "level": data.level,
        "dtype": dtype,
        "autocast": str(autocast_dtype),
        "layout": "depth/poolings/layer-major",
    }


def load_entry(
    model,
    data: EncodedData,
    cache_dir,
    *,
    weights: dict,
    depth: int,
    dtype: str = "float32",
    autocast_dtype=None,
) -> tuple[dict, Path, str]:
    """The cache entry holding layers 0..``depth`` of ``data`` (memory-mapped), computing it on a miss.

    Returns (payload, path, "hit" | "computed"). Of several processes missing the same entry, one
    computes it under the entry's lock while the others wait and then read it.
    """
    cache = FeatureCache(cache_dir, entry_key(data, weights, dtype, autocast_dtype))
    payload = _read(cache.find(depth))
    if payload is not None:
        return (*payload, "hit")
    with cache.lock() as lock:
        if lock.took_over:
            log.warning("feature cache: %s", lock.took_over)
        payload = _read(cache.find(depth))  # computed by another job while this one waited
        if payload is not None:
            log.info("feature cache: waited %.1f s for another job's pass", lock.waited_s)
            return (*payload, "hit")
        layers = list(range(depth + 1))
        entry = {"layers": torch.tensor(layers), "poolings": list(POOLINGS), "splits": {}}
        for split, features in data.splits.items():
            entry["splits"][split] = compute_split(
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
        path = cache.store(depth, entry)
    payload = _read(path)
    if payload is None:
        raise RuntimeError(f"feature cache entry {path} unreadable right after writing it")
    return (*payload, "computed")


def _read(path: Path | None) -> tuple[dict, Path] | None:
    if path is None:
        return None
    try:
        # Memory-mapped: only the pages of the layers and poolings read are touched.
        return torch.load(path, weights_only=True, mmap=True), path
    except Exception as err:  # a damaged entry is a miss, never a crash
        log.warning("feature cache entry %s unreadable (%s); recomputing", path, err)
        return None


def row_labels(data: EncodedData) -> dict[str, torch.Tensor]:
    """Per split, the labels of an entry's rows taken from ``data``: what ``compute_split`` stores,
    for data whose labels differ from those the entry was computed with (a control task)."""
    dtype = torch.long if data.task == "multiclass" else torch.float
    out = {}
    for split, features in data.splits.items():
        if data.level == "sequence":
            out[split] = torch.tensor([f["labels"] for f in features], dtype=dtype)
            continue
        rows = [row for f in features for row in f["labels"]]
        labels = torch.tensor(rows, dtype=dtype).reshape(
            len(rows), *([data.num_labels] if dtype != torch.long else [])
        )
        out[split] = labels[_rows_kept(labels, data.task)] if len(rows) else labels
    return out


def select(
    payload: dict, layers: list[int], pooling: str | None, level: str, labels: dict | None = None
) -> dict:
    """Per split ``{features [rows, L, H], labels, offsets}``: one head's layers (and pooling) of an
    entry, with the entry's labels or those given per split (:func:`row_labels`)."""
    held = payload["layers"].tolist()
    pick = torch.tensor([held.index(i) for i in layers])
    splits = {}
    for split, data in payload["splits"].items():
        features = data["features"]
        if level == "sequence":
            features = features[pooling_index(pooling)]
        rows = labels[split] if labels is not None else data["labels"].clone()
        held_rows = int(data["offsets"][-1])  # (copies: the entry's mapping can be released)
        if len(rows) != held_rows:
            raise RuntimeError(
                f"feature cache entry: {split} has {held_rows} rows, the data {len(rows)} labels"
            )
        splits[split] = {
            "features": features.index_select(0, pick).movedim(0, -2).contiguous(),
            "labels": rows,
            "offsets": data["offsets"].clone(),
        }
    return splits


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
        num_replicas: int = 1,
        rank: int = 0,
        split: str = "evaluation",
    ):
        self.data = data
        self.level = level
        count = len(data["offsets"]) - 1
        if shuffle:
            self.batch_sampler = EpochBatchSampler(
                lengths, batch_size, seed, group_by_length, num_replicas=num_replicas, rank=rank
            )
        else:  # length-sorted, as the token-level eval loaders are: the same batches, the same losses
            order = sorted(range(count), key=lambda i: lengths[i]) if lengths else list(range(count))
            start, end = eval_share(count, rank, num_replicas, split)  # DDP: this rank's contiguous share
            order = order[start:end]
            self.batch_sampler = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def __len__(self) -> int:
        return len(self.batch_sampler)

    # Training batches are resumable mid-epoch: Lightning keeps this state in its checkpoints.
    def state_dict(self) -> dict:
        sampler = self.batch_sampler
        return sampler.state_dict() if isinstance(sampler, EpochBatchSampler) else {}

    def load_state_dict(self, state: dict) -> None:
        if state and isinstance(self.batch_sampler, EpochBatchSampler):
            self.batch_sampler.load_state_dict(state)

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
            # Each input's rows, padded to the batch's widest (features 0, labels -100): one gather.
            picked = torch.tensor(index)
            starts, counts = offsets[picked], offsets[picked + 1] - offsets[picked]
            width = max(1, int(counts.max()))
            step = torch.arange(width)
            real = step[None, :] < counts[:, None]  # [B, W]
            if not len(labels):
                feats = features.new_zeros((len(index), width, *features.shape[1:]), dtype=torch.float32)
                labs = labels.new_full((len(index), width, *labels.shape[1:]), IGNORE_INDEX)
                yield {"features": feats, "labels": labs}
                continue
            rows = (starts[:, None] + step[None, :]).clamp(max=len(labels) - 1)
            feats = features[rows].float()
            feats[~real] = 0.0
            labs = labels[rows]
            labs[~real] = IGNORE_INDEX
            yield {"features": feats, "labels": labs}


class FeatureDataModule(L.LightningDataModule):
    """Serves cached features in place of token batches: the same batches, in the same order."""

    def __init__(self, data: EncodedData, splits: dict):
        super().__init__()
        self.data = data
        self.splits = splits

    def _replicas(self) -> dict:
        """The trainer's world size and rank (DDP: every loader shards itself; one process outside)."""
        trainer = self.trainer
        return {"num_replicas": trainer.world_size, "rank": trainer.global_rank} if trainer else {}

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
            **self._replicas(),
        )

    def _eval(self, split: str) -> FeatureBatches:
        return FeatureBatches(
            self.splits[split],
            self.data.level,
            self.data.eval_batch_size,
            self.data.lengths(split),
            split=split,
            **self._replicas(),
        )

    def val_dataloader(self) -> FeatureBatches:
        return self._eval("validation")

    def test_dataloader(self) -> FeatureBatches:
        return self._eval("test" if "test" in self.splits else "validation")
