"""Read an offline W&B run (``run-*.wandb``) back as W&B's own protobuf records.

Offline W&B writes no ``wandb-summary.json``, only this log: a 7-byte header (``:W&B``, magic
0xBEE1, version) and then LevelDB-log framed chunks (crc32c, length, type) in 32 KiB blocks,
each record a ``wandb_internal_pb2.Record``. Used to check runs without syncing them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

_BLOCK = 32 * 1024
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_records(path: str | Path) -> Iterator:
    """Yield every ``Record`` in an offline run file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B" or struct.unpack("<H", data[4:6])[0] != 0xBEE1:
        raise ValueError(f"{path}: not a W&B run log (bad header)")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _HEADER:  # block trailer: zero padding
            pos += room
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        if kind in (_FULL, _FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def read_run(path: str | Path) -> dict:
    """The run's id, group, name, config and final summary from an offline ``run-*.wandb`` file."""
    run: dict = {"config": {}, "summary": {}}
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(id=record.run.run_id, group=record.run.run_group, name=record.run.display_name)
            run["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            run["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            run["summary"].update({i.key: json.loads(i.value_json) for i in record.summary.update})
    return run
