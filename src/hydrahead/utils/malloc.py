"""The C heap (glibc) between and during jobs: what hydrahead asks of it, and nothing elsewhere.

glibc serves allocations below a *dynamic* mmap threshold from its heap; after the first large buffer
is freed that threshold climbs to 32 MiB, so every activation of a training step (a few MiB each,
a new shape every batch) lands in the heap. Freed, those buffers stay resident as fragments, and a
CPU fine-tuning run's RSS ends up about twice its live memory. ``compact`` fixes the threshold at
1 MiB: such buffers are mapped per use and go back to the OS when freed. ``trim`` returns a finished
job's free heap pages, so a multirun's next job does not start from the last one's peak.
On a C library without these calls (macOS, musl) both do nothing and say so.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
COMPACT_THRESHOLD = 1 << 20


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both or neither (musl has neither)
    except (OSError, AttributeError):
        return None
    return libc


def compact(threshold: int = COMPACT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for the rest of the process; False if unsupported."""
    libc = _libc()
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1)


def trim() -> bool:
    """Hand the heap's free pages back to the OS; False if unsupported."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def policy(setting: str, trains_backbone: bool, on_cpu: bool) -> str:
    """Apply ``malloc`` (auto / compact / glibc) for a job; returns what it ran with (metrics.json)."""
    if setting == "glibc":
        return "glibc"
    if setting == "auto" and not (trains_backbone and on_cpu):
        return "glibc (auto: compact only while a trainable backbone trains on the CPU)"
    return "compact" if compact() else "glibc (compact needs glibc's mallopt)"
