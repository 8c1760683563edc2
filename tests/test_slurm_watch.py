"""The SLURM launcher's wait (hydrahead.sweep.slurm_watch) on a scripted fake SLURM: requeued told from
failed, cancelled and lost jobs recorded, sacct asked once, Ctrl-C leaves the jobs running."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from submitit.core import utils as submitit_utils
from submitit.slurm.slurm import SlurmJob

from hydrahead.rundir import load_run, sweep_jobs
from hydrahead.sweep import slurm_watch
from hydrahead.sweep.slurm_watch import EXIT_LEFT_RUNNING, Chunk, JobStates, SlurmJobError, SweepWatch

DISABLED = "Slurm accounting storage is disabled\n"


@pytest.fixture(autouse=True)
def _fresh_accounting_check(monkeypatch):
    monkeypatch.setattr(JobStates, "accounting", None)


class FakeSlurm:
    """squeue/sacct as subprocess.run sees them: ``states`` (job id -> "STATE|reason[|restarts]") is
    the queue."""

    def __init__(self, accounting: bool = False, history: dict[str, str] | None = None):
        self.states: dict[str, str] = {}
        self.accounting = accounting
        self.history = history or {}  # what sacct remembers after squeue forgot
        self.calls: list[list[str]] = []

    def __call__(self, command, **kwargs):
        self.calls.append(list(command))
        if command[0] == "sacct":
            if not self.accounting:
                return subprocess.CompletedProcess(command, 1, "", DISABLED)
            lines = ["JobID|State", *(f"{i}|{s}" for i, s in self.history.items())]
            return subprocess.CompletedProcess(command, 0, "\n".join(lines) + "\n", "")
        if not self.states:
            return subprocess.CompletedProcess(
                command, 1, "", "slurm_load_jobs error: Invalid job id specified\n"
            )
        out = ""
        for job_id, value in self.states.items():
            state, reason, restarts = [*value.split("|"), "0"][:3]
            out += f"{job_id:<40}{state:<24}{restarts:<8}{reason:<200}\n"  # squeue -O's columns
        return subprocess.CompletedProcess(command, 0, out, "")

    def count(self, name: str) -> int:
        return sum(command[0] == name for command in self.calls)


class Clock:
    """time.monotonic and time.sleep for the watch: ``at[t]`` runs once the clock passes t."""

    def __init__(self, at: dict[float, object]):
        self.now = 0.0
        self.at = dict(sorted(at.items()))

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for t in [t for t in self.at if t <= self.now]:
            self.at.pop(t)()
        if self.now > 3600:
            raise AssertionError("the watch is still waiting after an hour")


def job(tmp_path: Path, job_id: str) -> SlurmJob:
    return SlurmJob(folder=tmp_path / ".submitit" / "%j", job_id=job_id, tasks=(0,))


def finish(sj: SlurmJob, returns: object, outcome: str = "success") -> None:
    """What submitit's job process writes at the end: the result file."""
    sj.paths.result_pickle.parent.mkdir(parents=True, exist_ok=True)
    submitit_utils.cloudpickle_dump((outcome, returns), sj.paths.result_pickle)


def record(run_dir: Path, status: str, **fields) -> None:
    """A job's run dir as the job writes it."""
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(f"- seed={run_dir.name[0]}\n")
    body = {"status": status, "host": "elsewhere.example", "pid": 1, **fields}
    (run_dir / "metrics.json").write_text(json.dumps(body))


def completed(seed: int) -> JobReturn:
    return JobReturn(overrides=[f"seed={seed}"], status=JobStatus.COMPLETED, _return_value=0.5)


def watch(chunks, slurm: FakeSlurm, clock: Clock, tmp_path: Path, **kwargs) -> SweepWatch:
    return SweepWatch(
        chunks,
        tmp_path,
        states=JobStates(run=slurm),
        clock=clock,
        sleep=clock.sleep,
        **{"poll_s": 10.0, "lost_after_s": 45.0, **kwargs},
    )


def two_chunks(tmp_path: Path) -> tuple[list[Chunk], list[SlurmJob]]:
    jobs = [job(tmp_path, "7_0"), job(tmp_path, "7_1")]
    chunks = [
        Chunk(job=sj, overrides=[[f"seed={i}"]], run_dirs=[tmp_path / f"{i}_{sj.job_id}"])
        for i, sj in enumerate(jobs)
    ]
    return chunks, jobs


