"""Atomic file writes: a reader (or a crash) never sees half a file.

Files and folders are created with the mode a plain ``open(path, "w")`` / ``mkdir`` gives (0o666 /
0o777 less the umask), not ``tempfile``'s private 0o600 / 0o700: a sweep on a shared cluster must
be readable by the colleagues the umask lets in. The kernel applies the umask (and a folder's
default ACL) at creation, so nothing reads or flips the process-wide umask.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_ATTEMPTS = 100


def create_unique(parent: str | Path, prefix: str, suffix: str = "") -> Path:
    """A new empty file ``parent/<prefix><random><suffix>``, created exclusively, umask-respecting.

    ``tempfile.mkstemp`` without its hard-coded 0o600.
    """
    for _ in range(_ATTEMPTS):
        path = Path(parent) / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{parent}: no free temporary name {prefix}*{suffix} after {_ATTEMPTS} tries")


def make_unique_dir(parent: str | Path, prefix: str) -> Path:
    """A new empty folder ``parent/<prefix><random>``, umask-respecting (``tempfile.mkdtemp`` gives 0o700)."""
    for _ in range(_ATTEMPTS):
        path = Path(parent) / f"{prefix}{secrets.token_hex(6)}"
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{parent}: no free temporary folder name {prefix}* after {_ATTEMPTS} tries")


@contextmanager
def atomic_path(path: str | Path, sync: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path``: write to it; it replaces ``path`` when the block succeeds
    (``sync`` flushes it to disk first) and is removed when the block fails or is interrupted.

    The file ends up with the mode ``open(path, "w")`` would give it (0o666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_unique(path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        yield tmp
        if sync:
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
