"""The run-dir contract: the one module that writes a run's directory and the one that reads it.

A run directory holds ``.hydra/`` (config, overrides, Hydra settings), ``metrics.json`` (status
running -> completed | failed | requeued | cancelled, then the final metrics), ``labels.json``,
``checkpoints/`` (``last.ckpt``, ``best.ckpt``), ``model/`` (the HF export) and ``wandb/``. A run
writes it through :class:`RunDir`; compare, reproduce, the sweep report and anything after a run
read it through :func:`load_run`.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hydrahead.utils.atomic import atomic_path

METRICS = "metrics.json"
LABELS = "labels.json"
HYDRA_DIR = ".hydra"


@functools.cache
def non_measurement_keys() -> frozenset[str]:
    """Keys that do not change what a run measures (seed is what comparisons aggregate over).

    Defined once, in ``conf/hydra/default.yaml`` (``hydra.job.config.override_dirname.exclude_keys``),
    so job names and comparisons agree; a group name there (``logger``) covers all its keys.
    """
    import yaml

    from hydrahead.utils.paths import config_dir

    hydra = yaml.safe_load((config_dir() / "hydra" / "default.yaml").read_text())
    return frozenset(hydra["job"]["config"]["override_dirname"]["exclude_keys"])


def measures(key: str) -> bool:
    """False for a key that changes nothing measured (``seed``, ``+logger.wandb.project``, ``hydra.*``)."""
    key = key.lstrip("+~")
    ignored = non_measurement_keys()
    return key not in ignored and key.split(".")[0].split("@")[0] not in ignored


# ------------------------------------------------------------------------------------------ writing

CARRIED = ("requeued", "wandb_id", "steps_executed")
"""What a new attempt of a run keeps from the earlier attempts' record (see :meth:`RunDir.begin`)."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def attempt_number(previous: dict) -> int:
    """This attempt's 1-based number: ``$SLURM_RESTART_COUNT`` + 1 where SLURM sets it, else one
    more than the ``previous`` record's (1 without one)."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "")
    if restarts.isdigit():
        return int(restarts) + 1
    earlier = previous.get("attempt")
    return int(earlier) + 1 if isinstance(earlier, int) and not isinstance(earlier, bool) else 1


def write_json(path: Path, payload: dict) -> None:
    """Write atomically: a reader (compare, a sweep monitor) never sees half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str))


