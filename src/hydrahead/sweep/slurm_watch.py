"""Waiting for a sweep's SLURM jobs: states without accounting, requeued told from failed, no hang.

hydra-submitit-launcher waits with submitit's ``job.results()``, which asks ``sacct`` for the state of
every job without a result file. Where accounting is off, ``sacct`` fails at every poll (submitit
warns each time and reads the state as UNKNOWN, which it takes for "not finished"), so a job that
leaves the queue without a result (``scancel``, a lost node) is waited for forever. :class:`SweepWatch`
waits instead, with one poll for all the SLURM jobs of a launch:

- States come from ``squeue -h -r -t all``: pending (requeued and held included), running, and jobs
  finished within slurmctld's MinJobAge (300 s by default). ``sacct`` is asked only about jobs squeue
  no longer knows, and only where accounting works: :class:`JobStates` runs it once per process and,
  when it fails, says so in one line and never calls it again.
- A job whose state is pending, requeued or running is not finished, whatever its result file or
  ``metrics.json`` say (a requeued attempt writes both again). A requeue is said when first seen.
- A job out of the queue with its result file is done: its chunk's JobReturns.
- A job out of the queue without a result gets ``lost_after_s`` (result files can lag on a shared
  file system; a cancelled job may still be handling its SIGTERM), then each run dir of its chunk that
  had not finished is recorded: ``cancelled`` when SLURM says CANCELLED, or when nothing knows the job
  any more (past MinJobAge, accounting off: "lost"); ``failed`` naming the state otherwise (FAILED,
  OUT_OF_MEMORY, TIMEOUT, NODE_FAIL, ...). Its JobReturns are failures, so the sweep exits non-zero.
- Every ``report_every_s`` one line says how many jobs are still waited for, and names them.
- Ctrl-C stops waiting (so does ``hydra.launcher.wait=false``, right after submitting): the jobs
  still in SLURM are printed and left to run, and the process exits with :data:`EXIT_LEFT_RUNNING`;
  ``hydrahead-compare`` reads their results later.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from hydra.core.utils import JobReturn, JobRuntime, JobStatus
from hydra.errors import CompactHydraException

log = logging.getLogger(__name__)

EXIT_LEFT_RUNNING = 75
"""Exit status of a sweep that stopped waiting with jobs still in SLURM (sysexits' EX_TEMPFAIL)."""

ACTIVE = frozenset(
    {
        "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING",
        "SIGNALING", "STAGE_OUT", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
        "SPECIAL_EXIT",
    }
)  # fmt: skip
"""SLURM states of a job that is not finished: it runs, or may run (again)."""
QUEUED = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT", "RESV_DEL_HOLD"})
UNFINISHED = frozenset({"pending", "running", "requeued"})
"""Run-dir statuses of a job that had not finished when its SLURM job ended."""
# A job's own record of being stopped by a signal (Lightning's SIGTERM, submitit's requeue exit, a
# dead pid): the scheduler's doing, which the scheduler's state then names.
_SIGNALLED = re.compile(r"SIGTERM|SIGKILL|SIGINT|signal|SystemExit: -1|killed", re.IGNORECASE)


class SlurmJobError(CompactHydraException):
    """A sweep job that SLURM ended without its result: cancelled, lost, or killed outside the job."""


@dataclass
class SlurmState:
    state: str
    """SLURM's state name (``PENDING``, ``CANCELLED``; sacct's ``CANCELLED by 0`` is ``CANCELLED``)."""
    reason: str = ""
    """squeue's reason (``BeginTime`` for a requeued job held back, ``Priority``, ...)."""
    restarts: int = 0
    """How often SLURM requeued the job (squeue's RestartCnt; 0 from sacct)."""

    def __str__(self) -> str:
        return f"{self.state} {self.reason}" if self.reason and self.reason != "None" else self.state


class JobStates:
    """SLURM job states by job id (``12``, ``12_3``): squeue, and sacct where accounting works."""

    accounting: ClassVar[bool | None] = None
    """Whether ``sacct`` works, checked once per process (None: not yet)."""

    def __init__(
        self, run: Callable[..., subprocess.CompletedProcess] = subprocess.run, timeout_s: float = 60.0
    ) -> None:
        self._run = run
        self.timeout_s = timeout_s
        self.error: str | None = None
        """Why the last squeue call gave no answer, else None."""

    def _call(self, command: list[str]) -> subprocess.CompletedProcess | None:
        try:
            return self._run(command, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        except (OSError, subprocess.SubprocessError) as err:
            self.error = f"{command[0]}: {err}"
            return None

    def check_accounting(self) -> bool:
        """Whether ``sacct`` answers; the first call per process asks and, if not, says so once."""
        if JobStates.accounting is None:
            done = self._call(["sacct", "-n", "-X", "-P", "-o", "JobID", "-j", "1"])
            JobStates.accounting = done is not None and done.returncode == 0
            if not JobStates.accounting:
                why = _first_line(done.stderr or done.stdout) if done is not None else self.error
                log.info("SLURM accounting is off (%s): job states come from squeue", why or "sacct failed")
        return JobStates.accounting

    def poll(self, job_ids: Iterable[str]) -> dict[str, SlurmState] | None:
        """The state of each job SLURM knows; a job it does not know is absent. None: squeue failed."""
        ids = set(job_ids)
        if not ids:
            return {}
        arrays = sorted({i.split("_")[0] for i in ids}, key=lambda i: (len(i), i))
        # one line per array task, finished ones too: id, state, how often it was requeued, reason last
        # (a reason may hold spaces)
        fields = "JobArrayID:40,State:24,RestartCnt:8,Reason:200"
        done = self._call(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(arrays), "-O", fields])
        if done is None or (done.returncode != 0 and "Invalid job id" not in done.stderr):
            if done is not None:
                self.error = f"squeue exit {done.returncode}: {_first_line(done.stderr)}"
            return None
        self.error = None
        states = {}
        for line in done.stdout.splitlines() if done.returncode == 0 else []:
            job_id, state, restarts, reason = [*line.split(None, 3), "", "", "", ""][:4]
            if job_id in ids:
                count = int(restarts) if restarts.isdigit() else 0
                states[job_id] = SlurmState(state.split(" ")[0], reason.strip(), count)
        missing = ids - states.keys()
        if missing and self.check_accounting():
            states.update(self._sacct(missing))
        return states

    def _sacct(self, job_ids: set[str]) -> dict[str, SlurmState]:
        from submitit.slurm.slurm import SlurmInfoWatcher

        command = ["sacct", "-X", "-P", "-o", "JobID,State"]
        for job_id in sorted(job_ids):
            command += ["-j", job_id]
        done = self._call(command)
        if done is None or done.returncode != 0:
            return {}
        found = SlurmInfoWatcher().read_info(done.stdout)  # sacct's array ranges expanded, as submitit does
        return {
            job_id: SlurmState(info["State"].split(" ")[0])
            for job_id, info in found.items()
            if job_id in job_ids and info.get("State")
        }


def _first_line(text: str | None) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


@dataclass
class Chunk:
    """One submitit job (a SLURM job or array task) and the sweep jobs it runs, in order."""

    job: Any
    """The submitit Job."""
    overrides: list[list[str]]
    run_dirs: list[Path]
    state: SlurmState | None = None
    """The latest state SLURM gave; None: not known (yet, or any more)."""
    requeues: int = 0
    """Requeues SLURM counted (its RestartCnt), as last seen."""
    out_since: float | None = None
    """When it was first seen out of the queue without a result."""
    returns: list[JobReturn] | None = None
    """Set once it is settled: one JobReturn per sweep job."""

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)

    @property
    def names(self) -> str:
        return ", ".join(path.name for path in self.run_dirs)

    def has_result(self) -> bool:
        """Every task's result file is there (submitit writes it at the end of a run, success or error)."""
        folder = Path(self.job.paths.folder)
        with contextlib.suppress(OSError):  # refreshes an NFS client's view of the folder, as submitit does
            folder.chmod(folder.stat().st_mode)
        tasks = [self.job.task(k) for k in range(self.job.num_tasks)]
        return all(task.paths.result_pickle.exists() for task in tasks)

    def attempt(self) -> int:
        """Which attempt SLURM runs now: the run dirs' ``attempt`` (written by the job), else the
        requeues SLURM counted, plus one."""
        from hydrahead.rundir import load_run

        attempts = [load_run(path).record.get("attempt") for path in self.run_dirs if path.is_dir()]
        known = [a for a in attempts if isinstance(a, int) and not isinstance(a, bool)]
        return max([self.requeues + 1, *known])


