"""Concurrent jobs on one cache dir: a missing feature entry is computed by one of them, once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from conftest import FAST, read_metrics

FROZEN = [a for a in FAST if "limit_train" not in a] + ["backbone.freeze=true"]

# Loaded by every child through PYTHONPATH: the encoder pass takes 3 s, so the jobs started
# together surely overlap it (a tiny pass otherwise ends before the others have imported torch).
SLOW_PASS = textwrap.dedent(
    """
    import time
    import hydrahead.data.features as features
    real = features.compute_split
    def slow(*args, **kwargs):
        time.sleep(3)
        return real(*args, **kwargs)
    features.compute_split = slow
    """
)


def test_concurrent_jobs_on_an_empty_cache_make_one_pass(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_PASS)
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hydrahead.cli.train",
                *FROZEN,
                "head=mlp",
                "head.hidden_layers=[8]",
                f"paths.cache_dir={cache}",
                f"hydra.run.dir={tmp_path}/run{i}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(4)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, logs
    records = [read_metrics(tmp_path / f"run{i}") for i in range(4)]
    assert sorted(r["feature_cache"] for r in records) == ["computed", "hit", "hit", "hit"]
    assert sum("waited" in log for log in logs) >= 1  # at least one job waited on the lock, then read
    assert all(r["metrics"] == records[0]["metrics"] for r in records)
    assert len(list(cache.glob("features/*/depth-*.pt"))) == 1
    assert not list(cache.glob("features/*/*.lock")) and not list(cache.glob("features/*/.*"))