def test_a_requeued_job_is_waited_for_and_completes(tmp_path, caplog):
    chunks, (first, second) = two_chunks(tmp_path)
    slurm = FakeSlurm()
    slurm.states = {"7_0": "RUNNING|None", "7_1": "RUNNING|None"}

    def requeue():  # timeout: the job notes it, SLURM holds it; a stale failed result lies there
        record(chunks[1].run_dirs[0], "requeued", attempt=2)
        finish(second, "Traceback\nValueError: stale", outcome="error")
        slurm.states["7_1"] = "PENDING|BeginTime|1"

    def second_attempt():
        slurm.states["7_1"] = "RUNNING|None|1"
        second.paths.result_pickle.unlink()

    def done():
        record(chunks[1].run_dirs[0], "completed", attempt=2, best=0.5)
        finish(second, [completed(1)])
        slurm.states["7_1"] = "COMPLETED|None|1"

    def first_done():
        record(chunks[0].run_dirs[0], "completed", best=0.5)
        finish(first, [completed(0)])
        slurm.states["7_0"] = "COMPLETED|None"

    clock = Clock({20: first_done, 30: requeue, 400: second_attempt, 500: done})
    caplog.set_level(logging.INFO, logger=slurm_watch.__name__)
    returns = watch(chunks, slurm, clock, tmp_path, report_every_s=300).wait()
    assert [r.status for r in returns] == [JobStatus.COMPLETED] * 2
    assert 500 <= clock.now < 505  # seen within a few seconds of its result
    text = caplog.text
    assert "SLURM requeued job 7_1 (1_7_1): attempt 2, PENDING BeginTime; waiting for it" in text
    assert "waiting for 1 of 2 SLURM jobs (1 requeued):" in text  # the report every 300 s
    assert "requeued: 1_7_1 (SLURM job 7_1, attempt 2, PENDING BeginTime)" in text
    assert "FAILED" not in text and "failed" not in text


def test_a_cancelled_job_is_recorded_within_a_minute_and_the_others_complete(tmp_path):
    chunks, (first, _) = two_chunks(tmp_path)
    slurm = FakeSlurm()
    slurm.states = {"7_0": "RUNNING|None", "7_1": "RUNNING|None"}

    def cancel():  # scancel: SIGTERM, the job records a failure it did not cause
        record(chunks[1].run_dirs[0], "failed", error="RuntimeError: stopped by SIGTERM in epoch 0")
        slurm.states["7_1"] = "CANCELLED|None"

    def first_done():
        record(chunks[0].run_dirs[0], "completed", best=0.5)
        finish(first, [completed(0)])
        slurm.states["7_0"] = "COMPLETED|None"

    clock = Clock({15: cancel, 100: first_done})
    returns = watch(chunks, slurm, clock, tmp_path).wait()
    assert [r.status for r in returns] == [JobStatus.COMPLETED, JobStatus.FAILED]
    assert isinstance(returns[1]._return_value, SlurmJobError)
    assert "1_7_1 (seed=1): cancelled: scancel: SLURM job 7_1 was cancelled" in str(returns[1]._return_value)
    run = load_run(chunks[1].run_dirs[0])
    assert run.status == "cancelled" and run.record["reason"] == "scancel: SLURM job 7_1 was cancelled"
    assert sweep_jobs(tmp_path)["cancelled"] == [
        "1_7_1 (seed=1): cancelled: scancel: SLURM job 7_1 was cancelled"
    ]


def test_a_job_nothing_knows_any_more_is_recorded_as_lost_not_waited_for_forever(tmp_path, caplog):
    """Gone from squeue (past MinJobAge) without a result, accounting off: cancelled, 'lost'."""
    sj = job(tmp_path, "9")
    chunk = Chunk(job=sj, overrides=[["seed=0"], ["seed=1"]], run_dirs=[tmp_path / "0_9", tmp_path / "1_9"])
    slurm = FakeSlurm()
    slurm.states = {"9": "RUNNING|None"}

    def node_lost():
        record(chunk.run_dirs[0], "completed", best=0.25)
        record(chunk.run_dirs[1], "running")
        slurm.states.clear()

    clock = Clock({12: node_lost})
    caplog.set_level(logging.INFO, logger=slurm_watch.__name__)
    returns = watch([chunk], slurm, clock, tmp_path).wait()
    assert clock.now < 12 + 60
    assert [r.status for r in returns] == [JobStatus.COMPLETED, JobStatus.FAILED]
    assert returns[0].return_value == 0.25  # the run dir's record stands in for the missing result
    reason = load_run(chunk.run_dirs[1]).record["reason"]
    assert reason.startswith("lost: SLURM job 9 left the queue without a result")
    assert "accounting is off" in reason
    assert slurm.count("sacct") == 1  # asked once, then never again
    assert caplog.text.count("SLURM accounting is off (Slurm accounting storage is disabled)") == 1


