"""``hydrahead-train`` (also ``python -m hydrahead.cli.train``): preflight, Hydra, :func:`hydrahead.run`.

Module-level imports stay light so ``hydrahead-train --cfg job`` answers in well under a second;
torch, transformers, Lightning and W&B load only when a run starts.
"""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path

import hydra
import hydra.experimental.callback
from omegaconf import DictConfig

from hydrahead.config.resolvers import register
from hydrahead.config.schema import ConfigError
from hydrahead.utils.paths import config_dir

log = logging.getLogger("hydrahead.train")
register()

# Arguments after which hydrahead-train does not run one job: no preflight for these.
_NOT_A_RUN = {"-m", "--multirun", "--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i"}
_NOT_A_RUN |= {"--shell-completion", "-sc", "--version", "--resolve", "-p", "--package"}
_OWN_CONFIG = ("--config", "-cp", "-cn", "-cd")
# A full disk, a quota, a read-only or forbidden place: the user's to fix, said in one line.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def fail(message: str) -> None:
    """One line on stderr, exit status 2: the error a user can act on, without a traceback."""
    print(f"hydrahead-train: error: {message}", file=sys.stderr)
    raise SystemExit(2)


class SweepReport(hydra.experimental.callback.Callback):
    """Names the jobs of a multirun that failed (Hydra re-raises only the first error)."""

    sweep_dir: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        SweepReport.sweep_dir = str(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        report_sweep()


def report_sweep() -> None:
    # Hydra instantiates hydrahead.cli.train.SweepReport, which under `python -m` is not this
    # module's (__main__) class: read the one Hydra set.
    from hydrahead.cli import train

    sweep_dir = train.SweepReport.sweep_dir
    if not sweep_dir or not Path(sweep_dir).is_dir():
        return
    from hydrahead.rundir import sweep_jobs

    jobs = sweep_jobs(sweep_dir)
    total = sum(len(lines) for lines in jobs.values())
    log.info("sweep %s: %d of %d jobs completed", sweep_dir, len(jobs["completed"]), total)
    # cancelled (scancel, a lost SLURM job) and unfinished ones named apart from real failures
    kinds = {"failed": "FAILED", "cancelled": "CANCELLED", "unfinished": "NOT FINISHED"}
    counts = {kind: len(jobs[kind]) for kind in kinds if jobs[kind]}
    if counts:
        if len(counts) == 1:
            ((kind, n),) = counts.items()
            head = f"{n} of {total} sweep jobs {'not finished' if kind == 'unfinished' else kind}:"
        else:
            parts = ", ".join(f"{n} {'not finished' if k == 'unfinished' else k}" for k, n in counts.items())
            head = f"{sum(counts.values())} of {total} sweep jobs did not complete ({parts}):"
        lines = [f"  {kinds[kind]} {line}" for kind in kinds for line in jobs[kind]]
        print("\n".join([head, *lines]), file=sys.stderr)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from hydrahead.data.encode import DataError
    from hydrahead.pipeline import run

    from .console import job_line, print_summary, start_line

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        log.info("%s", start_line(cfg, dict(hc.runtime.choices)))
    except Exception as err:  # a line of text must never stop a run
        log.warning("could not describe the run: %s: %s", type(err).__name__, err)
    # Python warnings (Lightning's, torch's, W&B's) become log records: train.log keeps them, the
    # console filter (conf/hydra/job_logging/hydrahead.yaml) keeps them off the screen. Only for this job.
    logging.captureWarnings(True)
    try:
        result = run(cfg)
    except SystemExit as stop:
        if type(stop).__name__ == "SIGTERMException":  # Lightning's, a SystemExit with status 0
            print(
                f"hydrahead-train: stopped by SIGTERM; resume with ckpt_path={cfg.paths.output_dir}/"
                "checkpoints/last.ckpt",
                file=sys.stderr,
            )
            raise SystemExit(143) from None
        raise
    except (ConfigError, DataError, OSError) as err:
        if multirun:
            raise  # the sweep records it and goes on with the other jobs
        if isinstance(err, OSError) and err.errno not in _DISK_ERRORS:
            raise
        where = f" (recorded in {cfg.paths.output_dir}/metrics.json)" if isinstance(err, OSError) else ""
        fail(f"{err}{where}")
    finally:
        logging.captureWarnings(False)
    try:
        if multirun:
            log.info("%s", job_line(hc.job.num, result))
        else:
            print_summary(result)  # console only: train.log and metrics.json have it all already
    except Exception as err:  # the run is done and recorded: a summary that fails must not fail it
        log.warning("could not print the run's summary: %s: %s", type(err).__name__, err)
    return result.best


def _config_flag(argv: list[str]) -> tuple[int, str] | None:
    """Where ``--cfg``/``-c`` is in ``argv`` and its value (job, hydra, all), or None."""
    for i, arg in enumerate(argv):
        if arg in ("--cfg", "-c"):
            return i, argv[i + 1] if i + 1 < len(argv) else ""
        if arg.startswith("--cfg="):
            return i, arg.split("=", 1)[1]
    return None


def _one_job(override: str) -> str | None:
    """A sweep override with its first value (``head=linear,mlp`` -> ``head=linear``); the override as it
    is when it sweeps nothing; None when its first value cannot be told (an interval to search)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_override(override)
        if not parsed.is_sweep_override():
            return override
        return f"{override.split('=', 1)[0]}={next(parsed.sweep_string_iterator())}"
    except Exception:
        return None


def check_config_flags(argv: list[str]) -> list[str]:
    """``--cfg`` prints one job's config: with ``-m`` Hydra stops in a traceback, so say what to run
    instead (exit 2). ``--resolve`` needs the run dir ``paths.output_dir`` reads from Hydra's runtime,
    which a printed config has none of: it gets the one a run started now would get (``hydra.run.dir``).
    Returns the arguments to hand Hydra."""
    import shlex

    flag = _config_flag(argv)
    if flag is None:
        return argv
    if "-m" in argv or "--multirun" in argv:
        job, swept = [], []
        for arg in (a for a in argv if a not in ("-m", "--multirun")):
            one = arg if arg.startswith("-") or "=" not in arg else _one_job(arg)  # flags and their values
            if one != arg:
                swept.append(arg.split("=", 1)[0])
            if one is not None:
                job.append(one)
        command = f"hydrahead-train {shlex.join(job)}"
        if swept:
            fail(
                f"--cfg shows one job's config, not a sweep's: drop -m and give {', '.join(swept)} one "
                f"value each ({command})"
            )
        axes = ""
        if flag[1] != "hydra":
            takes_value = {"--cfg", "-c", "-p", "--package"}  # the printing flags, left out here
            rest = [
                a
                for a, prev in zip(job, ["", *job])
                if a != "--resolve" and a.split("=", 1)[0] not in takes_value and prev not in takes_value
            ]
            axes = f"; its axes are in hydra.sweeper.params (hydrahead-train {shlex.join(rest)} --cfg hydra)"
        fail(f"--cfg shows one job's config, not a sweep's: drop -m ({command}){axes}")
    if "--resolve" in argv and not any(a.split("=", 1)[0].lstrip("+~") == "paths.output_dir" for a in argv):
        i, shows = flag
        argv = [*argv, "paths.output_dir=${hydra:run.dir}"]
        if shows == "hydra":  # hydra.run.dir reads paths.*: the hydra part of the whole config, resolved
            argv[i : i + (1 if argv[i].startswith("--cfg=") else 2)] = ["--cfg", "all"]
            if not any(a in ("-p", "--package") or a.startswith("--package=") for a in argv):
                argv += ["--package", "hydra"]
    return argv


def main() -> None:
    """Console entry point: preflight checks, Hydra's main, and a list of failed jobs when a sweep fails."""
    argv = check_config_flags(sys.argv[1:])
    sys.argv[1:] = argv  # Hydra reads sys.argv
    if not any(arg in _NOT_A_RUN or arg.startswith(_OWN_CONFIG) for arg in argv):
        from hydrahead.config.validate import preflight

        try:
            preflight(argv)
        except ConfigError as err:
            fail(str(err))
    try:
        _hydra_main()
    except SystemExit as stop:
        from hydrahead.sweep.slurm_watch import EXIT_LEFT_RUNNING

        if stop.code not in (None, 0, EXIT_LEFT_RUNNING):  # left running: the launcher listed the jobs
            report_sweep()
        raise


def cli() -> None:
    """The ``hydrahead-train`` command: :func:`main`, then exit without tearing the interpreter down.

    Freeing torch's, the data's and the feature cache's objects one by one at exit takes seconds the
    OS does at once; exit handlers (W&B's included) and the flushes run as at a normal exit.
    """
    import atexit
    import os

    code = 0
    try:
        main()
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    logging.shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    cli()
