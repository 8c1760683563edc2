"""Sweep launchers whose per-job cost is a config copy, not a full Hydra composition.

Hydra's launchers compose the whole config for every job (``load_sweep_config``: the defaults tree,
every group file, the schema merge; about 160 ms here), more than a head-training job on cached
features costs. A sweep's jobs differ mostly in plain values (``head.layer=3``, ``seed=1``) and in a
few group choices, so :class:`JobComposer` composes once per distinct tuple of group choices and
builds each job from a copy, applying its value overrides with Hydra's own code.

- ``hydra/launcher=hydrahead``, the default for ``-m``: :class:`InProcessLauncher`, the jobs one
  after another in this process, as Hydra's basic launcher runs them.
- ``hydra/launcher=local`` / ``slurm``: :class:`ChunkedLocalLauncher` / :class:`ChunkedSlurmLauncher`,
  hydra-submitit-launcher's launchers with ``chunk_size`` consecutive jobs per submitit task.

Hydra instantiates a launcher only from the ``hydra_plugins`` namespace, so the configs point at
thin subclasses in ``hydra_plugins.hydrahead_launchers``. Module-level imports stay light: Hydra's
plugin scan imports this module on every start (``hydrahead-train --cfg job`` included).
"""

from __future__ import annotations

import collections
import copy
import importlib
import io
import logging
import os
import pickle
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.errors import ConfigCompositionException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    BaseSubmititLauncher,
    LocalLauncher,
    SlurmLauncher,
)
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)

_PLUGINS = "hydra_plugins.hydrahead_launchers"


# ------------------------------------------------------------------------------------ composing


