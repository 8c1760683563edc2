"""Time limits, preemption and ``scancel`` under submitit/SLURM: hydrahead owns the job's signals.

SLURM sends a submitit job SIGUSR2 ``hydra.launcher.signal_delay_s`` before its time limit (and at a
preemption where ``PreemptParameters=send_user_signal``), and SIGTERM on ``scancel``, on a preemption
without that parameter, and at the limit itself. Left to themselves, submitit requeues from inside
its signal handler (``sys.exit`` wherever the main thread was, mid-step, before any checkpoint) and
Lightning notes SIGTERM and stops. So :func:`install`, at the start of every job that runs under
submitit, replaces both handlers with one that only notes the signal, and Lightning registers none
(:func:`quiet_lightning`). Then:

- the training loops (``callbacks.StopOnSignal`` in Lightning, the head trainer's step loop) look
  at :func:`requested` after every optimizer step: they save a resumable mid-epoch ``last.ckpt``
  (loop progress, optimizer, scheduler, RNG, the sampler's position) and raise :class:`Interrupted`;
  a signal during an epoch's last step or its validation waits for that epoch's own ``last.ckpt``;
- elsewhere in a job (data, features, evaluation, export) the handler raises :class:`Interrupted`
  at once: nothing is in flight that a checkpoint could keep;
- ``pipeline.run`` records the :func:`outcome` (``requeued`` with the attempt and reason,
  ``cancelled``, or ``failed``), closes the W&B run, then :func:`hand_over`: submitit's own handler,
  kept from its installation, decides timeout against preemption, counts ``max_num_timeout``,
  writes the requeued submission (hydra-submitit-launcher's ``checkpoint``: the same job, the same
  job dir), runs ``scontrol requeue`` and exits without a result pickle, so the launching process
  keeps waiting. A SIGTERM that SLURM does not follow with a requeue (``scancel``) ends the job
  ``cancelled``.

Outside submitit nothing is installed: a plain run keeps Lightning's SIGTERM handling.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger("hydrahead.run")


class Interrupted(BaseException):
    """A signalled job stops here, where nothing in flight is lost. A BaseException, as
    KeyboardInterrupt is: a library's ``except Exception`` must not swallow it."""

    def __init__(self, signum: int, where: str = ""):
        super().__init__(f"{signal.Signals(signum).name} {where}".strip())
        self.signum = signum


@dataclass
class Outcome:
    """What a signalled job records and how it ends (see :func:`outcome`)."""

    status: str
    """``requeued``, ``cancelled`` or ``failed``."""
    reason: str
    """``timeout`` or ``preemption`` (requeued), ``scancel`` (cancelled), or why it is not requeued."""
    signum: int
    requeue: str = ""
    """``submitit``: submitit's handler requeues; ``slurm``: SLURM requeues a preempted job itself."""


@dataclass
class Progress:
    """Optimizer steps this process executed for the current job (``steps``) and where training is
    (``global_step``): what metrics.json's ``steps_executed`` and ``requeued`` entries say."""

    steps: int = 0
    global_step: int | None = None

    def at(self, global_step: int) -> None:
        """Training is at ``global_step`` (a start or a resume): nothing executed."""
        self.global_step = int(global_step)

    def step(self, global_step: int) -> None:
        """One optimizer step executed, ending at ``global_step``."""
        self.steps += 1
        self.global_step = int(global_step)


class _Owner:
    def __init__(self) -> None:
        self.pid: int | None = None
        self.submitit = None
        """submitit's SignalHandler (what its SIGUSR2 handler was bound to): it requeues."""
        self.usr_sig = signal.SIGUSR2
        self.previous: dict[int, object] = {}
        self.received: list[int] = []
        self.active = False
        """Inside a job (``pipeline.run``): a signal outside a deferred section stops it at once."""
        self.deferring = 0
        self.finishing = False
        self.handing_over = False
        self.progress = Progress()

    def note(self, signum: int, frame) -> None:
        if os.getpid() != self.pid or self.handing_over:  # a forked DataLoader worker; or exiting
            return
        if signum not in self.received:
            self.received.append(signum)
            log.warning(
                "%s received: the job stops at the next %s",
                signal.Signals(signum).name,
                "optimizer step" if self.deferring else "safe point",
            )
        if self.active and not self.deferring and not self.finishing:
            raise Interrupted(signum, "outside a training step")


_OWNER = _Owner()


def install() -> bool:
    """Own SIGUSR2 (submitit's signal, ``$SUBMITIT_PREEMPT_SIGNAL``) and SIGTERM in a submitit job:
    the handlers only note the signal. Idempotent; False (nothing installed) outside submitit or
    off the main thread."""
    if _OWNER.pid == os.getpid():
        return True
    if not os.environ.get("SUBMITIT_EXECUTOR") or threading.current_thread() is not threading.main_thread():
        return False
    from submitit.core.job_environment import JobEnvironment, SignalHandler

    usr_sig = JobEnvironment._usr_sig()
    current = signal.getsignal(usr_sig)
    handler = getattr(current, "__self__", None)
    _OWNER.submitit = handler if isinstance(handler, SignalHandler) else None
    if _OWNER.submitit is None:
        log.warning("no submitit signal handler to requeue with: a signalled job will fail")
    _OWNER.usr_sig = usr_sig
    _OWNER.previous = {sig: signal.getsignal(sig) for sig in (usr_sig, signal.SIGTERM)}
    for sig in (usr_sig, signal.SIGTERM):
        signal.signal(sig, _OWNER.note)
    _OWNER.pid = os.getpid()
    return True


