"""The four datasets built from a parsed WordNet (leak-free hash splits), and their statistics."""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass

from hydrahead.data import SPLITS

from .morphology import find_words, tokenize
from .parse import WordNet
from .sources import POS_FILES

DATASETS = ("wordnet_gloss", "wordnet_lemma", "wordnet_examples", "wordnet_tagging")


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


@functools.cache
def split_of(key: str) -> str:
    """train / validation / test, 80/10/10, by a SHA-256 of ``key`` (stable across runs and machines)."""
    bucket = stable_hash("split:" + key) % 100
    return "train" if bucket < 80 else "validation" if bucket < 90 else "test"


def _order(rows: list[tuple[str, dict]]) -> list[dict]:
    """Rows (row key, row) in the order of a hash of their keys."""
    return [row for _, row in sorted(rows, key=lambda item: (stable_hash("order:" + item[0]), item[0]))]


@dataclass
class Dataset:
    name: str
    level: str
    task: str
    splits: dict[str, list[dict]]
    dropped: dict[str, int] | None = None


def build_gloss(wn: WordNet) -> Dataset:
    rows: dict[str, list] = {s: [] for s in SPLITS}
    for synset in wn.synsets:
        if synset.definition:
            row = {"text": synset.definition, "label": synset.lexname}
            rows[split_of(synset.uid)].append((synset.uid, row))
    return Dataset("wordnet_gloss", "sequence", "multiclass", {s: _order(r) for s, r in rows.items()})


def build_lemma(wn: WordNet) -> Dataset:
    senses: dict[str, set[str]] = {}
    for synset in wn.synsets:
        for lemma in synset.lemmas:
            senses.setdefault(lemma.lower(), set()).add(synset.lexname)
    rows: dict[str, list] = {s: [] for s in SPLITS}
    for lemma, labels in senses.items():
        rows[split_of("lemma:" + lemma)].append((lemma, {"text": lemma, "label": sorted(labels)}))
    return Dataset("wordnet_lemma", "sequence", "multilabel", {s: _order(r) for s, r in rows.items()})


def build_examples_and_tagging(wn: WordNet) -> tuple[Dataset, Dataset]:
    positions: dict[str, list] = {s: [] for s in SPLITS}
    tagging: dict[str, list] = {s: [] for s in SPLITS}
    dropped = dict.fromkeys(SPLITS, 0)
    caches: dict[str, dict] = {pos: {} for pos in POS_FILES}
    for synset in wn.synsets:
        split = split_of(synset.uid)
        exceptions = wn.exceptions.get(synset.pos, {})
        for index, example in enumerate(synset.examples):
            tokens = tokenize(example)
            matches = find_words(tokens, synset.words, synset.pos, exceptions, cache=caches[synset.pos])
            if not matches:
                dropped[split] += 1
                continue
            key = f"{synset.uid}#{index}"
            starts = [start for start, _ in matches]
            positions[split].append(
                (
                    key,
                    {
                        "tokens": tokens,
                        "word_positions": starts,
                        "labels": [synset.lexname] * len(starts),
                    },
                )
            )
            tags = ["O"] * len(tokens)
            for start, length in matches:
                tags[start] = f"B-{synset.lexname}"
                for j in range(start + 1, start + length):
                    tags[j] = f"I-{synset.lexname}"
            tagging[split].append((key, {"tokens": tokens, "tags": tags}))
    return (
        Dataset(
            "wordnet_examples",
            "positions",
            "multiclass",
            {s: _order(r) for s, r in positions.items()},
            dict(dropped),
        ),
        Dataset("wordnet_tagging", "token", "bio", {s: _order(r) for s, r in tagging.items()}, dict(dropped)),
    )


def build_all(wn: WordNet) -> list[Dataset]:
    return [build_gloss(wn), build_lemma(wn), *build_examples_and_tagging(wn)]


# --------------------------------------------------------------------------------------------------
# Statistics


def _class_stats(counts: Counter, train_majority: str | None) -> dict:
    total = sum(counts.values())
    ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    majority = next(iter(ordered), None)
    stats = {
        "num_classes": len(ordered),
        "class_counts": ordered,
        "majority_class": majority,
        "majority_baseline": round(counts[majority] / total, 6) if total else 0.0,
    }
    if train_majority is not None:
        stats["train_majority_baseline"] = round(counts.get(train_majority, 0) / total, 6) if total else 0.0
    return stats


def split_stats(dataset: Dataset, rows: list[dict], train_majority=None) -> dict:
    """Size, class counts, majority class and baselines of one split.

    ``majority_baseline``: accuracy of always predicting this split's most frequent class (label set
    for multilabel, tag for tagging); ``train_majority_baseline``: the same with train's majority.
    """
    stats: dict = {"size": len(rows)}
    if dataset.task == "multilabel":
        sets = Counter(tuple(row["label"]) for row in rows)
        labels = Counter(label for row in rows for label in row["label"])
        top = min(sets.items(), key=lambda kv: (-kv[1], kv[0]))[0] if sets else None
        stats.update(
            num_classes=len(labels),
            class_counts=dict(sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))),
            label_cardinality=round(sum(len(row["label"]) for row in rows) / len(rows), 6) if rows else 0.0,
            num_label_sets=len(sets),
            majority_class=list(top) if top is not None else None,
            majority_baseline=round(sets[top] / len(rows), 6) if rows else 0.0,
        )
        if train_majority is not None:
            stats["train_majority_baseline"] = (
                round(sets.get(tuple(train_majority), 0) / len(rows), 6) if rows else 0.0
            )
    elif dataset.level == "positions":
        counts = Counter(label for row in rows for label in row["labels"])
        stats["positions"] = sum(counts.values())
        stats.update(_class_stats(counts, train_majority))
    elif dataset.level == "token":
        tags = Counter(tag for row in rows for tag in row["tags"])
        entities = Counter(tag[2:] for row in rows for tag in row["tags"] if tag.startswith("B-"))
        stats["tokens"] = sum(tags.values())
        stats.update(_class_stats(tags, train_majority))
        stats["entities"] = sum(entities.values())
        stats["entity_counts"] = dict(sorted(entities.items(), key=lambda kv: (-kv[1], kv[0])))
        stats["num_entity_classes"] = len(entities)
    else:
        stats.update(_class_stats(Counter(row["label"] for row in rows), train_majority))
    return stats


def dataset_stats(dataset: Dataset, source: str) -> dict:
    stats: dict = {"name": dataset.name, "level": dataset.level, "task": dataset.task, "source": source}
    splits = {}
    train = split_stats(dataset, dataset.splits["train"])
    for split in SPLITS:
        splits[split] = (
            train
            if split == "train"
            else split_stats(dataset, dataset.splits[split], train_majority=train["majority_class"])
        )
    labels = set()
    for split in SPLITS:
        labels.update(splits[split]["class_counts"])
    stats["num_classes"] = len(labels)
    stats["classes"] = sorted(labels)
    if dataset.level == "token":
        stats["num_entity_classes"] = len({e for s in SPLITS for e in splits[s]["entity_counts"]})
    if dataset.dropped is not None:
        stats["dropped_examples"] = sum(dataset.dropped.values())
        stats["dropped_per_split"] = dataset.dropped
        for split in SPLITS:
            splits[split]["dropped_examples"] = dataset.dropped[split]
        kept = sum(len(dataset.splits[s]) for s in SPLITS)
        stats["dropped_fraction"] = (
            round(stats["dropped_examples"] / (kept + stats["dropped_examples"]), 6)
            if kept + stats["dropped_examples"]
            else 0.0
        )
    stats["splits"] = splits
    return stats
