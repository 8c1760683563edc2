"""Morphology: tokenizing usage examples and finding a synset's (possibly inflected) word in them."""

from __future__ import annotations

import re
from collections.abc import Iterable

# WordNet's morphy detachment rules, per part of speech (suffix, replacement).
RULES = {
    "n": (
        ("s", ""),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ),
    "v": (
        ("s", ""),
        ("ies", "y"),
        ("es", "e"),
        ("es", ""),
        ("ed", "e"),
        ("ed", ""),
        ("ing", "e"),
        ("ing", ""),
    ),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}
TOKEN = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text)


def base_forms(token: str, pos: str, exceptions: dict[str, list[str]]) -> set[str]:
    """The lowercased token and what morphy could make of it: exception-list bases and detachments."""
    word = token.lower()
    forms = {word}
    stems = [word]
    for suffix in ("'s", "'"):  # a possessive is one token for our tokenizer: "kangaroo's"
        if word.endswith(suffix) and len(word) > len(suffix):
            stems.append(word[: -len(suffix)])
            forms.add(stems[-1])
    for stem in stems:
        forms.update(exceptions.get(stem, ()))
        for suffix, replacement in RULES.get(pos, ()):
            if stem.endswith(suffix) and stem[: -len(suffix)] + replacement:
                forms.add(stem[: -len(suffix)] + replacement)
    return forms


def find_words(
    tokens: list[str],
    lemmas: Iterable[str],
    pos: str,
    exceptions: dict[str, list[str]],
    max_gap: int = 3,
    cache: dict | None = None,
) -> list[tuple[int, int]]:
    """Non-overlapping (start, length) occurrences of any lemma in ``tokens``.

    Case-insensitive, and every word of a lemma may be inflected (``took a breath`` for
    ``take_a_breath``). Three tiers, the first that finds anything wins:

    1. the lemma's words as consecutive tokens (longer lemmas first at overlaps, then leftmost);
    2. inside a hyphenated token: ``steam-clean`` for ``steam_clean``, ``two-edged`` for ``edged``
       (the whole token is the occurrence, length 1);
    3. verbs only, a multi-word lemma split by up to ``max_gap`` tokens between its words
       (``put the dishes back`` for ``put_back``): the occurrence is the first word alone (length 1).

    ``cache`` (a dict kept across calls with the same ``pos`` and ``exceptions``) memoizes base forms.
    """
    wanted = {tuple(t.lower() for t in tokenize(lemma.replace("_", " "))) for lemma in lemmas}
    wanted = sorted((w for w in wanted if w), key=lambda words: (-len(words), words))
    if not wanted or not tokens:
        return []

    def forms_of(token: str) -> set[str]:
        if cache is None:
            return base_forms(token, pos, exceptions)
        if token not in cache:
            cache[token] = base_forms(token, pos, exceptions)
        return cache[token]

    forms = [forms_of(token) for token in tokens]
    found = []
    for words in wanted:
        n = len(words)
        for start in range(len(tokens) - n + 1):
            if all(words[j] in forms[start + j] for j in range(n)):
                found.append((start, n))
    if not found:
        for start, token in enumerate(tokens):
            if "-" not in token:
                continue
            parts = [forms_of(part) for part in token.split("-") if part]
            for words in wanted:
                whole = len(words) == len(parts) and all(w in p for w, p in zip(words, parts))
                if whole or (len(words) == 1 and any(words[0] in p for p in parts)):
                    found.append((start, 1))
                    break
    if not found and pos == "v":
        for words in wanted:
            if len(words) > 1:
                found += [(start, 1) for start in _gapped(words, forms, max_gap)]
    found.sort(key=lambda m: (-m[1], m[0]))
    taken = [False] * len(tokens)
    chosen = []
    for start, n in found:
        if not any(taken[start : start + n]):
            chosen.append((start, n))
            for j in range(start, start + n):
                taken[j] = True
    return sorted(chosen)


def _gapped(words: tuple[str, ...], forms: list[set[str]], max_gap: int) -> list[int]:
    """Starts of ``words`` in order with at most ``max_gap`` other tokens between consecutive words."""
    starts = []
    for start in range(len(forms)):
        if words[0] not in forms[start]:
            continue
        at = start
        for word in words[1:]:
            at = next((j for j in range(at + 1, min(len(forms), at + 2 + max_gap)) if word in forms[j]), None)
            if at is None:
                break
        if at is not None:
            starts.append(start)
    return starts
