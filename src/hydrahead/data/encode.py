"""Examples -> model features: tokenization, word/label alignment, label vocabularies.

Example schema per level (field names are the defaults):
  sequence:  {"text": str, "text_pair"?: str, "label": str | int | list[str]}
  token:     {"tokens": list[str], "tags": list[str] | list[list[str]]}
  positions: {"tokens": list[str], "word_positions": list[int], "labels": list[str] | list[list[str]]}
             or {"text": str, "spans": [[start, end], ...], "labels": ...}

Word labels go on a word's first subword (every subword with ``label_all_subwords``); the others and
special tokens get -100. A position maps to the first subword of its word; positions truncated away
are dropped and counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from hydrahead.modeling.head_spec import IGNORE_INDEX


class DataError(ValueError):
    """A data problem, with the place it was found (file or split, and line)."""


def _label_items(example: dict, level: str) -> Iterable:
    if level == "sequence":
        return [example["label"]]
    return example["tags"] if level == "token" else example["labels"]


def label_names(example: dict, level: str, task: str):
    """The label names one example uses (multilabel: every name in any of its lists)."""
    for item in _label_items(example, level):
        if task == "multilabel":
            yield from (str(x) for x in item)
        else:
            yield str(item)


def sort_labels(names) -> list[str]:
    """A deterministic label order: numerically for integer class ids (2 before 10), else by name."""
    names = set(names)
    if names and all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def build_label_vocab(examples: list[dict], level: str, task: str) -> list[str]:
    """Sorted label names seen in ``examples``."""
    return sort_labels(name for example in examples for name in label_names(example, level, task))


@dataclass
class Encoded:
    """Encoded features of one split plus what was dropped on the way."""

    features: list[dict] = field(default_factory=list)
    dropped_positions: int = 0
    total_positions: int = 0


def encode(
    examples: list[dict],
    tokenizer,
    *,
    level: str,
    task: str,
    labels: list[str],
    max_length: int,
    source: str = "data",
    label_all_subwords: bool = False,
) -> Encoded:
    """Tokenize ``examples`` and align their labels to ids from ``labels``."""
    label2id = {name: i for i, name in enumerate(labels)}
    out = Encoded()

    def label_id(value, where: str):
        try:
            return label2id[str(value)]
        except KeyError:
            raise DataError(
                f"{where}: label {value!r} is not in the label vocabulary built from train "
                f"({len(labels)} labels: {labels[:10]}{'...' if len(labels) > 10 else ''})"
            ) from None

    def target(value, where: str):
        if task == "multiclass":
            if isinstance(value, (list, tuple)):
                raise DataError(f"{where}: multiclass needs one label per item, got a list {value!r}")
            return label_id(value, where)
        if not isinstance(value, (list, tuple)):
            raise DataError(f"{where}: multilabel needs a list of labels per item, got {value!r}")
        hot = [0.0] * len(labels)
        for name in value:
            hot[label_id(name, where)] = 1.0
        return hot

    ignore_row = IGNORE_INDEX if task == "multiclass" else [float(IGNORE_INDEX)] * len(labels)
    for line, example in enumerate(examples, start=1):
        where = example.get("_where", f"{source}:{line}")
        if level == "token" and len(example["tags"]) != len(example["tokens"]):
            raise DataError(f"{where}: {len(example['tokens'])} tokens but {len(example['tags'])} tags")
        if level == "positions" and "spans" not in example:
            positions, values = example["word_positions"], example["labels"]
            if len(positions) != len(values):
                raise DataError(f"{where}: {len(positions)} word_positions but {len(values)} labels")
        feature, slots, word_ids = encode_inputs(
            example, tokenizer, level=level, max_length=max_length, where=where
        )
        if level == "sequence":
            feature["labels"] = target(example["label"], where)
        elif level == "token":
            tags = example["tags"]
            aligned = []
            for index, word in enumerate(word_ids):
                use = word is not None and (label_all_subwords or slots[word] == index)
                aligned.append(target(tags[word], where) if use else ignore_row)
            feature["labels"] = aligned
        else:
            out.total_positions += len(slots)
            out.dropped_positions += slots.count(None)
            values = zip(slots, example["labels"])
            feature["labels"] = [target(value, where) for slot, value in values if slot is not None]
        out.features.append(feature)
    return out


def encode_inputs(
    example: dict, tokenizer, *, level: str, max_length: int, where: str = "data"
) -> tuple[dict, list[int | None] | None, list[int | None] | None]:
    """Tokenize one example's inputs (labels are not read): ``(feature, slots, word_ids)``.

    ``slots``: token level, the first subword of each word; positions level, the token each position
    maps to (``feature["mask_indices"]`` holds those kept); None where truncated away. Sequence level:
    None. ``word_ids``: the word of each token (pre-split words only), else None.
    """
    if level == "sequence":
        enc = tokenizer(example["text"], example.get("text_pair"), truncation=True, max_length=max_length)
        return {key: list(value) for key, value in enc.items()}, None, None
    if "spans" in example:  # positions given as character spans of a text
        enc = tokenizer(example["text"], truncation=True, max_length=max_length)
        feature = {key: list(value) for key, value in enc.items()}
        # None: truncated away (or only whitespace)
        slots = [
            next((t for c in range(start, end) if (t := enc.char_to_token(c)) is not None), None)
            for start, end in example["spans"]
        ]
        feature["mask_indices"] = [slot for slot in slots if slot is not None]
        return feature, slots, None
    words = example["tokens"]
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    word_ids = enc.word_ids()
    feature = {key: list(value) for key, value in enc.items()}
    first_subword: dict[int, int] = {}
    for index, word in enumerate(word_ids):
        if word is not None and word not in first_subword:
            first_subword[word] = index
    if level == "token":
        return feature, [first_subword.get(word) for word in range(len(words))], word_ids
    for position in example["word_positions"]:
        if not 0 <= position < len(words):
            raise DataError(f"{where}: word position {position} is outside the {len(words)} tokens")
    slots = [first_subword.get(position) for position in example["word_positions"]]  # None: truncated
    feature["mask_indices"] = [slot for slot in slots if slot is not None]
    return feature, slots, word_ids