class SweepWatch:
    """Waits for a launch's SLURM jobs (see the module docstring) and returns their JobReturns."""

    def __init__(
        self,
        chunks: Sequence[Chunk],
        sweep_dir: str | Path,
        *,
        states: JobStates | None = None,
        poll_s: float = 15.0,
        lost_after_s: float = 45.0,
        report_every_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.chunks = list(chunks)
        self.sweep_dir = Path(sweep_dir)
        self.states = states or JobStates()
        self.poll_s = poll_s
        self.lost_after_s = lost_after_s
        self.report_every_s = report_every_s
        self.clock = clock
        self.sleep = sleep
        self._last_poll = -math.inf
        self._failing_since: float | None = None
        self._last_report = clock()

    @property
    def unsettled(self) -> list[Chunk]:
        return [chunk for chunk in self.chunks if chunk.returns is None]

    def wait(self) -> list[JobReturn]:
        """Every sweep job's JobReturn, in order, once every chunk is settled. Ctrl-C: see leave_running."""
        try:
            self.states.check_accounting()
            while self.unsettled:
                self.step()
                if self.unsettled:
                    self.sleep(1.0)
        except KeyboardInterrupt:
            self.leave_running("stopped waiting (Ctrl-C)")
        return [ret for chunk in self.chunks for ret in chunk.returns or []]

    def step(self) -> None:
        """One look: result files every call, SLURM states every ``poll_s`` (2 s while a result file is
        there but the last state said the job still runs), settling what can be settled."""
        now = self.clock()
        waiting = self.unsettled
        # a queued job's result file is a past attempt's, if any: not looked at (a big sweep mostly queues)
        ready = [not (c.state is not None and c.state.state in QUEUED) and c.has_result() for c in waiting]
        soon = any(r and (c.state is None or c.state.state in ACTIVE) for c, r in zip(waiting, ready))
        if now - self._last_poll >= (2.0 if soon else self.poll_s):
            self._poll(waiting, now)
        if self._last_poll == -math.inf:
            return  # no state from SLURM yet
        # squeue failing for long: a result file is then enough (a job without one is waited for)
        blind = self._failing_since is not None and now - self._failing_since >= self.lost_after_s
        for chunk, has_result in zip(waiting, ready):
            if chunk.state is not None and chunk.state.state in ACTIVE and not (blind and has_result):
                chunk.out_since = None
                continue
            if has_result:
                self._settle(chunk, has_result=True)
                continue
            chunk.out_since = now if chunk.out_since is None else chunk.out_since
            if now - chunk.out_since >= self.lost_after_s:
                self._settle(chunk, has_result=False)
        if self.unsettled and now - self._last_report >= self.report_every_s:
            self._last_report = now
            self._report()

    def _poll(self, waiting: list[Chunk], now: float) -> None:
        states = self.states.poll(chunk.job_id for chunk in waiting)
        if states is None:  # no answer: keep the last states
            if self._failing_since is None:
                self._failing_since = now
            if self._last_poll == -math.inf:
                self._last_poll = now  # nothing known: every job waits its grace from here
            log.debug("no job states: %s", self.states.error)
            return
        self._failing_since = None
        self._last_poll = now
        for chunk in waiting:
            state = states.get(chunk.job_id)
            if state is not None and state.restarts > chunk.requeues:
                chunk.requeues = state.restarts
                log.info(
                    "SLURM requeued job %s (%s): attempt %d, %s; waiting for it",
                    chunk.job_id,
                    chunk.names,
                    chunk.attempt(),
                    state,
                )
            chunk.state = state

    def _report(self) -> None:
        waiting = self.unsettled
        counts: dict[str, int] = {}
        for chunk in waiting:
            kind = _kind(chunk)
            counts[kind] = counts.get(kind, 0) + 1
        summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        log.info("waiting for %d of %d SLURM jobs (%s):", len(waiting), len(self.chunks), summary)
        for chunk in waiting[:10]:
            log.info("  %s", _describe(chunk))
        if len(waiting) > 10:
            log.info("  ... and %d more (squeue -j %s)", len(waiting) - 10, _array_ids(waiting))

    def leave_running(self, why: str) -> NoReturn:
        """Print the jobs still in SLURM and exit with :data:`EXIT_LEFT_RUNNING`; they run on."""
        waiting = self.unsettled
        if self._last_poll == -math.inf:  # right after submitting: say what SLURM made of them
            self._poll(waiting, self.clock())
        done = len(self.chunks) - len(waiting)
        lines = [f"hydrahead-train: {why}: {len(waiting)} of {len(self.chunks)} SLURM jobs left to SLURM"]
        lines[0] += f" ({done} finished):" if done else ":"
        lines += [f"  {_describe(chunk)}" for chunk in waiting[:20]]
        if len(waiting) > 20:
            lines.append(f"  ... and {len(waiting) - 20} more")
        lines.append(f"  follow them: squeue -j {_array_ids(waiting)}")
        lines.append(f"  read the results when they are done: hydrahead-compare {self.sweep_dir}")
        print("\n".join(lines), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_LEFT_RUNNING)

    # ------------------------------------------------------------------------------ settling

    def _settle(self, chunk: Chunk, has_result: bool) -> None:
        results, error = None, None
        if has_result:
            try:
                results = chunk.job.results()[0]  # the result file is there: no sacct, no wait
            except Exception as err:  # the chunk raised outside its jobs (or its result is unreadable)
                error = _last_error_line(str(err)) or _first_line(str(err)) or type(err).__name__
        ended = self._how_it_ended(chunk, results, error)
        chunk.returns = [self._outcome(chunk, i, results, ended) for i in range(len(chunk.overrides))]

    def _how_it_ended(self, chunk: Chunk, results: Any, error: str | None) -> tuple[str, str] | None:
        """(status, why) for the chunk's run dirs that had not finished; None: its results say it all."""
        state = chunk.state.state if chunk.state is not None else None
        where = f"SLURM job {chunk.job_id}"
        if state == "CANCELLED":
            return "cancelled", f"scancel: {where} was cancelled"
        if results is not None:
            return None
        if error is not None:
            return "failed", f"{where} ended{f' {state}' if state else ''}: {error}"
        if state is None:
            how = "accounting is off and squeue" if not JobStates.accounting else "squeue and sacct"
            return "cancelled", f"lost: {where} left the queue without a result and {how} no longer know it"
        return "failed", f"{where} ended {state} without a result (killed outside the job)"

    def _outcome(self, chunk: Chunk, i: int, results: Any, ended: tuple[str, str] | None) -> JobReturn:
        from hydrahead.rundir import load_run, mark_cancelled, mark_failed

        from .launchers import _task_overrides

        run_dir, task = chunk.run_dirs[i], _task_overrides(chunk.overrides[i])
        ret = results[i] if isinstance(results, list) and i < len(results) else None
        run = load_run(run_dir)
        name = f"{run_dir.name} ({' '.join(task)})"
        if run.status == "completed":
            if ret is not None and ret.status == JobStatus.COMPLETED:
                return ret
            return _job_return(task, JobStatus.COMPLETED, run.record.get("best"))
        if run.status == "cancelled":
            return _failed(task, f"{name}: cancelled: {run.record.get('reason') or run.error}")
        interrupted = (
            run.status in UNFINISHED
            or run.killed
            or (run.status == "failed" and bool(_SIGNALLED.search(run.error or "")))
        )
        if ended is None or not interrupted:  # the job's own outcome
            if ret is not None:
                return ret
            return _failed(task, f"{name}: {run.status}: {run.error or 'no result'}")
        status, why = ended
        _ensure_overrides(run_dir, task)
        (mark_cancelled if status == "cancelled" else mark_failed)(run_dir, why)
        log.warning("%s: %s: %s (recorded in its metrics.json)", run_dir.name, status, why)
        return _failed(task, f"{name}: {status}: {why}")


def _kind(chunk: Chunk) -> str:
    state = chunk.state.state if chunk.state is not None else None
    if state in QUEUED:
        return "requeued" if chunk.requeues or chunk.attempt() > 1 else "pending"
    if state in ACTIVE:
        return "running"
    return "leaving the queue" if state else "unknown to SLURM"


def _describe(chunk: Chunk) -> str:
    kind = _kind(chunk)
    attempt = f"attempt {chunk.attempt()}, " if kind == "requeued" or chunk.requeues else ""
    return f"{kind}: {chunk.names} (SLURM job {chunk.job_id}, {attempt}{chunk.state or 'no state'})"


def _array_ids(chunks: Iterable[Chunk]) -> str:
    return ",".join(sorted({chunk.job_id.split("_")[0] for chunk in chunks}, key=lambda i: (len(i), i)))


def _last_error_line(text: str) -> str:
    """The last line of a traceback that names an exception (``ValueError: ...``), else ''."""
    lines = [line.strip() for line in text.splitlines() if re.match(r"^\s*[\w.]+(Error|Exception)\b", line)]
    return lines[-1] if lines else ""


def _ensure_overrides(run_dir: Path, task: list[str]) -> None:
    """A job its chunk never reached gets a run dir with its overrides, so the sweep report and compare
    list it."""
    from omegaconf import OmegaConf

    from hydrahead.rundir import HYDRA_DIR
    from hydrahead.utils.atomic import atomic_path

    target = run_dir / HYDRA_DIR / "overrides.yaml"
    if not target.is_file():
        with atomic_path(target) as tmp:
            OmegaConf.save(OmegaConf.create(list(task)), tmp)


def _job_return(task: list[str], status: JobStatus, value: Any) -> JobReturn:
    try:
        name = JobRuntime.instance().get("name")
    except KeyError:  # outside Hydra's run
        name = None
    return JobReturn(
        overrides=task, status=status, _return_value=value, task_name=name, working_dir=os.getcwd()
    )


def _failed(task: list[str], message: str) -> JobReturn:
    return _job_return(task, JobStatus.FAILED, SlurmJobError(message))