def test_a_job_its_chunk_never_reached_gets_a_run_dir_saying_cancelled(tmp_path):
    sj = job(tmp_path, "9")
    chunk = Chunk(job=sj, overrides=[["seed=0"], ["seed=1"]], run_dirs=[tmp_path / "0_9", tmp_path / "1_9"])
    slurm = FakeSlurm()
    slurm.states = {"9": "RUNNING|None"}

    def cancel():
        record(chunk.run_dirs[0], "running")
        slurm.states["9"] = "CANCELLED|None"

    watch([chunk], slurm, Clock({5: cancel}), tmp_path).wait()
    jobs = sweep_jobs(tmp_path)
    assert [line.split(" ")[0] for line in jobs["cancelled"]] == ["0_9", "1_9"]  # 1_9 never started


def test_a_job_slurm_killed_outside_the_job_is_failed_with_the_state(tmp_path):
    sj = job(tmp_path, "5")
    chunk = Chunk(job=sj, overrides=[["seed=0"]], run_dirs=[tmp_path / "0_5"])
    slurm = FakeSlurm()
    slurm.states = {"5": "RUNNING|None"}

    def oom():
        record(chunk.run_dirs[0], "running")
        slurm.states["5"] = "OUT_OF_MEMORY|None"

    (ret,) = watch([chunk], slurm, Clock({5: oom}), tmp_path).wait()
    run = load_run(chunk.run_dirs[0])
    assert (
        run.status == "failed"
        and run.error == "SLURM job 5 ended OUT_OF_MEMORY without a result (killed outside the job)"
    )
    assert ret.status == JobStatus.FAILED


def test_a_genuine_failure_stays_the_jobs_own(tmp_path):
    sj = job(tmp_path, "5")
    chunk = Chunk(job=sj, overrides=[["seed=0"]], run_dirs=[tmp_path / "0_5"])
    slurm = FakeSlurm()
    slurm.states = {"5": "RUNNING|None"}
    failure = JobReturn(overrides=["seed=0"], status=JobStatus.FAILED, _return_value=ValueError("bad data"))

    def fail():
        record(chunk.run_dirs[0], "failed", error="ValueError: bad data")
        finish(sj, [failure])
        slurm.states["5"] = "COMPLETED|None"

    (ret,) = watch([chunk], slurm, Clock({5: fail}), tmp_path).wait()
    assert isinstance(ret._return_value, ValueError)
    assert load_run(chunk.run_dirs[0]).error == "ValueError: bad data"


def test_sacct_fills_in_what_squeue_forgot_where_accounting_works(tmp_path):
    sj = job(tmp_path, "5")
    chunk = Chunk(job=sj, overrides=[["seed=0"]], run_dirs=[tmp_path / "0_5"])
    slurm = FakeSlurm(accounting=True, history={"5": "CANCELLED by 0"})
    record(chunk.run_dirs[0], "running")
    watch([chunk], slurm, Clock({}), tmp_path).wait()
    assert load_run(chunk.run_dirs[0]).record["reason"] == "scancel: SLURM job 5 was cancelled"


def test_ctrl_c_prints_the_queued_jobs_and_leaves_them_running(tmp_path, capsys):
    chunks, _ = two_chunks(tmp_path)
    slurm = FakeSlurm()
    slurm.states = {"7_0": "PENDING|Priority", "7_1": "RUNNING|None"}

    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        watch(chunks, slurm, Clock({30: interrupt}), tmp_path).wait()
    assert stop.value.code == EXIT_LEFT_RUNNING == 75
    err = capsys.readouterr().err
    assert "stopped waiting (Ctrl-C): 2 of 2 SLURM jobs left to SLURM:" in err
    assert "pending: 0_7_0 (SLURM job 7_0, PENDING Priority)" in err
    assert "running: 1_7_1 (SLURM job 7_1, RUNNING)" in err
    assert f"hydrahead-compare {tmp_path}" in err and "squeue -j 7" in err
    assert not any(command[0] == "scancel" for command in slurm.calls)


def test_fake_squeue_and_sacct_on_path(tmp_path, monkeypatch):
    """The commands JobStates runs, and how it reads them, through real processes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    scripts = {
        "squeue": 'echo "squeue $*" >> {log}\nprintf "12_0  RUNNING  0  None\\n12_1  PENDING  2  BeginTime\\n"',
        "sacct": 'echo "sacct $*" >> {log}\necho "Slurm accounting storage is disabled" >&2\nexit 1',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body.format(log=log) + "\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    states = JobStates()
    found = states.poll(["12_0", "12_1", "12_2"])
    assert {k: (str(v), v.restarts) for k, v in found.items()} == {
        "12_0": ("RUNNING", 0),
        "12_1": ("PENDING BeginTime", 2),
    }
    states.poll(["12_2"])
    calls = log.read_text().splitlines()
    assert calls[0] == "squeue -h -r -t all -j 12 -O JobArrayID:40,State:24,RestartCnt:8,Reason:200"
    assert sum(c.startswith("sacct") for c in calls) == 1 and JobStates.accounting is False