class JobComposer:
    """Each sweep job's config, equal to ``config_loader.load_sweep_config(master, overrides)``.

    A job's overrides split into *compose* overrides (config group choices ``head=mlp``, ``+group=``,
    ``~group``, ``group@package=``) and *value* overrides (``key=value``, ``+key=``, ``++key=``,
    ``~key`` on a key that is not a config group: what Hydra itself applies after composing, with
    ``ConfigLoaderImpl._apply_overrides_to_config``, in command-line order). ``load_sweep_config``
    runs once per distinct tuple of compose overrides; every job gets a copy of that config with
    its value overrides applied by the same Hydra function, and the fields Hydra derives from the
    overrides (``hydra.overrides.task``, ``hydra.job.override_dirname``, ``env_set``,
    ``runtime.cwd``, the resolver cache) set again. A job this cannot mirror exactly (a ``hydra.*``
    override, which Hydra interleaves with the others; a dict value on a group; an override the
    parser rejects; a loader that is not Hydra's) is composed in full by ``load_sweep_config``.
    """

    def __init__(self, config_loader: Any, master: DictConfig, max_bases: int = 32) -> None:
        self.loader = config_loader
        self.master = master
        self.max_bases = max_bases
        self.bases: dict[tuple[str, ...], bytes | DictConfig] = {}
        """Composed configs by compose overrides, pickled (unpickling copies a config in a quarter of
        deepcopy's time); kept as they are where they do not pickle."""
        self.stats: collections.Counter[str] = collections.Counter()
        """``composed`` (load_sweep_config for a new set of group choices), ``copied`` (jobs built
        from a copy), ``full`` (jobs composed in full)."""
        self._parser: OverridesParser | None = None
        self._repo: Any = None

    def load(self, overrides: Sequence[str]) -> DictConfig:
        """The job's config; raises what ``load_sweep_config`` raises for these overrides."""
        overrides = list(overrides)
        split = self._split(overrides)
        if split is None:
            self.stats["full"] += 1
            return self.loader.load_sweep_config(self.master, overrides)
        compose, values, parsed = split
        base = self._base(compose)
        self.stats["copied"] += 1
        try:
            return self._apply(base, values, parsed)
        except OmegaConfBaseException as err:  # wrapped as Hydra's load_configuration wraps them
            raise ConfigCompositionException().with_traceback(sys.exc_info()[2]) from err

    def _split(self, overrides: list[str]) -> tuple[tuple[str, ...], list[Override], list[Override]] | None:
        if not self._ready():
            return None
        try:
            parsed = self._parser.parse_overrides(overrides=overrides)
        except Exception:
            return None  # Hydra's own composition raises its error
        compose, values = [], []
        for line, override in zip(overrides, parsed):
            if override.is_hydra_override() or override.is_sweep_override():
                return None
            if override.package is None and not self._repo.group_exists(override.key_or_group):
                values.append(override)
            elif isinstance(override.value(), dict):
                return None  # a config override on a group node, applied among the value overrides
            else:
                compose.append(line)
        return tuple(compose), values, parsed

    def _ready(self) -> bool:
        """Parser and repository set up; False where only the full path is exact."""
        if self._repo is None:
            self._repo = False
            if isinstance(self.loader, ConfigLoaderImpl):
                # Group lookups go through the repository Hydra builds for these compositions: the
                # primary config's (or a command-line) hydra.searchpath included.
                hydra_overrides = OmegaConf.to_container(self.master.hydra.overrides.hydra)
                try:
                    _, self._repo = self.loader._parse_overrides_and_create_caching_repo(
                        self.master.hydra.job.config_name, list(hydra_overrides)
                    )
                    self._parser = OverridesParser.create()
                except Exception as err:
                    log.debug("composing every job in full: %s", err)
                    self._repo = False
        return self._repo is not False

    def _base(self, compose: tuple[str, ...]) -> bytes | DictConfig:
        base = self.bases.get(compose)
        if base is None:
            base = self.loader.load_sweep_config(self.master, list(compose))
            try:
                base = _dumps(base)
            except Exception as err:
                log.debug("copying job configs with deepcopy: %s", err)
            if len(self.bases) >= self.max_bases:
                self.bases.pop(next(iter(self.bases)))
            self.bases[compose] = base
            self.stats["composed"] += 1
        return base

    def _apply(self, base: bytes | DictConfig, values: list[Override], parsed: list[Override]) -> DictConfig:
        """What ``_load_configuration_impl`` does after composing, on a copy of the ``base`` config."""
        cfg = pickle.loads(base) if isinstance(base, bytes) else copy.deepcopy(base)
        OmegaConf.clear_cache(cfg)  # Hydra applies the overrides before the master's cache is copied in
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        hydra = cfg.hydra
        hydra.overrides.task = [override.input_line for override in parsed]  # no hydra.* ones here
        with open_dict(hydra):
            for key in hydra.job.env_copy:
                hydra.job.env_set[key] = os.environ[key]
        hydra.runtime.cwd = os.getcwd()
        dirname = hydra.job.config.override_dirname
        hydra.job.override_dirname = get_overrides_dirname(
            overrides=parsed,
            kv_sep=dirname.kv_sep,
            item_sep=dirname.item_sep,
            exclude_keys=dirname.exclude_keys,
        )
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)  # as load_sweep_config does
        return cfg


def _class_by_name(module: str, qualname: str) -> type:
    found: Any = importlib.import_module(module)
    for name in qualname.split("."):
        found = getattr(found, name)
    return found


