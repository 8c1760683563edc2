"""The LightningDataModule: read splits, build the label vocabulary, encode, batch with dynamic padding."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader

from hydrahead.config.schema import DataConfig
from hydrahead.modeling.head_spec import IGNORE_INDEX

from . import SPLITS, cache
from .encode import DataError, Encoded, encode, sort_labels
from .readers import read_examples

log = logging.getLogger(__name__)


class Collator:
    """Pads a list of features to the longest in the batch (labels and positions with -100)."""

    def __init__(self, pad_token_id: int, level: str, task: str, num_labels: int):
        self.pad_token_id = pad_token_id
        self.level = level
        self.task = task
        self.num_labels = num_labels

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        batch: dict[str, torch.Tensor] = {}
        pads = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": 0}
        for key, pad in pads.items():
            if key in features[0]:
                batch[key] = torch.tensor([f[key] + [pad] * (longest - len(f[key])) for f in features])
        ignore_row = IGNORE_INDEX if self.task == "multiclass" else [float(IGNORE_INDEX)] * self.num_labels
        dtype = torch.long if self.task == "multiclass" else torch.float
        if self.level == "sequence":
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=dtype)
        elif self.level == "token":
            batch["labels"] = torch.tensor(
                [f["labels"] + [ignore_row] * (longest - len(f["labels"])) for f in features], dtype=dtype
            )
        else:
            most = max(1, max(len(f["mask_indices"]) for f in features))
            batch["mask_indices"] = torch.tensor(
                [f["mask_indices"] + [0] * (most - len(f["mask_indices"])) for f in features]
            )
            batch["labels"] = torch.tensor(
                [f["labels"] + [ignore_row] * (most - len(f["labels"])) for f in features], dtype=dtype
            )
        return batch


def shard_bounds(count: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous slice ``[start, end)`` of ``count`` items that rank ``rank`` of ``world`` takes:
    the first ``count % world`` ranks one item more (``numpy.array_split``'s split). Concatenated in
    rank order, the shares are the items in their order, each once."""
    size, extra = divmod(count, world)
    start = rank * size + min(rank, extra)
    return start, start + size + (rank < extra)


def eval_share(count: int, rank: int, world: int, split: str) -> tuple[int, int]:
    """Rank ``rank``'s slice of an evaluation split of ``count`` items (:func:`shard_bounds`); every rank
    needs one item at least, or the ranks' metric syncs would not pair up."""
    if world > 1 and count < world:
        raise ValueError(f"the {split} split has {count} examples, fewer than the {world} processes")
    return shard_bounds(count, rank, world)


def replicas(num_replicas: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """(world size, rank): as given, else the initialised ``torch.distributed`` group's, else (1, 0)."""
    if num_replicas is None or rank is None:
        dist = torch.distributed
        initialised = dist.is_available() and dist.is_initialized()
        num_replicas = dist.get_world_size() if initialised else 1
        rank = dist.get_rank() if initialised else 0
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} outside a world of {num_replicas} processes")
    return num_replicas, rank


