"""Writing a dataset's split files and ``stats.json`` atomically; cleaning up after killed runs."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from hydrahead.data import SPLITS
from hydrahead.utils.atomic import make_unique_dir

from .build import DATASETS, Dataset, dataset_stats

FILES = (*(f"{split}.jsonl" for split in SPLITS), "stats.json")


def is_complete(directory: Path) -> bool:
    return all((Path(directory) / name).is_file() for name in FILES)


def write_dataset(dataset: Dataset, data_dir: Path, source: str, force: bool = True) -> dict:
    """Write ``<data_dir>/<name>/`` atomically: into a temporary sibling, then renamed into place.

    An existing complete dataset is replaced only with ``force``; a killed run leaves at most a
    ``.<name>.tmp-*`` directory behind (removed by the next run), never half a dataset.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / dataset.name
    stats = dataset_stats(dataset, source)
    tmp = make_unique_dir(data_dir, prefix=f".{dataset.name}.tmp-")  # mkdtemp's 0o700 would stay private
    try:
        for split in SPLITS:
            with open(tmp / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as handle:
                handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in dataset.splits[split])
        stats_text = json.dumps(stats, indent=2, ensure_ascii=False) + "\n"
        (tmp / "stats.json").write_text(stats_text, encoding="utf-8")
        if target.exists():
            if not force and is_complete(target):
                return stats  # somebody else finished it meanwhile
            old = Path(tempfile.mkdtemp(prefix=f".{dataset.name}.old-", dir=data_dir))
            os.replace(target, old / dataset.name)
            try:
                os.replace(tmp, target)
            except OSError:
                os.replace(old / dataset.name, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return stats


def clean_leftovers(data_dir: Path, older_than_s: float = 3600.0) -> None:
    """Remove temporary directories a killed run left behind (not a concurrent run's fresh ones)."""
    import time

    now = time.time()
    for name in DATASETS:
        for pattern in (f".{name}.tmp-*", f".{name}.old-*"):
            for leftover in Path(data_dir).glob(pattern):
                try:
                    if now - leftover.stat().st_mtime > older_than_s:
                        shutil.rmtree(leftover, ignore_errors=True)
                except OSError:
                    pass