class _ByNamePickler(pickle.Pickler):
    """Pickles classes by module and name alone. Hydra's plugin scan runs plugin modules again,
    so a config node's dataclass may no longer be its module's attribute, which plain pickle refuses."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type) and obj.__module__ != "builtins":
            _class_by_name(obj.__module__, obj.__qualname__)  # fails here (deepcopy then), not on loading
            return _class_by_name, (obj.__module__, obj.__qualname__)
        return NotImplemented


def _dumps(cfg: DictConfig) -> bytes:
    buffer = io.BytesIO()
    _ByNamePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(cfg)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------ running


def run_sweep_job(
    *,
    hydra_context: HydraContext,
    task_function: TaskFunction,
    master: DictConfig,
    composer: JobComposer,
    overrides: Sequence[str],
    num: int,
    job_id: Any,
    job_dir_key: str = "hydra.sweep.dir",
) -> JobReturn:
    """Compose one job and run it with Hydra's ``run_job``; a job that fails to compose fails alone.

    Hydra's launchers let a composition error end the whole sweep; here it is that job's error:
    a FAILED JobReturn carrying it (the sweeper raises it once the batch is done) and a run dir
    with ``.hydra/overrides.yaml`` and a failed ``metrics.json``, which the sweep report lists.
    """
    # A task of rank > 0 in a multi-task SLURM job (DDP: tasks_per_node = devices) runs the same jobs
    # as rank 0, its share of each; rank 0 alone writes their run dirs (no .hydra/, no train.log).
    tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    replica = tasks > 1 and int(os.environ.get("SLURM_PROCID", "0")) > 0
    try:
        cfg = composer.load(overrides)
    except Exception as err:
        if replica:
            return JobReturn(overrides=_task_overrides(overrides), status=JobStatus.FAILED, _return_value=err)
        return _composition_failed(master, overrides, num, job_id, err)
    with open_dict(cfg):
        cfg.hydra.job.id = job_id
        cfg.hydra.job.num = num
        if replica:
            cfg.hydra.output_subdir = None
    ret = run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=cfg,
        job_dir_key=job_dir_key,
        job_subdir_key="hydra.sweep.subdir",
        configure_logging=not replica,
    )
    configure_log(master.hydra.hydra_logging, master.hydra.verbose)
    return ret


def _task_overrides(overrides: Sequence[str]) -> list[str]:
    """What Hydra would put in ``hydra.overrides.task``: every override not on ``hydra.*``."""
    return [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]


def _composition_failed(
    master: DictConfig, overrides: Sequence[str], num: int, job_id: Any, err: Exception
) -> JobReturn:
    task = _task_overrides(overrides)
    log.error("#%s : %s : %s: %s", num, " ".join(task), type(err).__name__, err)
    try:
        where = copy.deepcopy(master)
        with read_write(where.hydra), open_dict(where):
            where.hydra.job.id = job_id
            where.hydra.job.num = num
        run_dir = Path(str(where.hydra.sweep.dir)) / str(where.hydra.sweep.subdir)
        _record_failure(run_dir, task, err)
    except Exception as record_err:  # the JobReturn still carries the error
        log.warning("#%s : could not record the failure: %s", num, record_err)
    return JobReturn(
        overrides=task,
        status=JobStatus.FAILED,
        _return_value=err,
        task_name=JobRuntime.instance().get("name"),
        working_dir=os.getcwd(),
    )


def _record_failure(run_dir: Path, overrides: list[str], err: Exception) -> None:
    """The run dir of a job that never started: its overrides and a failed metrics.json."""
    from hydrahead.config.validate import describe_config_error
    from hydrahead.rundir import HYDRA_DIR, RunDir
    from hydrahead.utils.atomic import atomic_path

    run = RunDir(run_dir).create()
    with atomic_path(run_dir / HYDRA_DIR / "overrides.yaml") as tmp:
        OmegaConf.save(OmegaConf.create(list(overrides)), tmp)
    run.begin(overrides=list(overrides))
    run.write(status="failed", error=f"{type(err).__name__}: {describe_config_error(err)}")


class InProcessLauncher(Launcher):
    """``hydra/launcher=hydrahead``: Hydra's basic launcher (jobs one after another in this process,
    ``hydra.job.id`` = ``hydra.job.num``), composing each job with a :class:`JobComposer`.

    The composer lives as long as the launcher, so a sweeper that launches one batch at a time
    (Optuna) composes each set of group choices once for the whole search.
    """

    def __init__(self) -> None:
        super().__init__()
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.composer: JobComposer | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        # made here, so that hydra/sweeper=hydrahead checks the batches with it
        self.composer = JobComposer(hydra_context.config_loader, config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        assert self.composer is not None
        log.info(f"Launching {len(job_overrides)} jobs locally")
        runs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            runs.append(
                run_sweep_job(
                    hydra_context=self.hydra_context,
                    task_function=self.task_function,
                    master=self.config,
                    composer=self.composer,
                    overrides=overrides,
                    num=idx,
                    job_id=idx,
                )
            )
        log.debug("compose: %s", dict(self.composer.stats))
        return runs


class ChunkedSubmititLauncher(BaseSubmititLauncher):
    """hydra-submitit-launcher's launcher with ``chunk_size`` consecutive jobs per submitit task.

    Each chunk is one submitit job (one SLURM array element) that composes and runs its jobs one
    after another in one process (:class:`JobComposer`: one composition per set of group choices
    in the chunk). Every job of a chunk gets the chunk's submitit job id as ``hydra.job.id`` and
    its own ``hydra.job.num``, so job dirs (``<num>_<job id>``) stay unique, and a requeued chunk,
    which keeps its SLURM job id, finds them again. On preemption or timeout submitit calls
    ``checkpoint`` (BaseSubmititLauncher's): the same chunk is requeued with the same arguments and
    runs all its jobs again, the finished ones included, each in its own run dir.
    ``chunk_size=1`` is hydra-submitit-launcher's one job per task.
    """

    def __init__(self, chunk_size: int = 1, **params: Any) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"hydra.launcher.chunk_size={chunk_size!r}: expected an integer >= 1")
        super().__init__(**params)  # every other key is a submitit parameter
        self.chunk_size = chunk_size

    def __call__(  # type: ignore[override]
        self,
        chunk: list[list[str]],
        job_dir_key: str,
        first_num: int,
        singleton_state: dict[type, Singleton],
    ) -> list[JobReturn]:
        import submitit  # lazy, as upstream: plugin discovery stays fast

        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        job_id = submitit.JobEnvironment().job_id
        # not kept on self: checkpoint() pickles self into the requeued submission
        composer = JobComposer(self.hydra_context.config_loader, self.config)
        return [
            run_sweep_job(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                master=self.config,
                composer=composer,
                overrides=overrides,
                num=first_num + offset,
                job_id=job_id,
                job_dir_key=job_dir_key,
            )
            for offset, overrides in enumerate(chunk)
        ]

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        num_jobs = len(job_overrides)
        assert num_jobs > 0
        executor = self._executor()
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {self.config.hydra.sweep.dir}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))

        state = Singleton.get_state()
        chunks = []
        for start in range(0, num_jobs, self.chunk_size):
            chunk = [list(overrides) for overrides in job_overrides[start : start + self.chunk_size]]
            for offset, overrides in enumerate(chunk):
                log.info(f"\t#{initial_job_idx + start + offset} : {' '.join(filter_overrides(overrides))}")
            chunks.append((chunk, "hydra.sweep.dir", initial_job_idx + start, state))
        if self.chunk_size > 1:
            log.info(f"{len(chunks)} submitit tasks of up to {self.chunk_size} jobs each")
        jobs = executor.map_array(self, *zip(*chunks))
        returns = self._wait(jobs, chunks)
        assert len(returns) == num_jobs, (len(returns), num_jobs)
        return returns

    def _wait(self, jobs: list[Any], chunks: list[tuple]) -> list[JobReturn]:
        """Every sweep job's JobReturn, in order: submitit's own wait (local processes)."""
        return [ret for job in jobs for ret in job.results()[0]]

    def _job_dirs(self, jobs: list[Any], chunks: list[tuple]) -> list[list[Path]]:
        """Each chunk's run dirs (``hydra.sweep.dir``/``hydra.sweep.subdir`` with the job's num and the
        chunk's job id), as the jobs will make them."""
        assert self.config is not None
        where = copy.deepcopy(self.config)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        dirs = []
        for job, (chunk, _, first_num, _) in zip(jobs, chunks):
            found = []
            for offset in range(len(chunk)):
                with read_write(where.hydra), open_dict(where):
                    where.hydra.job.id = str(job.job_id)
                    where.hydra.job.num = first_num + offset
                found.append(sweep_dir / str(where.hydra.sweep.subdir))
            dirs.append(found)
        return dirs

    def _executor(self) -> Any:
        """The submitit executor, built from the launcher's keys as BaseSubmititLauncher.launch does."""
        import submitit

        init_keys = {"max_num_timeout"}
        init_params = {"folder": self.params["submitit_folder"]}
        init_params.update({f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k in init_keys})
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in base else f"{self._EXECUTOR}_{k}": v
                for k, v in self.params.items()
                if k not in init_keys | {"submitit_folder"}
            }
        )
        return executor


