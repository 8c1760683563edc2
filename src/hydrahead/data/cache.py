"""Tokenized splits cached on disk, keyed by what determines them.

The key covers the data files' content, the tokenizer (its full serialized definition), the label
vocabulary, max_length and every option that changes the features, so a sweep tokenizes once and
every job after that reads the cache; a changed file or max_length misses and re-tokenizes.
Writes go to a temporary file that is renamed into place: parallel jobs never see half a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from hydrahead.utils.atomic import atomic_path

log = logging.getLogger(__name__)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """A digest of everything that decides how the tokenizer splits text.

    Truncation and padding state is left out: a fast tokenizer records the last call's settings
    in its serialized form, which would give one tokenizer a new fingerprint after its first use.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        spec = json.dumps(spec, sort_keys=True)
    else:
        spec = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    extra = json.dumps(
        [
            type(tokenizer).__name__,
            getattr(tokenizer, "add_prefix_space", None),
            tokenizer.padding_side,
            tokenizer.truncation_side,
        ],
        sort_keys=True,
    )
    return hashlib.sha256((spec + extra).encode()).hexdigest()


def digest(parts: dict) -> str:
    """The cache key of ``parts`` (any JSON-able description): every cache of hydrahead keys by this."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def load(cache_dir: str | Path, key: str):
    import torch

    path = Path(cache_dir) / f"{key}.pt"
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception as err:  # a damaged entry is only a miss: rebuild it
        log.warning("ignoring unreadable tokenization cache %s (%s)", path, err)
        return None


def store(cache_dir: str | Path, key: str, payload) -> Path:
    import torch

    target = Path(cache_dir) / f"{key}.pt"
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    return target


def store_json(path: str | Path, payload) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload))
