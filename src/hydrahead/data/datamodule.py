"""The LightningDataModule: read splits, build the label vocabulary, encode, batch with dynamic padding."""

from __future__ import annotations

import logging
import random

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from .encode import IGNORE, Encoded, build_label_vocab, encode

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")


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
        ignore_row = IGNORE if self.task == "multiclass" else [float(IGNORE)] * self.num_labels
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


class EpochBatchSampler(Sampler[list[int]]):
    """Shuffled training batches whose order is a function of (seed, epoch) alone.

    Lightning calls ``set_epoch`` each epoch, so a run resumed from a checkpoint sees exactly the
    batches an uninterrupted run would. ``group_by_length`` sorts within mega-batches of
    ``50 * batch_size`` so each batch holds similar lengths (fewer pad tokens).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, group_by_length: bool = False):
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = random.Random(self.seed * 100_003 + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if not self.group_by_length:
            return iter([order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)])
        mega = 50 * self.batch_size
        batches = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


class HeadDataModule(L.LightningDataModule):
    """Reads the splits named by ``data`` config, builds labels from train, encodes every split.

    Call :meth:`load` before building the model: the model needs :attr:`labels`.
    """

    def __init__(self, data_cfg, tokenizer, task: str, labels: list[str] | None = None):
        super().__init__()
        self.cfg = data_cfg
        self.tokenizer = tokenizer
        self.task = task
        self.level = data_cfg.level
        self.labels = list(labels) if labels else None
        self.splits: dict[str, Encoded] = {}

    def read(self, split: str) -> list[dict] | None:
        """The raw examples of ``split``, or None when the dataset has no such split."""
        from .synthetic import generate

        if self.cfg.name.startswith("synthetic"):
            size = {"train": self.cfg.num_train, "validation": self.cfg.num_validation,
                    "test": self.cfg.num_test}[split]
            return generate(self.level, self.task, split, size, self.cfg.seed) if size else None
        raise ValueError(f"data.name={self.cfg.name!r}: unknown dataset")

    def load(self) -> HeadDataModule:
        """Read, build the label vocabulary (unless given, e.g. on resume) and encode all splits."""
        if self.splits:
            return self
        raw = {split: self.read(split) for split in SPLITS}
        if not raw["train"]:
            raise ValueError(f"data={self.cfg.name}: the train split is empty")
        if not raw["validation"]:
            raise ValueError(f"data={self.cfg.name}: there is no validation split")
        if self.labels is None:
            self.labels = build_label_vocab(raw["train"], self.level, self.task)
        for split, examples in raw.items():
            if not examples:
                continue
            encoded = encode(
                examples, self.tokenizer, level=self.level, task=self.task, labels=self.labels,
                max_length=self.cfg.max_length, source=f"{self.cfg.name}/{split}",
            )
            if encoded.dropped_positions:
                log.warning(
                    "%s/%s: %d of %d positions fall outside max_length=%d and were dropped",
                    self.cfg.name, split, encoded.dropped_positions, encoded.total_positions,
                    self.cfg.max_length,
                )
            self.splits[split] = encoded
        return self

    @property
    def has_test(self) -> bool:
        return "test" in self.splits

    def setup(self, stage: str | None = None) -> None:
        self.load()

    def _collator(self) -> Collator:
        return Collator(self.tokenizer.pad_token_id, self.level, self.task, len(self.labels))

    def _loader(self, split: str, train: bool) -> DataLoader:
        features = self.splits[split].features
        batch_size = self.cfg.batch_size if train else (self.cfg.eval_batch_size or self.cfg.batch_size)
        common = dict(collate_fn=self._collator(), num_workers=self.cfg.num_workers,
                      persistent_workers=self.cfg.num_workers > 0)
        if train:
            sampler = EpochBatchSampler(
                [len(f["input_ids"]) for f in features], batch_size, self.cfg.seed, self.cfg.group_by_length
            )
            return DataLoader(features, batch_sampler=sampler, **common)
        # Sorted eval batches: the same metrics, far fewer pad tokens.
        features = sorted(features, key=lambda f: len(f["input_ids"]))
        return DataLoader(features, batch_size=batch_size, shuffle=False, **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test" if self.has_test else "validation", train=False)
