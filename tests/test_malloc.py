"""The C heap policy: compact hands freed activation-sized buffers back; auto picks it for CPU fine-tuning."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import FAST, read_metrics, run_train
from hydrahead.utils import malloc

# 64 buffers of 2 MiB, each followed by a small long-lived one, then the big ones are freed.
HOLES = r"""
import sys, torch
from hydrahead.utils import malloc
def rss(): return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
if sys.argv[1] == "compact": assert malloc.compact()
big = torch.ones(2 << 20); del big  # one freed 8 MiB buffer: glibc's dynamic threshold climbs past it
base = rss()
blocks, keep = [], []
for _ in range(64):
    blocks.append(torch.ones(1 << 19))
    keep.append(torch.ones(1024))
held = rss(); del blocks
print(held - base, rss() - base)
"""


def _held_and_left(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", HOLES, mode], capture_output=True, text=True, check=True)
    held, left = out.stdout.split()
    return int(held), int(left)


@pytest.mark.skipif(malloc._libc() is None, reason="needs glibc")
def test_compact_heap_hands_freed_buffers_back():
    held, left = _held_and_left("glibc")
    assert held >= 120 and left >= 100  # glibc's default: 128 MiB freed, still resident as heap holes
    held, left = _held_and_left("compact")
    assert held >= 120 and left < 16


def test_auto_compacts_only_while_a_backbone_trains_on_the_cpu(tmp_path, monkeypatch):
    run_train([*FAST, "export=false"], tmp_path / "tune", monkeypatch)
    run_train([*FAST, "export=false", "backbone.freeze=true"], tmp_path / "frozen", monkeypatch)
    run_train([*FAST, "export=false", "malloc=glibc"], tmp_path / "off", monkeypatch)
    tune, frozen, off = (read_metrics(tmp_path / r)["malloc"] for r in ("tune", "frozen", "off"))
    assert tune == ("compact" if malloc._libc() else "glibc (compact needs glibc's mallopt)")
    assert frozen.startswith("glibc (auto:") and off == "glibc"