def uninstall() -> None:
    """Give the signals back to their previous handlers and forget what was received (tests)."""
    if _OWNER.pid == os.getpid():
        for sig, handler in _OWNER.previous.items():
            signal.signal(sig, handler)
    kept = _OWNER.progress  # the module's ``progress`` stays this object
    _OWNER.__init__()
    kept.__init__()
    _OWNER.progress = kept


def owned() -> bool:
    """Whether hydrahead owns this process's signals (a job under submitit)."""
    return _OWNER.pid == os.getpid()


def requested() -> bool:
    """A signal asks this job to stop (checked by the training loops after every optimizer step)."""
    return bool(_OWNER.received) and owned()


def received() -> int:
    """The signal the job stops for: submitit's (SIGUSR2) over SIGTERM."""
    return _OWNER.usr_sig if _OWNER.usr_sig in _OWNER.received else _OWNER.received[0]


def stop(where: str) -> Interrupted:
    """The exception a training loop raises once its checkpoint is saved."""
    return Interrupted(received(), where)


def raise_if_requested(where: str) -> None:
    if requested():
        raise stop(where)


progress = _OWNER.progress


@contextlib.contextmanager
def job() -> Iterator[Progress]:
    """One job (``pipeline.run``): a signal outside a deferred section raises at once; a signal
    already received (between two jobs of a chunk) stops it before it starts."""
    _OWNER.progress.__init__()
    _OWNER.active, _OWNER.finishing = owned(), False
    try:
        raise_if_requested("before the job started")
        yield _OWNER.progress
    finally:
        _OWNER.active, _OWNER.finishing = False, False


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A section the handler must not interrupt (a training loop, which checks at its own step
    boundaries; the record and W&B writes): signals are only noted."""
    _OWNER.deferring += 1
    try:
        yield
    finally:
        _OWNER.deferring -= 1
    # Left normally with a signal noted inside: the job stops here (inside a job, as the handler would).
    if _OWNER.active and not _OWNER.deferring and not _OWNER.finishing and requested():
        raise stop("after a section that could not be interrupted")


def finishing() -> None:
    """The job is done but for its record: a signal from here on changes nothing (until the next job)."""
    _OWNER.finishing = True


def quiet_lightning(trainer) -> None:
    """Keep Lightning from registering its SIGTERM handler in ``trainer.fit`` (hydrahead's stays)."""
    connector = getattr(trainer, "_signal_connector", None)
    if owned() and connector is not None:
        connector.register_signal_handlers = lambda: None


def slurm_job_state() -> dict[str, str]:
    """``scontrol show job -o $SLURM_JOB_ID`` as key=value pairs ({} outside SLURM or on error)."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return {}
    try:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=15
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(part.split("=", 1) for part in out.split() if "=" in part)


def outcome() -> Outcome:
    """How the signalled job ends.

    SIGUSR2: requeued as submitit would (``timeout`` when the job ran past 80% of its limit, else
    ``preemption``), failed once ``max_num_timeout`` is used up or a timed-out job has no
    ``checkpoint``. SIGTERM alone: SLURM says why (``scontrol show job``): preempted (it requeues
    the job itself), the time limit (too late to requeue: failed), else ``scancel``: cancelled.
    """
    signum = received()
    if signum == _OWNER.usr_sig:
        handler = _OWNER.submitit
        if handler is None:
            return Outcome("failed", "signalled, but no submitit handler to requeue with", signum)
        timed_out = handler.has_timed_out()
        handler.has_timed_out = lambda: timed_out  # the hand-over decides as the record says
        reason = "timeout" if timed_out else "preemption"
        delayed = handler._delayed
        if delayed._timeout_countdown - timed_out < 0:
            return Outcome("failed", "timed out too many times (hydra.launcher.max_num_timeout)", signum)
        if timed_out and not hasattr(delayed.function, "checkpoint"):
            return Outcome("failed", "timed out and not checkpointable", signum)
        return Outcome("requeued", reason, signum, "submitit")
    state = slurm_job_state()
    if state.get("JobState") == "PREEMPTED" or state.get("PreemptTime", "None") not in ("None", ""):
        return Outcome("requeued", "preemption", signum, "slurm")
    if state.get("Reason") == "TimeLimit" or state.get("JobState") == "TIMEOUT":
        return Outcome(
            "failed", "time limit reached before a requeue (raise hydra.launcher.signal_delay_s)", signum
        )
    return Outcome("cancelled", "scancel", signum)


def hand_over(result: Outcome) -> None:
    """End the process as ``result`` says; never returns. SIGUSR2: submitit's own handler
    (checkpoint, requeue, ``sys.exit(-1)`` without a result pickle; or its UncompletedJobError when
    it may not requeue). SIGTERM: exit without a result (SLURM requeues a preempted job, a
    cancelled one is over)."""
    handler = _OWNER.submitit
    _OWNER.handing_over = True  # the requeue's own SIGTERM (scontrol requeue ends this job) is expected
    if result.signum == _OWNER.usr_sig and handler is not None:
        handler.checkpoint_and_try_requeue(result.signum)
        # Only a rank other than 0 gets here (submitit requeues from rank 0): wait to be requeued.
        time.sleep(120)
    raise SystemExit(-1 if result.status == "requeued" else 128 + result.signum)
