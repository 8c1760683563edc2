"""DDP for one job: which rank this process is, how the other ranks start, what they share at the end.

Lightning's DDP launcher starts ranks 1.. by running ``sys.argv`` again (under Hydra with a few
``hydra.*`` overrides added): that re-runs a ``-m`` sweep in every child and, with
``hydra.job.chdir=false``, makes run dirs of their own (Lightning #11300, hydra #2070). Here the
children never go through Hydra: :class:`WorkerLauncher` starts ``python -m hydrahead.cli.ddp_worker``
and hands it rank 0's resolved config on its stdin (nothing on disk); the worker trains the same job
as a replica and writes nothing. Under SLURM with ``tasks_per_node`` = ``devices`` there is nothing
to start: srun starts every task, Lightning's ``SLURMEnvironment`` reads ``SLURM_PROCID``.

Only rank 0 writes: ``metrics.json``, ``labels.json``, checkpoints (Lightning's own rule), the
export, the reports and the W&B run. :func:`replica_rank` tells the pipeline which rank it is before
any trainer exists.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import threading
from typing import Any

from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver
from lightning.fabric.utilities.distributed import _set_num_threads_if_needed
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

log = logging.getLogger("hydrahead.run")
RANK_ENV = "HYDRAHEAD_DDP_RANK"
"""Set by :class:`WorkerLauncher` in the processes it starts: their global rank."""
# What Lightning's launcher sets in rank 0's own environment; a later job of the same process
# (a sweep) must not find them (LOCAL_RANK there would tell Lightning the processes exist already).
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")
# strategy name -> find_unused_parameters
_STRATEGIES = {
    "ddp": False,
    "ddp_find_unused_parameters_false": False,
    "ddp_find_unused_parameters_true": True,
}
_LAUNCHED: list[WorkerLauncher] = []


def replica_rank() -> int:
    """This process's global rank in a multi-process job, 0 for rank 0 and for a one-process job:
    a worker this module started, or a task of a multi-task SLURM job (``SLURM_PROCID``)."""
    if RANK_ENV in os.environ:
        return int(os.environ[RANK_ENV])
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"])
    return 0


def _multi_device(args: dict) -> bool:
    devices, accelerator = args.get("devices", "auto"), str(args.get("accelerator", "auto"))
    if isinstance(devices, (list, tuple)):
        return len(devices) > 1
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()]) > 1
    if str(devices) in ("auto", "-1"):
        import torch

        return accelerator in ("auto", "gpu", "cuda") and torch.cuda.device_count() > 1
    return int(devices) > 1


def strategy_for(args: dict, worker: dict | None):
    """The DDP strategy for these trainer arguments (``strategy: ddp``, its find-unused variants, or
    ``auto`` on several devices or nodes), whose children start as :mod:`hydrahead.cli.ddp_worker`
    with ``worker`` (rank 0's resolved config) on their stdin; None: leave ``strategy`` as it is."""
    name = args.get("strategy", "auto")
    if not isinstance(name, str):
        return None  # a strategy object: the caller's own
    multi = _multi_device(args) or int(args.get("num_nodes", 1) or 1) > 1
    if name not in _STRATEGIES and not (name == "auto" and multi):
        return None
    return JobDDPStrategy(worker=worker, find_unused_parameters=_STRATEGIES.get(name, False))


class JobDDPStrategy(DDPStrategy):
    """Lightning's DDP (``start_method="popen"``) whose children are :class:`WorkerLauncher`'s."""

    strategy_name = "ddp"

    def __init__(self, worker: dict | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.worker = worker

    def _setup_model(self, model):
        # Weights no loss reaches would make DDP wait for their gradients forever (or need
        # find_unused_parameters, a graph walk every step): they are left out of its reduction.
        unused = getattr(self.lightning_module, "ddp_unused_parameters", lambda: [])()
        if unused:
            from torch.nn.parallel import DistributedDataParallel

            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, unused)
        return super()._setup_model(model)

    def _configure_launcher(self) -> None:
        assert self.cluster_environment is not None
        env = self.cluster_environment
        self._launcher = WorkerLauncher(env, self.num_processes, self.num_nodes, self.worker)


class _Observer(_ChildProcessObserver):
    """Lightning's watch over the children (one that fails takes the job down rather than leave rank 0
    waiting in a collective), stopped once the job's collective part is over: a child that exits
    badly after that cannot kill rank 0 while it writes the results."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()
        self.stopped = False

    def _run(self) -> bool:
        with self.lock:
            return True if self.stopped else super()._run()

    def stop(self) -> None:
        with self.lock:
            self.stopped = True


class WorkerLauncher(_SubprocessScriptLauncher):
    """Starts ranks 1..N-1 of this node as ``python -m hydrahead.cli.ddp_worker``, once per job (fit,
    validate and test reuse them), with the job's resolved config on stdin; Hydra never runs there."""

    def __init__(self, cluster_environment, num_processes: int, num_nodes: int, worker: dict | None) -> None:
        super().__init__(cluster_environment, num_processes, num_nodes)
        self.worker = worker
        self.saved_env: dict[str, str | None] | None = None
        self.observer: _Observer | None = None

    def launch(self, function, *args: Any, trainer=None, **kwargs: Any) -> Any:
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.procs and not self.cluster_environment.creates_processes_externally:
            if self.worker is None:
                raise RuntimeError("a DDP replica cannot start processes of its own")
            self.saved_env = {key: os.environ.get(key) for key in _LAUNCH_ENV}
            _LAUNCHED.append(self)
            self._call_children_scripts()
            self.observer = _Observer(main_pid=os.getpid(), child_processes=self.procs)
            self.observer.start()
        _set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        payload = pickle.dumps(self.worker, protocol=pickle.HIGHEST_PROTOCOL)
        for local_rank in range(1, self.num_processes):
            child_env = os.environ.copy()
            child_env["LOCAL_RANK"] = str(local_rank)
            child_env[RANK_ENV] = str(env.node_rank() * self.num_processes + local_rank)
            command = [sys.executable, "-m", "hydrahead.cli.ddp_worker"]
            proc = subprocess.Popen(command, env=child_env, stdin=subprocess.PIPE)
            self.procs.append(proc)
            try:
                proc.stdin.write(payload)
                proc.stdin.close()
            except BrokenPipeError:  # it died at start: the observer sees its exit status
                pass

    def finish(self, ok: bool, timeout_s: float = 60.0) -> list[int | None]:
        """Stop watching, wait for the children (kill them when the job failed or they hang), put
        rank 0's environment back; the children's exit statuses."""
        if self.observer is not None:
            self.observer.stop()
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=timeout_s if ok else 5.0))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        for key, value in (self.saved_env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.saved_env = None
        return codes


def world() -> tuple[int, int]:
    """(world size, rank) of the initialised process group, else (1, 0)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather(obj: Any) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process); a collective: every rank calls it."""
    import torch.distributed as dist

    size, _ = world()
    if size == 1:
        return [obj]
    out: list = [None] * size
    dist.all_gather_object(out, obj)
    return out


def gather_kept(kept: dict) -> dict:
    """The final evaluation's logits and labels of every rank, in rank order: each rank evaluated a
    contiguous share of the length-sorted split, so the result is one process's, item for item."""
    import torch

    local = {stage: {k: torch.cat(v) for k, v in parts.items() if v} for stage, parts in kept.items()}
    ranks = gather(local)
    out: dict = {}
    for stage in sorted({stage for part in ranks for stage in part}):
        pieces = [part[stage] for part in ranks if part.get(stage)]
        out[stage] = {key: [piece[key] for piece in pieces] for key in ("logits", "labels")}
    return out


def end_collectives() -> None:
    """The job's last collective is done: stop watching the children and leave the process group (a
    later job of this process, DDP or not, starts from a clean slate)."""
    import torch.distributed as dist

    for launcher in _LAUNCHED:
        if launcher.observer is not None:
            launcher.observer.stop()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def finish(ok: bool) -> None:
    """The end of a job in this process: out of the process group, children reaped, environment back."""
    end_collectives()
    while _LAUNCHED:
        launcher = _LAUNCHED.pop()
        codes = launcher.finish(ok)
        if ok and any(codes):
            log.warning("DDP: a worker process exited with status %s after the job completed", codes)
