"""Control tasks (Hewitt & Liang, EMNLP 2019): every word type gets one random label, fixed for good.

A control task keeps the inputs and the labelled items of the real task and replaces each item's
label by a label that is a function of its *type* alone: the word form at the labelled position
(token and positions levels, lowercased unless ``task.control_lowercase=false``), or the value of
the field ``task.control_key`` names (sequence level). A probe can only score well on it by
memorising types, so ``selectivity = metric(real) - metric(control)`` tells how much of a probe's
accuracy the representation explains rather than the probe.

The label of a type is drawn from the train split's empirical label distribution (over labelled
items, as the paper draws from the POS tag distribution), using a hash of ``(control_seed, type)``
as the uniform draw. So the label depends on the type's string and the seed only: every split, every
sentence and every run agree, and a type never seen in train gets a label as fixed as the others.
(Shuffling the labels of tokens, as in the paper's public code, is not a control task: the same type
would get different labels.)
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

from .encode import DataError


@dataclass(frozen=True)
class ControlSpec:
    """What defines a control task (the ``task.control*`` keys)."""

    seed: int = 0
    lowercase: bool = True
    key: str | None = None
    """Sequence level: the example field whose value is the type."""

    def as_dict(self) -> dict:
        return {"seed": self.seed, "lowercase": self.lowercase, "key": self.key}


def spec_of(task_cfg) -> ControlSpec | None:
    """The control spec of a ``task`` config, or None for the real task."""
    if not getattr(task_cfg, "control", False):
        return None
    return ControlSpec(task_cfg.control_seed, task_cfg.control_lowercase, task_cfg.control_key)


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def item_types(example: dict, level: str, spec: ControlSpec) -> list[str]:
    """The type of each labelled item of ``example``, in the order of its labels."""
    if level == "sequence":
        name = spec.key
        value = example.get("_fields", {}).get(name, example.get(name))
        if value is None:
            where = example.get("_where", "an example")
            raise DataError(f"{where}: no field {name!r} (task.control_key) to key the control task on")
        types = [value if isinstance(value, str) else json.dumps(value, sort_keys=True)]
    elif level == "token":
        types = list(example["tokens"])
    elif "spans" in example:
        types = [example["text"][start:end] for start, end in example["spans"]]
    else:
        types = [example["tokens"][p] for p in example["word_positions"]]
    return [t.lower() for t in types] if spec.lowercase else types


def _items(example: dict, level: str) -> list:
    if level == "sequence":
        return [example["label"]]
    return list(example["tags"] if level == "token" else example["labels"])


def _with_items(example: dict, level: str, items: list) -> dict:
    out = dict(example)
    if level == "sequence":
        out["label"] = items[0]
    else:
        out["tags" if level == "token" else "labels"] = items
    return out


def _canonical(value):
    """Labels compared as the encoder will see them: strings; a multilabel item as a sorted tuple."""
    if isinstance(value, (list, tuple)):
        return tuple(sorted(str(v) for v in value))
    return str(value)


@dataclass
class ControlTask:
    """A control task built from a train split: its label distribution and the type -> label map."""

    spec: ControlSpec
    level: str
    labels: list
    """The label values of the distribution (a multilabel item's value is a tuple of names)."""
    cumulative: list[float]
    mapping: dict[str, object] = field(default_factory=dict)
    """Every type labelled so far (all splits) and its control label."""

    @classmethod
    def from_train(cls, spec: ControlSpec, level: str, train: list[dict]) -> ControlTask:
        counts = Counter(_canonical(item) for example in train for item in _items(example, level))
        if not counts:
            raise DataError("task.control: the train split has no labelled items to draw control labels from")
        labels = sorted(counts, key=lambda v: json.dumps(v))  # a fixed order, whatever the file order
        total = sum(counts.values())
        cumulative, running = [], 0
        for value in labels:
            running += counts[value]
            cumulative.append(running / total)
        cumulative[-1] = 1.0
        return cls(spec, level, labels, cumulative)

    @property
    def distribution(self) -> dict[str, float]:
        """The empirical label distribution the control labels are drawn from."""
        previous, out = 0.0, {}
        for value, edge in zip(self.labels, self.cumulative):
            out[json.dumps(_plain(value)) if isinstance(value, tuple) else value] = edge - previous
            previous = edge
        return out

    def draw(self, type_: str):
        """The control label of a type: a function of (seed, type) alone."""
        digest = hashlib.blake2b(f"{self.spec.seed}\x00{type_}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2**64
        return self.labels[min(bisect.bisect_right(self.cumulative, u), len(self.labels) - 1)]

    def label_for(self, type_: str):
        if type_ not in self.mapping:
            self.mapping[type_] = self.draw(type_)
        return self.mapping[type_]

    def apply(self, examples: list[dict]) -> list[dict]:
        """The examples with each labelled item's label replaced by its type's control label."""
        out = []
        for example in examples:
            types = item_types(example, self.level, self.spec)
            out.append(_with_items(example, self.level, [_plain(self.label_for(t)) for t in types]))
        return out

    def summary(self) -> dict:
        """What metrics.json records of a control run."""
        return {
            **self.spec.as_dict(),
            "types": len(self.mapping),
            "level": self.level,
            "distribution": self.distribution,
        }

    def record(self) -> dict:
        """What labels.json keeps: the summary and the whole type -> control label map."""
        return {**self.summary(), "mapping": {t: _plain(v) for t, v in sorted(self.mapping.items())}}