class EpochBatchSampler(BatchSampler):
    """Shuffled training batches whose order is a function of (seed, epoch) alone.

    Lightning calls ``set_epoch`` each epoch, so a run resumed from a checkpoint sees exactly the
    batches an uninterrupted run would. ``group_by_length`` sorts within mega-batches of
    ``50 * batch_size`` so each batch holds similar lengths (fewer pad tokens).

    Under DDP it shards itself (Lightning must not inject a DistributedSampler:
    ``use_distributed_sampler=False``): every rank draws the epoch's order of *global* batches of
    ``batch_size * num_replicas``, the batches one process with that batch size would draw, and
    takes its contiguous ``batch_size`` share of each. So every rank has the same number of batches
    (DDP never waits on a missing one), the shares of an epoch are disjoint and cover it, and a
    run's global batches are those of a one-process run at the global batch size. A short global
    batch (the epoch's remainder) is split as evenly as the ranks allow; one shorter than the world
    is first filled up with the epoch's first items (the only repeats, and only then).
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        seed: int = 0,
        group_by_length: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        super().__init__(range(len(lengths)), batch_size, drop_last=False)
        self.lengths = lengths
        self.seed = seed
        self.group_by_length = group_by_length
        self.num_replicas, self.rank = replicas(num_replicas, rank)
        if len(lengths) < self.num_replicas:
            raise ValueError(f"{len(lengths)} training examples are too few for {self.num_replicas} ranks")
        self.epoch = 0
        self.position = 0
        """Batches of this epoch already trained on (set by the training loop: ``SamplerEpoch``)."""
        self._resume_at = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.position = self._resume_at = 0
        self.epoch = epoch

    def state_dict(self) -> dict:
        """Where training is: the epoch and its batches already trained on (a mid-epoch checkpoint)."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        """Resume mid-epoch: the next pass over ``state["epoch"]`` skips its first ``position`` batches."""
        self.epoch = int(state.get("epoch", 0))
        self.position = self._resume_at = int(state.get("position", 0))

    def global_batches(self) -> list[list[int]]:
        """This epoch's batches of ``batch_size * num_replicas``, the same on every rank."""
        rng = random.Random(self.seed * 100_003 + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        size = self.batch_size * self.num_replicas
        if not self.group_by_length:
            return [order[i : i + size] for i in range(0, len(order), size)]
        mega = 50 * size
        batches = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
        rng.shuffle(batches)
        return batches

    def __iter__(self):
        # A generator: the order is drawn at the first batch, not when the iterator is made (Lightning
        # makes the first epoch's iterator before the epoch is set, also when resuming at epoch N).
        batches = self.global_batches()
        skip, self._resume_at = self._resume_at, 0  # a resumed epoch: its trained batches, once
        if self.num_replicas == 1:
            yield from batches[skip:]
            return
        first = [i for batch in batches for i in batch][: self.num_replicas]
        for batch in batches[skip:]:
            if len(batch) < self.num_replicas:
                batch = batch + first[: self.num_replicas - len(batch)]
            start, end = shard_bounds(len(batch), self.rank, self.num_replicas)
            yield batch[start:end]

    def __len__(self) -> int:
        size = self.batch_size * self.num_replicas
        return (len(self.lengths) + size - 1) // size


class ResumableLoader(DataLoader):
    """The training DataLoader, with its batch sampler's state: Lightning keeps a loader's
    ``state_dict`` in every checkpoint and gives it back on a mid-epoch resume, so the resumed
    epoch goes on from the next batch."""

    def state_dict(self) -> dict:
        sampler = self.batch_sampler
        return sampler.state_dict() if callable(getattr(sampler, "state_dict", None)) else {}

    def load_state_dict(self, state: dict) -> None:
        sampler = self.batch_sampler
        if state and callable(getattr(sampler, "load_state_dict", None)):
            sampler.load_state_dict(state)


@dataclass
class EncodedData:
    """What a DataModule hands the frozen-backbone feature cache: the encoded splits and how to batch them."""

    splits: dict[str, list[dict]]
    """Per split, the encoded inputs (``input_ids``, ``attention_mask``, ``labels``, ...)."""
    level: str
    task: str
    num_labels: int
    pad_id: int
    batch_size: int
    eval_batch_size: int
    seed: int
    group_by_length: bool
    key: str
    """What determines the encoded splits (file content or generator settings, tokenizer, options)."""
    inputs_key: str | None = None
    """What determines the inputs and which items carry a label, not the label values: a control
    task's data shares it with the real task's, and so shares its frozen features. None: ``key``."""
    control: dict | None = None
    """A control task's record (seed, types, distribution, type -> label map); None: the real task."""

    def lengths(self, split: str) -> list[int]:
        return [len(f["input_ids"]) for f in self.splits[split]]


class HeadDataModule(L.LightningDataModule):
    """Reads the splits named by the ``data`` config, builds labels from train, encodes every split.

    Call :meth:`load` before building the model: the model needs :attr:`labels`. With a
    ``cache_dir``, tokenized splits of file-based data are cached (see ``hydrahead.data.cache``).
    """

    def __init__(
        self,
        data_cfg: DataConfig,
        tokenizer,
        task: str,
        labels: list[str] | None = None,
        cache_dir: str | Path | None = None,
        control=None,
    ):
        super().__init__()
        self.cfg = data_cfg
        self.control = control
        """A :class:`~hydrahead.data.control.ControlSpec`: train on its control task (None: the real one)."""
        self.control_record: dict | None = None
        self._digests: dict = {}
        self.tokenizer = tokenizer
        self.task = task
        self.level = data_cfg.level
        self.labels = list(labels) if labels else None
        self.cache_dir = Path(cache_dir) / "tokenized" if cache_dir else None
        self.splits: dict[str, Encoded] = {}
        self.cache_hit: bool | None = None

    def files(self) -> dict[str, Path]:
        """The local file of each split that has one."""
        named = {split: getattr(self.cfg, f"{split}_file", None) for split in SPLITS}
        return {split: Path(path).expanduser().resolve() for split, path in named.items() if path}

    def limit(self, split: str) -> int | None:
        return {
            "train": self.cfg.limit_train,
            "validation": self.cfg.limit_validation,
            "test": self.cfg.limit_test,
        }[split]

    def read(self, split: str, names: set | None = None) -> list[dict] | None:
        """The examples of ``split`` (its first ``data.limit_<split>``), or None when there is no such
        split; the label names of every row, kept or not, are added to ``names``."""
        from .encode import label_names

        cfg = self.cfg
        if cfg.name.startswith("synthetic") or cfg.hf_name:
            if cfg.hf_name:
                from .hub import read_hub_split

                examples = read_hub_split(cfg, split, self.task)
            else:
                from .synthetic import generate

                size = {"train": cfg.num_train, "validation": cfg.num_validation, "test": cfg.num_test}[split]
                examples = generate(self.level, self.task, split, size, cfg.seed) if size else None
            if examples and names is not None:
                names.update(n for e in examples for n in label_names(e, self.level, self.task))
            return examples[: self.limit(split)] if examples else examples
        path = self.files().get(split)
        keep = (self.control.key,) if self.control is not None and self.control.key else ()
        return (
            read_examples(path, cfg, self.task, limit=self.limit(split), names=names, keep=keep)
            if path
            else None
        )

    def _cache_key(self, control: bool = True) -> str | None:
        files = self.files()
        if self.cache_dir is None or not files or self.cfg.hf_name:
            return None
        options = dataclasses.asdict(self.cfg)
        for key in (
            "batch_size",
            "eval_batch_size",
            "num_workers",
            "group_by_length",
            "train_file",
            "validation_file",
            "test_file",
            "seed",
            "prepare",
        ):
            options.pop(key, None)
        return cache.digest(
            {
                "files": {split: self._digest(path) for split, path in files.items() if path.is_file()},
                "tokenizer": self._fingerprint(),
                "labels": self.labels,
                "task": self.task,
                "options": options,
                "version": 1,
                **self._control_part(control),
            }
        )

    def _digest(self, path: Path) -> str:
        """A data file's content digest, read once per data module (the keys ask for it several times)."""
        if path not in self._digests:
            self._digests[path] = cache.file_digest(path)
        return self._digests[path]

    def _fingerprint(self) -> str:
        if "tokenizer" not in self._digests:
            self._digests["tokenizer"] = cache.tokenizer_fingerprint(self.tokenizer)
        return self._digests["tokenizer"]

    def _control_part(self, control: bool) -> dict:
        return {"control": self.control.as_dict()} if control and self.control is not None else {}

    def _vocab_file(self) -> Path | None:
        """Where the label vocabulary of this train file (content, fields, task) is cached."""
        train = self.files().get("train")
        if self.cache_dir is None or train is None or not train.is_file():
            return None
        options = dataclasses.asdict(self.cfg)
        parts = {
            "train": self._digest(train),
            "fields": options.get("fields"),
            "level": self.level,
            "task": self.task,
            "format": options.get("format"),
            "on_error": options.get("on_error"),
        }
        return self.cache_dir / f"vocab-{cache.digest(parts)}.json"

    def data_key(self, control: bool = True) -> str:
        """What determines the encoded splits: file content (or generator settings), tokenizer, options,
        and the control task (``control=False``: the key of the same data with its real labels)."""
        file_key = self._cache_key(control)
        if file_key:
            return file_key
        return cache.digest(
            {
                "options": dataclasses.asdict(self.cfg),
                "tokenizer": self._fingerprint(),
                "labels": self.labels,
                "task": self.task,
                **self._control_part(control),
            }
        )

    def _apply_control(self, raw: dict) -> dict:
        """The splits relabelled by the control task drawn from this train split."""
        from .control import ControlTask

        task = ControlTask.from_train(self.control, self.level, raw["train"])
        out = {split: task.apply(examples) if examples else examples for split, examples in raw.items()}
        self.control_record = task.record()
        log.info(
            "control task (seed %d): %d types, labels drawn from train's distribution over %d labels",
            self.control.seed,
            len(task.mapping),
            len(task.labels),
        )
        return out

    def load(self) -> HeadDataModule:
        """Read, build the label vocabulary (unless given, e.g. on resume) and encode all splits."""
        if self.splits:
            return self
        vocab_file = self._vocab_file()
        if self.labels is None and vocab_file is not None and vocab_file.is_file():
            self.labels = json.loads(vocab_file.read_text())["labels"]  # the train file did not change
        key = self._cache_key() if self.labels is not None else None
        cached = cache.load(self.cache_dir, key) if key else None
        if cached is None:
            names: set = set()
            raw = {split: self.read(split, names if split == "train" else None) for split in SPLITS}
            where = self.cfg.name
            if not raw["train"]:
                raise DataError(f"data={where}: the train split is empty (data.train_file)")
            if not raw["validation"]:
                raise DataError(f"data={where}: there is no validation split (data.validation_file)")
            if self.labels is None:
                self.labels = sort_labels(names)
                if vocab_file is not None:
                    cache.store_json(vocab_file, {"labels": self.labels})
                key = self._cache_key()
                cached = cache.load(self.cache_dir, key) if key else None
        if cached is not None:
            self.control_record = cached.pop("_control", None)  # a control task's record
            self.splits = {split: Encoded(**value) for split, value in cached.items()}
            self.cache_hit = True
            log.info("tokenized %s from the cache (%s)", self.cfg.name, key)
            return self
        self.cache_hit = False if key else None
        if self.control is not None:
            raw = self._apply_control(raw)
        for split, examples in raw.items():
            if not examples:
                continue
            encoded = encode(
                examples,
                self.tokenizer,
                level=self.level,
                task=self.task,
                labels=self.labels,
                max_length=self.cfg.max_length,
                source=f"{self.cfg.name}/{split}",
                label_all_subwords=self.cfg.label_all_subwords,
            )
            if encoded.dropped_positions:
                log.warning(
                    "%s/%s: %d of %d positions fall outside max_length=%d and were dropped",
                    self.cfg.name,
                    split,
                    encoded.dropped_positions,
                    encoded.total_positions,
                    self.cfg.max_length,
                )
            self.splits[split] = encoded
        if key:
            payload = {split: vars(enc) for split, enc in self.splits.items()}
            if self.control_record is not None:
                payload["_control"] = self.control_record
            cache.store(self.cache_dir, key, payload)
        return self

    def load_split(self, split: str) -> HeadDataModule:
        """Read and encode ``split`` alone, with the given label vocabulary (evaluating a trained
        model: its labels, no train split needed); a label outside it is a DataError naming file:line."""
        if self.labels is None:
            raise ValueError("load_split needs the label vocabulary (labels=...)")
        examples = self.read(split)
        if not examples:
            source = getattr(self.cfg, f"{split}_file", None) or f"data={self.cfg.name}"
            raise DataError(f"{source}: no {split} examples")
        self.splits[split] = encode(
            examples,
            self.tokenizer,
            level=self.level,
            task=self.task,
            labels=self.labels,
            max_length=self.cfg.max_length,
            source=f"{self.cfg.name}/{split}",
            label_all_subwords=self.cfg.label_all_subwords,
        )
        return self

    def split_loader(self, split: str) -> DataLoader:
        """Evaluation batches of ``split`` (length-sorted, as validation's)."""
        return self._loader(split, train=False)

    @property
    def eval_batch_size(self) -> int:
        return self.cfg.eval_batch_size or self.cfg.batch_size

    @property
    def has_test(self) -> bool:
        return "test" in self.splits

    def encoded(self) -> EncodedData:
        """The loaded splits and their batching, for the feature cache (see ``data.features``)."""
        self.load()
        cfg = self.cfg
        return EncodedData(
            splits={split: encoded.features for split, encoded in self.splits.items()},
            level=self.level,
            task=self.task,
            num_labels=len(self.labels),
            pad_id=self.tokenizer.pad_token_id,
            batch_size=cfg.batch_size,
            eval_batch_size=self.eval_batch_size,
            seed=cfg.seed,
            group_by_length=cfg.group_by_length,
            key=self.data_key(),
            inputs_key=self.data_key(control=False),
            control=self.control_record,
        )

    def setup(self, stage: str | None = None) -> None:
        self.load()

    def _collator(self) -> Collator:
        return Collator(self.tokenizer.pad_token_id, self.level, self.task, len(self.labels))

    def _replicas(self) -> tuple[int, int]:
        """(world size, rank) of the trainer this module serves (1, 0 outside one)."""
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _loader(self, split: str, train: bool) -> DataLoader:
        features = self.splits[split].features
        batch_size = self.cfg.batch_size if train else self.eval_batch_size
        world, rank = self._replicas()
        # An own generator: a DataLoader iterator otherwise draws its base seed from the global RNG,
        # which shifts every dropout mask after it (and would set token batches apart from cached ones).
        common = dict(
            generator=torch.Generator().manual_seed(self.cfg.seed),
            collate_fn=self._collator(),
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )
        if train:
            sampler = EpochBatchSampler(
                [len(f["input_ids"]) for f in features],
                batch_size,
                self.cfg.seed,
                self.cfg.group_by_length,
                num_replicas=world,
                rank=rank,
            )
            return ResumableLoader(features, batch_sampler=sampler, **common)
        # Sorted eval batches: the same metrics, far fewer pad tokens. Under DDP each rank takes a
        # contiguous share of that order: no item twice, and the metrics (synced) equal one process's.
        features = sorted(features, key=lambda f: len(f["input_ids"]))
        start, end = eval_share(len(features), rank, world, split)
        return DataLoader(features[start:end], batch_size=batch_size, shuffle=False, **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test" if self.has_test else "validation", train=False)
