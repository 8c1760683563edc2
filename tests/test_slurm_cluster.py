"""A real single-node SLURM cluster (scripts/local_slurm.sh): a batch job runs, hydrahead sweeps run on it
(chunked tasks, an scancel, four tasks on one empty feature cache), accounting off."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FAST, read_metrics, train_cli
from hydrahead.compare import run_compare

pytestmark = pytest.mark.slurm


def test_batch_job_completes(slurm_cluster, tmp_path):
    out = tmp_path / "job.out"
    job = slurm_cluster.sbatch("-o", str(out), "--wrap", "echo ran on $SLURMD_NODENAME")
    assert slurm_cluster.wait(job) == {job: "COMPLETED"}
    assert out.read_text().startswith("ran on ")


def test_slurm_sweep_completes(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    result = train_cli(
        "-m",
        *slurm_cluster.launcher(),
        *FAST,
        "head=linear,mlp",
        f"hydra.sweep.dir={sweep}",
        f"paths.root_dir={tmp_path}",
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    console = result.stdout + result.stderr
    assert "sacct" not in console and "Bypassing" not in console  # no warning per poll
    assert console.count("SLURM accounting is off") == 1  # said once
    # One array element per job; job dirs are <num>_<array job id>_<task>.
    run_dirs = sorted(path for path in sweep.iterdir() if path.is_dir() and not path.name.startswith("."))
    assert [re.sub(r"_\d+_", "_<id>_", path.name) for path in run_dirs] == ["0_<id>_0", "1_<id>_1"]
    metrics = [read_metrics(path) for path in run_dirs]
    assert [m["status"] for m in metrics] == ["completed", "completed"]
    assert ["head=linear" in m["overrides"] for m in metrics] == [True, False]
    assert "head=mlp" in metrics[1]["overrides"]


# -- the launcher against the real scheduler: chunks, scancel, the feature-cache lock ------------------
def slurm_sweep(cluster, tmp_path, *args: str) -> list[str]:
    """``hydrahead-train -m`` on the local cluster: one CPU and 2 GB a task, results under tmp_path."""
    return [
        sys.executable,
        "-m",
        "hydrahead.cli.train",
        "-m",
        *cluster.launcher(),
        *args,
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"paths.root_dir={tmp_path}",
    ]


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(
        (p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=lambda p: int(p.name.split("_")[0])
    )


def test_2x2_sweep_in_chunked_tasks_completes_and_compare_reads_it(slurm_cluster, tmp_path):
    args = slurm_sweep(
        slurm_cluster, tmp_path, "hydra.launcher.chunk_size=2", *FAST, "head=linear,mlp", "seed=0,1"
    )
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = job_dirs(tmp_path / "sweep")
    # 4 jobs in 2 array tasks of 2: <num>_<array id>_<task>, the task's two jobs in one process
    assert [re.sub(r"_\d+_", "_<id>_", p.name) for p in jobs] == [
        "0_<id>_0",
        "1_<id>_0",
        "2_<id>_1",
        "3_<id>_1",
    ]
    records = [read_metrics(p) for p in jobs]
    assert [r["status"] for r in records] == ["completed"] * 4
    assert records[0]["pid"] == records[1]["pid"] != records[2]["pid"] == records[3]["pid"]
    comp = run_compare([tmp_path / "sweep"], out=tmp_path / "compare", show=False)
    assert sorted((r["keys"]["head"], r["n"], r["failed"], r["running"]) for r in comp.rows) == [
        ("linear", 2, 0, 0),
        ("mlp", 2, 0, 0),
    ]


def test_scancel_of_one_job_is_recorded_as_cancelled_and_the_sweep_names_it(slurm_cluster, tmp_path):
    """Job 0 completes, job 1 (a thousand epochs) is scancel'ed while it trains: its metrics.json says
    cancelled, compare shows it, the sweep exits 1 naming it, within about a minute of the scancel."""
    quick = [a for a in FAST if not a.startswith("trainer.max_epochs")]
    args = slurm_sweep(slurm_cluster, tmp_path, *quick, "trainer.max_epochs=1,1000")
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    victim = None
    try:
        deadline = time.monotonic() + 240
        while victim is None:
            assert proc.poll() is None and time.monotonic() < deadline, "job 1 never started training"
            for run in sweep.glob("1_*") if sweep.is_dir() else []:
                record = read_metrics(run) if (run / "metrics.json").is_file() else {}
                if record.get("status") == "running" and (run / "checkpoints" / "last.ckpt").is_file():
                    victim = run  # training, a checkpoint written: well into its run
            time.sleep(1)
        job_id = victim.name.split("_", 1)[1]  # <num>_<array id>_<task>
        while read_metrics(sweep / next(p.name for p in sweep.glob("0_*")))["status"] != "completed":
            assert time.monotonic() < deadline, "job 0 did not complete"
            time.sleep(1)
        subprocess.run(["scancel", job_id], check=True)
        cancelled_at = time.monotonic()
        out, err = proc.communicate(timeout=180)
        took = time.monotonic() - cancelled_at
    finally:
        if proc.poll() is None:
            proc.kill()
        if victim is not None:
            subprocess.run(["scancel", victim.name.split("_", 1)[1]], capture_output=True)
    assert proc.returncode == 1, out + err
    assert took < 90, f"the launcher took {took:.0f} s to notice the scancel"
    record = read_metrics(victim)
    assert record["status"] == "cancelled", record
    # The job handled SLURM's SIGTERM itself (the launcher records a cancel only for a job that could
    # not: "scancel: SLURM job <id> was cancelled"), and kept a resumable checkpoint of where it was.
    assert record["reason"] == "scancel", record
    assert (victim / "checkpoints" / "last.ckpt").is_file()
    assert read_metrics(next(sweep.glob("0_*")))["status"] == "completed"
    assert f"CANCELLED {victim.name} (" in err and "1 of 2 sweep jobs cancelled" in err, err
    compare = subprocess.run(
        [sys.executable, "-m", "hydrahead.cli.compare", str(sweep), "--out", str(tmp_path / "cmp")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"cancelled: {victim}" in compare.stdout, compare.stdout + compare.stderr


# The encoder pass takes 3 s, so array tasks started together surely overlap it (a tiny pass otherwise
# ends before the others have imported torch); every task loads it through PYTHONPATH (sbatch exports it).
SLOW_PASS = """
import time
import hydrahead.data.features as features
real = features.compute_split
def slow(*args, **kwargs):
    time.sleep(3)
    return real(*args, **kwargs)