class ChunkedLocalLauncher(ChunkedSubmititLauncher, LocalLauncher):
    """``hydra/launcher=local``: chunks as local submitit processes."""


class ChunkedSlurmLauncher(ChunkedSubmititLauncher, SlurmLauncher):
    """``hydra/launcher=slurm``: chunks as the elements of a SLURM job array, waited for by
    :class:`~hydrahead.sweep.slurm_watch.SweepWatch` (squeue; sacct only where accounting works),
    which tells a requeued job from a failed one and records jobs that left the queue without a
    result. ``wait=False``: submit, print the jobs, exit with ``EXIT_LEFT_RUNNING``."""

    def __init__(
        self,
        wait: bool = True,
        poll_s: float = 15.0,
        lost_after_s: float = 45.0,
        report_every_s: float = 300.0,
        **params: Any,
    ) -> None:
        seconds = {"poll_s": poll_s, "lost_after_s": lost_after_s, "report_every_s": report_every_s}
        for key, value in seconds.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"hydra.launcher.{key}={value!r}: expected a number of seconds > 0")
        super().__init__(**params)
        self.wait = bool(wait)
        self.poll_s, self.lost_after_s, self.report_every_s = poll_s, lost_after_s, report_every_s

    def _wait(self, jobs: list[Any], chunks: list[tuple]) -> list[JobReturn]:
        from .slurm_watch import Chunk, SweepWatch

        assert self.config is not None
        watch = SweepWatch(
            [
                Chunk(job=job, overrides=chunk[0], run_dirs=dirs)
                for job, chunk, dirs in zip(jobs, chunks, self._job_dirs(jobs, chunks))
            ],
            sweep_dir=str(self.config.hydra.sweep.dir),
            poll_s=self.poll_s,
            lost_after_s=self.lost_after_s,
            report_every_s=self.report_every_s,
        )
        if not self.wait:
            watch.leave_running("not waiting (hydra.launcher.wait=false)")
        return watch.wait()


