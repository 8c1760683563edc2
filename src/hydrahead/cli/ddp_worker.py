"""``python -m hydrahead.cli.ddp_worker``: one DDP rank > 0 of a job rank 0 runs (not a command for users).

Started by :class:`hydrahead.training.ddp.WorkerLauncher` with the job's resolved config pickled on
stdin and the rank in the environment (``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``PORT``,
``HYDRAHEAD_DDP_RANK``). It goes through no Hydra (no sweep re-run, no run dir of its own), trains
its share of the job with rank 0 and writes nothing: rank 0 keeps the run dir. Its warnings and
errors go to stderr, prefixed with the rank.

Under submitit the job's signals are rank 0's (``training.interrupt``): SLURM sends its time-limit
SIGUSR2 and scancel's SIGTERM to every process of the job, and SIGUSR2 would end this one at once
(its default action), which Lightning's observer in rank 0 answers by killing the job before it
checkpoints. So a worker ignores both; rank 0's stop reaches it at the same optimizer step
(``StopOnSignal`` reduces the decision over the ranks), and it exits 0 there, as a finished rank.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys


def main() -> None:
    from hydrahead.training.ddp import RANK_ENV

    rank = os.environ.get(RANK_ENV, "?")
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)  # libraries set INFO on their own loggers: rank 0 reports those
    handler.setFormatter(logging.Formatter(f"[rank {rank}] %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)  # library warnings: rank 0's train.log has them
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # not a signal this rank may die of, anywhere
    if os.environ.get("SUBMITIT_EXECUTOR"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # rank 0 stops the job (a scancel kills it later)
    payload = pickle.load(sys.stdin.buffer)
    code, ok = 1, False
    from hydrahead.config.resolvers import register
    from hydrahead.pipeline import run_replica
    from hydrahead.training import ddp, interrupt

    register()
    try:
        run_replica(payload["config"])
        code, ok = 0, True
    except interrupt.Interrupted as stop:  # rank 0 was signalled: it records the job and requeues it
        logging.getLogger("hydrahead.ddp_worker").info("rank %s stops with rank 0: %s", rank, stop)
        code, ok = 0, True
    except BaseException:
        logging.getLogger("hydrahead.ddp_worker").exception("rank %s failed", rank)
    finally:
        ddp.finish(ok)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # as hydrahead-train: no interpreter teardown


if __name__ == "__main__":
    main()