features.compute_split = slow
"""


def test_four_array_tasks_on_an_empty_cache_make_one_encoder_pass(slurm_cluster, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_PASS)
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    frozen = [a for a in FAST if "limit_train" not in a]
    args = slurm_sweep(
        slurm_cluster,
        tmp_path,
        "hydra.launcher.array_parallelism=4",
        *frozen,
        "backbone.freeze=true",
        "backbone.init_seed=0",  # one random encoder for every seed: one cache entry
        f"paths.cache_dir={tmp_path / 'cache'}",
        "head=linear,mlp",
        "seed=0,1",
    )
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = job_dirs(tmp_path / "sweep")
    assert len({p.name.split("_")[1] for p in jobs}) == 1 and len(jobs) == 4  # one array, four tasks
    records = [read_metrics(p) for p in jobs]
    assert sorted(r["feature_cache"] for r in records) == ["computed", "hit", "hit", "hit"]
    logs = [(p / "train.log").read_text() for p in jobs]
    assert sum("waited" in log for log in logs) >= 1  # started together: one waited on the lock, then read
    assert len(list((tmp_path / "cache").glob("features/*/depth-*.pt"))) == 1


def test_a_requeued_job_is_waited_for_not_reported_failed(slurm_cluster, tmp_path):
    """``scontrol requeue`` of a training job: the launcher says so, waits for the second attempt
    (which resumes from last.ckpt) and exits 0 with the job completed."""
    quick = [a for a in FAST if not a.startswith("trainer.max_epochs")]
    args = slurm_sweep(slurm_cluster, tmp_path, *quick, "trainer.max_epochs=60", "head=linear")
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        run = None
        while run is None or not (run / "checkpoints" / "last.ckpt").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "the job never started training"
            run = next(sweep.glob("0_*"), None) if sweep.is_dir() else None
            time.sleep(0.5)
        job_id = run.name.split("_", 1)[1]
        subprocess.run(["scontrol", "requeue", job_id], check=True)
        while not any(j["id"] == job_id and j["state"] == "PENDING" for j in slurm_cluster.jobs()):
            assert time.monotonic() < deadline, "the job was not requeued"
            time.sleep(0.5)
        slurm_cluster.release(job_id)  # SLURM holds a requeued job for 120 s
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["scancel", job_id], capture_output=True)
    assert proc.returncode == 0, out + err
    assert f"SLURM requeued job {job_id} ({run.name}): attempt 2" in out + err
    assert "FAILED" not in err
    record = read_metrics(run)
    assert record["status"] == "completed" and record["epochs"] == 60