# ------------------------------------------------------------------------------------ configs


@dataclass
class GridSweeperConf:
    """``hydra/sweeper=hydrahead``: Hydra's ``basic`` sweeper's keys (:mod:`hydrahead.sweep.sweeper`)."""

    _target_: str = f"{_PLUGINS}.GridSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


@dataclass
class InProcessLauncherConf:
    """``hydra/launcher=hydrahead``: no options."""

    _target_: str = f"{_PLUGINS}.HydraheadLauncher"


@dataclass
class ChunkedLocalConf(LocalQueueConf):
    """hydra-submitit-launcher's ``submitit_local`` plus ``chunk_size``."""

    _target_: str = f"{_PLUGINS}.ChunkedLocalLauncher"
    chunk_size: int = 1
    """Consecutive sweep jobs per submitit task, run one after another in one process."""


@dataclass
class ChunkedSlurmConf(SlurmQueueConf):
    """hydra-submitit-launcher's ``submitit_slurm`` plus ``chunk_size`` (``timeout_min`` covers a chunk)."""

    _target_: str = f"{_PLUGINS}.ChunkedSlurmLauncher"
    chunk_size: int = 1
    """Consecutive sweep jobs per SLURM array element, run one after another in one process."""
    wait: bool = True
    """Wait for the jobs and exit with their outcome; false: submit, print them, exit 75 at once."""
    poll_s: float = 15.0
    """Seconds between squeue calls while waiting (result files are looked at every second)."""
    lost_after_s: float = 45.0
    """A job out of the queue without a result is recorded (cancelled, lost, failed) after this long."""
    report_every_s: float = 300.0
    """While waiting, a line naming the jobs still waited for this often."""


def register_launchers() -> None:
    """``hydra/launcher=hydrahead``, ``hydrahead_local``, ``hydrahead_slurm`` and
    ``hydra/sweeper=hydrahead`` in Hydra's ConfigStore."""
    store = ConfigStore.instance()
    store.store(group="hydra/launcher", name="hydrahead", node=InProcessLauncherConf, provider="hydrahead")
    store.store(group="hydra/launcher", name="hydrahead_local", node=ChunkedLocalConf, provider="hydrahead")
    store.store(group="hydra/launcher", name="hydrahead_slurm", node=ChunkedSlurmConf, provider="hydrahead")
    store.store(group="hydra/sweeper", name="hydrahead", node=GridSweeperConf, provider="hydrahead")
