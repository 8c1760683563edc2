"""Synthetic datasets whose labels are learnable functions of the words, generated from a seed.

Each generator returns examples in the same schema as local files (see ``hydrahead.data.encode``):
sequence ``{text, label}``, token ``{tokens, tags}``, positions ``{tokens, word_positions, labels}``.
Every word is in the tiny test vocab and in MiniLM's vocab, so any backbone reads them whole.
"""

from __future__ import annotations

import random

CATEGORIES = {
    "animal": ["cat", "dog", "bird", "fish", "horse", "cow", "lion", "tiger", "mouse", "snake"],
    "color": ["red", "green", "blue", "black", "white", "yellow"],
    "place": ["paris", "london", "berlin", "city", "river", "road", "house"],
    "food": ["apple", "banana", "food", "water"],
}
FILLER = (
    "the a and of to in on at with is was big small old new good bad happy sad fast slow run walk "
    "jump eat see make go come say"
).split()
CATEGORY_OF = {word: name for name, words in CATEGORIES.items() for word in words}
SPLIT_OFFSETS = {"train": 0, "validation": 1_000_003, "test": 2_000_003}


def _word_labels(words: list[str], i: int, task: str):
    """Per-word target: its category ('O' for filler); multilabel adds 'after_the'."""
    category = CATEGORY_OF.get(words[i], "O")
    if task == "multiclass":
        return category
    tags = [] if category == "O" else [category]
    if i > 0 and words[i - 1] == "the":
        tags.append("after_the")
    return tags


def _sentence(rng: random.Random, topics: list[str], length: int) -> list[str]:
    words = [rng.choice(FILLER) for _ in range(length)]
    slots = rng.sample(range(length), k=min(length, 2 * len(topics)))
    for slot, topic in zip(slots, topics * 2):
        words[slot] = rng.choice(CATEGORIES[topic])
    return words


def generate(level: str, task: str, split: str, size: int, seed: int = 0) -> list[dict]:
    """``size`` examples of ``level`` for ``task``; the same (seed, split) always gives the same data."""
    rng = random.Random(seed * 7919 + SPLIT_OFFSETS[split])
    names = list(CATEGORIES)
    examples = []
    for _ in range(size):
        length = rng.randint(6, 14)
        if level == "sequence":
            if task == "multiclass":
                topic = rng.choice(names)
                words = _sentence(rng, [topic], length)
                examples.append({"text": " ".join(words), "label": topic})
            else:
                topics = rng.sample(names, k=rng.randint(1, 3))
                words = _sentence(rng, topics, length)
                examples.append({"text": " ".join(words), "label": sorted(topics)})
        elif level == "token":
            words = _sentence(rng, rng.sample(names, k=2), length)
            examples.append({"tokens": words, "tags": [_word_labels(words, i, task) for i in range(length)]})
        else:
            words = _sentence(rng, rng.sample(names, k=2), length)
            positions = sorted(rng.sample(range(length), k=rng.randint(1, 3)))
            examples.append(
                {
                    "tokens": words,
                    "word_positions": positions,
                    "labels": [_word_labels(words, i, task) for i in positions],
                }
            )
    return examples