class RunDir:
    """One run's directory, as the run writes it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.record: dict = {}

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    def create(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def save_config(self, cfg, overrides: list[str]) -> None:
        """``.hydra/config.yaml`` and ``overrides.yaml`` as Hydra writes them, for a run started from
        Python (under Hydra they are there already)."""
        from omegaconf import OmegaConf

        config_file = self.path / HYDRA_DIR / "config.yaml"
        if config_file.is_file():
            return
        with atomic_path(config_file) as tmp:
            OmegaConf.save(cfg, tmp)
        with atomic_path(self.path / HYDRA_DIR / "overrides.yaml") as tmp:
            OmegaConf.save(OmegaConf.create(list(overrides)), tmp)

    def begin(self, **fields) -> dict:
        """The record of a starting run (not written yet): status running, and who runs it, so a
        reader can tell a live run from a killed one (pid gone on this host).

        A dir that already holds a record of this config (``config_digest``: a requeued, cancelled,
        failed or killed attempt) is the same run going on: its ``requeued`` entries, ``wandb_id``
        and ``steps_executed`` carry over, and ``attempt`` counts on (``$SLURM_RESTART_COUNT`` + 1
        under SLURM, else the earlier attempt's + 1).
        """
        previous = self._read()
        if previous.get("config_digest") != fields.get("config_digest"):
            previous = {}
        self.record = {
            "status": "running",
            **{key: previous[key] for key in CARRIED if key in previous},
            **fields,
            "attempt": attempt_number(previous),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": _now(),
        }
        return self.record

    def _read(self) -> dict:
        try:
            record = json.loads((self.path / METRICS).read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def completed_record(self, config_digest: str) -> dict | None:
        """The record of a completed run of this same config already in this dir, else None."""
        try:
            record = json.loads((self.path / METRICS).read_text())
        except (OSError, ValueError):
            return None
        same = record.get("status") == "completed" and record.get("config_digest") == config_digest
        return record if same else None

    def write(self, **fields) -> None:
        """Update the record with ``fields`` and replace ``metrics.json`` with it."""
        self.record.update(fields)
        write_json(self.path / METRICS, self.record)

    def fail(self, err: BaseException | str) -> None:
        error = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
        self.record.update(status="failed", error=error)

    def requeue(self, reason: str, global_step: int | None) -> None:
        """The job stops to be requeued (``reason``: timeout or preemption) at ``global_step``:
        ``status: requeued`` and a ``requeued`` entry, written before the process exits."""
        entry = {"attempt": self.record.get("attempt", 1), "reason": reason, "at": _now()}
        earlier = self.record.get("requeued") or [{}]
        entry["global_step"] = global_step if global_step is not None else earlier[-1].get("global_step")
        self.record["requeued"] = [*self.record.get("requeued", []), entry]
        self.record.pop("error", None)
        self.write(status="requeued")

    def cancel(self, reason: str) -> None:
        """The job was cancelled (``scancel``): ``status: cancelled``, ``reason``, written at once."""
        self.record.pop("error", None)
        self.write(status="cancelled", reason=reason, ended=_now())

    def write_labels(self, labels: list[str], control: dict | None = None) -> None:
        """The label vocabulary; a control run also keeps its task (seed, type -> label map)."""
        write_json(self.path / LABELS, {"labels": list(labels), **({"control": control} if control else {})})


def _rewrite_record(run_dir: str | Path, **fields) -> dict:
    """``metrics.json`` with ``fields`` and ``ended`` (now) set and the rest kept (a missing or
    unreadable one: just them)."""
    fields["ended"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path = Path(run_dir) / METRICS
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    record = {**(record if isinstance(record, dict) else {}), **fields}
    write_json(path, record)
    return record


def mark_cancelled(run_dir: str | Path, reason: str) -> dict:
    """Record from outside the job that it was cancelled (``scancel``, a job SLURM lost): status
    ``cancelled`` and ``reason``, the rest of ``metrics.json`` kept; written atomically."""
    return _rewrite_record(run_dir, status="cancelled", reason=reason)


def mark_failed(run_dir: str | Path, error: str) -> dict:
    """Record from outside the job that it failed where it could not say so itself (killed by the
    scheduler: out of memory, node failure, time limit without requeue): status ``failed``, ``error``."""
    return _rewrite_record(run_dir, status="failed", error=error)


# ------------------------------------------------------------------------------------------ reading


def _load_yaml(path: Path) -> Any:
    """A YAML file's content, or None when it is missing or unreadable."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(path) as fh:
            return yaml.load(fh, Loader=loader)
    except (OSError, yaml.YAMLError):
        return None


@dataclass
class Run:
    """What a run directory says, as far as it says it (a missing file reads as empty)."""

    dir: Path
    status: str
    """pending (no metrics.json yet), running, completed or failed (killed jobs included)."""
    record: dict = field(default_factory=dict)
    """metrics.json as written."""
    config: dict = field(default_factory=dict)
    """.hydra/config.yaml: the composed config, interpolations unresolved."""
    overrides: list[str] = field(default_factory=list)
    hydra: dict = field(default_factory=dict)
    """The ``hydra`` node of .hydra/hydra.yaml."""
    error: str | None = None
    killed: bool = False
    unreadable: str | None = None
    """Why metrics.json could not be read (not JSON, not an object, an OSError): the run reads as failed."""

    @property
    def metrics(self) -> dict:
        metrics = self.record.get("metrics")
        return metrics if isinstance(metrics, dict) else {}

    @property
    def monitor(self) -> str | None:
        task = self.config.get("task")
        return self.record.get("monitor") or (task.get("monitor") if isinstance(task, dict) else None)

    @property
    def choices(self) -> dict:
        """Hydra's group choices (``head: mlp``), without Hydra's own groups."""
        choices = (self.hydra.get("runtime") or {}).get("choices") or {}
        return {k: v for k, v in choices.items() if not str(k).startswith("hydra/")}

    @property
    def config_file(self) -> Path:
        return self.dir / HYDRA_DIR / "config.yaml"

    @property
    def labels(self) -> list[str] | None:
        try:
            return json.loads((self.dir / LABELS).read_text())["labels"]
        except (OSError, ValueError, KeyError, TypeError):
            return self.record.get("labels")

    @property
    def checkpoints(self) -> dict[str, Path]:
        """``last`` and ``best`` (those present)."""
        folder = self.dir / "checkpoints"
        found = {"last": folder / "last.ckpt", "best": folder / "best.ckpt"}
        best = self.record.get("best_checkpoint")
        if best:  # by name in this dir: a copied or moved run must not read the original's file
            found["best"] = folder / Path(best).name
        return {name: path for name, path in found.items() if path.is_file()}

    @property
    def model_dir(self) -> Path | None:
        folder = self.dir / "model"
        return folder if (folder / "config.json").is_file() else None


def is_run_dir(path: Path) -> bool:
    return (path / HYDRA_DIR).is_dir() or (path / METRICS).is_file()


def load_run(path: str | Path) -> Run:
    """Read a run directory; never raises for missing or damaged files (they read as empty or failed)."""
    path = Path(path).expanduser().resolve()
    hydra_dir = path / HYDRA_DIR
    overrides = _load_yaml(hydra_dir / "overrides.yaml") or []
    config = _load_yaml(hydra_dir / "config.yaml") or {}
    hydra = (_load_yaml(hydra_dir / "hydra.yaml") or {}).get("hydra") or {}
    run = Run(
        dir=path,
        status="pending",
        config=config if isinstance(config, dict) else {},
        overrides=[str(o) for o in overrides] if isinstance(overrides, list) else [],
        hydra=hydra if isinstance(hydra, dict) else {},
    )
    metrics_file = path / METRICS
    if not metrics_file.is_file():
        return run
    try:
        record = json.loads(metrics_file.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        record = {"status": "failed", "error": f"unreadable {METRICS}: {err}"}
        run.unreadable = str(err)
    run.record = record
    run.status = str(record.get("status") or "failed")
    run.error = record.get("error")
    if run.status == "running" and process_gone(record.get("host"), record.get("pid"), record.get("started")):
        run.status = "failed"
        run.error = (
            f"killed: pid {record.get('pid')} on {record.get('host')} is gone but the run never finished"
        )
        run.killed = True
    return run


def find_runs(root: str | Path) -> list[Path]:
    """Run directories at or under ``root``, in natural order; a run dir's own subfolders are skipped."""
    root = Path(root)
    if is_run_dir(root):
        return [root]
    found = []
    for current, dirs, _ in os.walk(root):
        here = Path(current)
        if here != root and is_run_dir(here):
            found.append(here)
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
    return sorted(found, key=lambda p: natural_key(str(p.relative_to(root))))


def natural_key(text: str) -> list:
    """Sort key: '2' < '10'."""
    import re

    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part
    ]


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), from /proc; None where that is unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime"):
                return int(line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_gone(host: Any, pid: Any, started: Any = None) -> bool:
    """True when a 'running' job's process is known to be dead: this host and no such pid.

    A live pid that started after the job did (the pid was reused) counts as dead too.
    A job on another host is never judged.
    """
    if not host or host != socket.gethostname() or not isinstance(pid, int) or isinstance(pid, bool):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return False  # PermissionError: it exists (another user's)
    except OSError:
        return False
    try:
        started_at = datetime.strptime(str(started), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return False
    began = _process_start(pid)
    return began is not None and began > started_at + 2


def sweep_jobs(sweep_dir: str | Path) -> dict[str, list[str]]:
    """A line per job of a sweep dir (``<name> (<overrides>)``, then ``: <status>: <why>`` unless it
    completed), in natural order, under ``completed``, ``failed`` (a job that never wrote metrics.json
    included), ``cancelled`` and ``unfinished`` (running, requeued)."""
    found: dict[str, list[str]] = {"completed": [], "failed": [], "cancelled": [], "unfinished": []}
    jobs = [p for p in Path(sweep_dir).iterdir() if (p / HYDRA_DIR).is_dir()]
    for job in sorted(jobs, key=lambda p: natural_key(p.name)):
        run = load_run(job)
        line = f"{job.name} ({' '.join(run.overrides)})"
        if run.status == "completed":
            found["completed"].append(line)
            continue
        why = run.error or ""
        if run.status == "pending":
            why = "no metrics.json: killed before it started?"
        elif run.status == "cancelled":
            why = run.record.get("reason") or why
        elif run.status == "requeued":
            why = f"attempt {run.record.get('attempt', '?')}"
        status = "failed" if run.status == "pending" else run.status
        kind = {"cancelled": "cancelled", "running": "unfinished", "requeued": "unfinished"}
        found[kind.get(status, "failed")].append(f"{line}: {status}: {why}".rstrip(": "))
    return found


def sweep_summary(sweep_dir: str | Path) -> tuple[list[str], list[str]]:
    """Lines naming each job of a sweep dir that did not complete, and those that did."""
    jobs = sweep_jobs(sweep_dir)
    return jobs["failed"] + jobs["cancelled"] + jobs["unfinished"], jobs["completed"]
