"""Time limits on a real SLURM cluster (scripts/local_slurm.sh): the job side.

A job that needs about 3 minutes of training runs under a one-minute limit: SLURM signals it (SIGUSR2,
``signal_delay_s`` before the limit, or earlier), it stops after the optimizer step in flight with a
mid-epoch checkpoint, submitit requeues it, and the next attempt goes on in the same run dir, until it
ends ``completed`` with the metrics of the same run uninterrupted. Each optimizer step of the SLURM job
also sleeps 50 ms (a hook every process of the job loads through PYTHONPATH), so its length, and the
number of requeues, hardly depend on the machine's speed: 2560 steps, 128 s of sleep. Each requeued
attempt is released at once (SLURM would hold it 120 s). The launching ``hydrahead-train -m`` runs in
the background; what is checked is what the run dir, W&B's offline logs and SLURM say.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import read_metrics

pytestmark = pytest.mark.slurm

# 2560 optimizer steps (40 epochs of 64 batches); with SLOW_STEPS about 3 minutes of training.
JOB = [
    "backbone=tiny_bert",
    "data=synthetic_sequences",
    "data.num_train=1024",
    "data.num_validation=64",
    "data.num_test=64",
    "data.batch_size=16",
    "trainer.max_epochs=40",
    "callbacks.rich_progress_bar=false",
    "export=false",
]


SLOW_STEPS = """
import time
import hydrahead.training.module as module
real = module.HeadModule.training_step
def training_step(self, batch, batch_idx):
    time.sleep(0.05)
    return real(self, batch, batch_idx)
module.HeadModule.training_step = training_step
"""


def _train(*args: str, cwd: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hydrahead.cli.train", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
        )


def _slurm_sweep(
    cluster, tmp_path: Path, *args: str, name: str = "sweep", env: dict | None = None
) -> tuple[subprocess.Popen, Path]:
    sweep = tmp_path / name
    proc = _train(
        "-m",
        *cluster.launcher(),
        "hydra.launcher.poll_s=2",
        *args,
        f"hydra.sweep.dir={sweep}",
        f"paths.root_dir={tmp_path}",
        cwd=tmp_path,
        log=tmp_path / f"{name}.log",
        env=env,
    )
    return proc, sweep


def _job_ids(sweep: Path, count: int, timeout: float = 120) -> list[str]:
    """The SLURM ids of the sweep's jobs (``<array>_<task>`` for an array's), from submitit's folders."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(p.name for p in (sweep / ".submitit").glob("*") if p.is_dir())
        if len(found) >= count:
            return found
        time.sleep(0.5)
    raise TimeoutError(f"no submitit job folders under {sweep}")


def _record(run_dir: Path | None) -> dict:
    try:
        return json.loads((run_dir / "metrics.json").read_text()) if run_dir else {}
    except (OSError, ValueError):
        return {}


def _scontrol(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(part.split("=", 1) for part in out.split() if "=" in part)


def _stop(proc: subprocess.Popen) -> int | None:
    try:
        return proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=30)
        return None


def test_a_timed_out_job_requeues_until_it_completes_as_if_uninterrupted(slurm_cluster, tmp_path):
    from wandb_records import read_run

    start = time.monotonic()
    reference = _train(
        *JOB, "logger=none", f"hydra.run.dir={tmp_path}/reference", f"paths.root_dir={tmp_path}",
        cwd=tmp_path, log=tmp_path / "reference.log",
    )  # fmt: skip
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_STEPS)
    slow = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
    }
    proc, sweep = _slurm_sweep(
        slurm_cluster,
        tmp_path,
        *JOB,
        "logger=wandb",
        "hydra.launcher.timeout_min=1",
        # slurmctld looks at time limits every 30 s and signals at the first look within 30 s of
        # limit - delay: USR2 25-55 s in, the kill (at the first look past 60 s) 30 s or more after it.
        "hydra.launcher.signal_delay_s=5",
        "hydra.launcher.max_num_timeout=30",  # a slow machine needs more attempts
        env=slow,
    )
    try:
        (job_id,) = _job_ids(sweep, 1)
        run_dir, seen, released = None, [], set()
        deadline = time.monotonic() + 720
        while time.monotonic() < deadline:
            run_dir = run_dir or next((p for p in sweep.glob("0_*") if p.is_dir()), None)
            record = _record(run_dir)
            if record and (not seen or seen[-1] != (record.get("status"), record.get("attempt"))):
                seen.append((record.get("status"), record.get("attempt")))
            state = {j["id"]: j for j in slurm_cluster.jobs()}.get(job_id, {})
            if state.get("state") == "PENDING" and record.get("status") == "requeued":
                attempt = record.get("attempt")
                if attempt not in released:  # held 120 s (BeginTime): start it now
                    slurm_cluster.release(job_id)
                    released.add(attempt)
            if record.get("status") == "completed" and state.get("state") in (None, *slurm_cluster.done):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"not completed after 720 s: {seen}\n{(tmp_path / 'sweep.log').read_text()[-3000:]}")
        assert reference.wait(timeout=300) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    finally:
        launcher_exit = _stop(proc)
        if reference.poll() is None:
            reference.kill()
    record = read_metrics(run_dir)
    requeues = record["requeued"]
    assert record["status"] == "completed"
    assert len(requeues) >= 2, seen
    assert [entry["attempt"] for entry in requeues] == list(range(1, len(requeues) + 1))
    assert {entry["reason"] for entry in requeues} == {"timeout"}
    assert record["attempt"] == len(requeues) + 1
    assert int(_scontrol(job_id).get("Restarts", -1)) == len(requeues)
    # While it waited in the queue the record said so, never failed.
    assert ("requeued", 1) in seen and not any(status == "failed" for status, _ in seen), seen
    full = read_metrics(tmp_path / "reference")
    assert record["metrics"] == full["metrics"]
    assert record["global_step"] == full["global_step"] == 2560
    redone = record["steps_executed"] - record["global_step"]
    assert 0 <= redone <= len(requeues), (record["steps_executed"], requeues)
    # One W&B run: every attempt's offline log is of the id the run dir keeps.
    logs = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == record["attempt"]
    runs = [read_run(path) for path in logs]
    assert {run["id"] for run in runs} == {record["wandb_id"]}
    assert runs[-1]["summary"]["test/acc"] == pytest.approx(record["metrics"]["test/acc"])
    job_log = "".join(p.read_text() for p in (sweep / ".submitit" / job_id).glob("*.out"))
    assert "Traceback" not in job_log and "ConnectionResetError" not in job_log
    print(
        f"\n{len(requeues)} requeues at steps {[e['global_step'] for e in requeues]}, "
        f"{record['steps_executed']} steps executed for {record['global_step']}, "
        f"{time.monotonic() - start:.0f} s in all; the launcher exited {launcher_exit}"
    )
