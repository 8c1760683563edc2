"""``hydrahead-reproduce RUN_DIR``: re-run a finished run from its saved config and compare metrics.

The re-run never reads today's ``conf/``: it composes a primary config made of the run's saved
``.hydra/config.yaml`` (merged into the typed ``train_schema``, so the same validation applies)
plus the Hydra settings that shaped the run (``hydra.job.chdir``, the override_dirname settings,
the job name, env, logging), with ``hydra.run.dir`` pointing at a fresh directory. It runs as
``python -m hydrahead.cli.train --config-path <new dir> --config-name reproduction`` in a subprocess
whose working directory is the original run's (``hydra.runtime.cwd``, so relative paths in the
config mean what they meant), and always as a single run, also for a job of a multirun.

    hydrahead-reproduce outputs/runs/2026-01-01_12-00-00_ab12cd
    hydrahead-reproduce outputs/multiruns/<sweep>/3 --out /tmp/repro --atol 1e-4

Exit status: 0 the metrics match within ``|new - old| <= atol + rtol * |old|``; 1 they differ (a
diff is printed) or the re-run failed; 2 the directory is not a completed run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydrahead.rundir import Run, load_run

CONFIG_NAME = "reproduction"
# Hydra settings copied from the saved hydra.yaml: what shapes a run besides the task config.
# Not copied: mode, sweeper, launcher (a multirun job is reproduced as one run), runtime, overrides.hydra.
HYDRA_JOB_KEYS = ("name", "chdir", "env_set", "config")
HYDRA_TOP_KEYS = ("job_logging", "hydra_logging", "verbose", "output_subdir", "callbacks")
MOVED_TARGETS = {"hydrahead.train.SweepReport": "hydrahead.cli.train.SweepReport"}


class ReproduceError(Exception):
    """Not a reproducible run (exit 2)."""


def completed_run(run_dir: Path) -> Run:
    """The run at ``run_dir`` if it completed; ReproduceError (naming what is missing) otherwise."""
    run = load_run(run_dir)
    if not run.config_file.is_file():
        raise ReproduceError(f"{run.dir} is not a run directory: no .hydra/config.yaml")
    if run.status == "pending":
        raise ReproduceError(f"{run.dir} has no metrics.json: the run has not finished (or never started)")
    if run.unreadable:
        raise ReproduceError(f"{run.dir / 'metrics.json'} is not valid JSON: {run.unreadable}")
    if run.status != "completed":
        detail = f": {run.error}" if run.error else ""
        raise ReproduceError(
            f"{run.dir} did not complete (status {run.status!r}{detail}); nothing to reproduce"
        )
    return run


# --------------------------------------------------------------------------------------------
# Keys the schema does not know (added with ++trainer.<arg>= or +key=) cannot be merged into it
# from a config file (the schema is in struct mode); they go back on the command line as ++key=.


def _schema_extras(saved, schema, prefix: str = "") -> list[str]:
    """Dotted keys present in the saved config but not in the (struct) schema."""
    from omegaconf import DictConfig, OmegaConf

    extras = []
    schema_keys = set(schema.keys())  # `in` is False for a MISSING value; keys() is not
    for key in saved:
        path = f"{prefix}{key}"
        if key not in schema_keys:
            if OmegaConf.is_struct(schema) or OmegaConf.get_type(schema) not in (dict, None):
                extras.append(path)
            continue
        child_saved, child_schema = saved._get_node(key), schema._get_node(key)
        if isinstance(child_saved, DictConfig) and isinstance(child_schema, DictConfig):
            extras.extend(_schema_extras(child_saved, child_schema, f"{path}."))
    return extras


def _override_value(value: Any) -> str:
    """A Python/YAML value in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if not isinstance(value, float) or math.isfinite(value) else str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override_value(v)}" for k, v in value.items()) + "}"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def build_reproduction_config(run: Run, out_dir: Path) -> tuple[dict, list[str], list[str]]:
    """(primary config as a dict, ++ overrides for keys outside the schema, notes)."""
    from omegaconf import OmegaConf

    from hydrahead.config import TrainConfig

    notes: list[str] = []
    saved = OmegaConf.load(run.config_file)
    schema = OmegaConf.structured(TrainConfig)
    extras = _schema_extras(saved, schema)
    config = OmegaConf.to_container(saved, resolve=False)
    extra_overrides = []
    for key in extras:
        parent, _, leaf = key.rpartition(".")
        container = config
        for part in parent.split(".") if parent else []:
            container = container[part]
        extra_overrides.append(f"++{key}={_override_value(container.pop(leaf))}")
    # The run directory always follows the new run: never write into the original one.
    paths = config.setdefault("paths", {})
    if paths.get("output_dir") != "${hydra:runtime.output_dir}":
        notes.append(
            f"paths.output_dir was {paths.get('output_dir')!r}; the reproduction writes to its own dir"
        )
        paths["output_dir"] = "${hydra:runtime.output_dir}"

    saved_hydra = run.hydra
    hydra: dict = {
        "run": {"dir": str(out_dir)},
        "sweep": {"dir": str(out_dir / "multirun"), "subdir": "${hydra.job.num}"},
    }
    job = {k: saved_hydra["job"][k] for k in HYDRA_JOB_KEYS if k in saved_hydra.get("job", {})}
    job["env_copy"] = []  # env_set already holds what env_copy copied when the run started
    hydra["job"] = job
    for key in HYDRA_TOP_KEYS:
        if key in saved_hydra:
            hydra[key] = saved_hydra[key]
    for callback in (hydra.get("callbacks") or {}).values():  # classes that have moved since the run
        if isinstance(callback, dict) and callback.get("_target_") in MOVED_TARGETS:
            callback["_target_"] = MOVED_TARGETS[callback["_target_"]]
    # The new run's .hydra/overrides.yaml records the overrides that made the saved config.
    extra_keys = set(extras)
    hydra["overrides"] = {
        "task": [o for o in run.overrides if _override_key(o) not in extra_keys],
    }
    if not saved_hydra:
        notes.append("no .hydra/hydra.yaml: Hydra settings are the defaults")
    config["defaults"] = ["train_schema", "_self_"]
    config["hydra"] = hydra
    return config, extra_overrides, notes


def _override_key(override: str) -> str:
    key = override.split("=", 1)[0]
    return key.lstrip("+~")


# --------------------------------------------------------------------------------------------


def compare_metrics(old: dict, new: dict, rtol: float = 0.0, atol: float = 1e-6) -> list[dict]:
    """One row per metric key: key, old, new, delta, ok."""
    rows = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        if numeric:
            delta = b - a
            both_nan = math.isnan(a) and math.isnan(b)
            ok = both_nan or (math.isfinite(delta) and abs(delta) <= atol + rtol * abs(a)) or a == b
        else:
            delta, ok = None, a == b
        rows.append({"key": key, "old": a, "new": b, "delta": delta, "ok": ok})
    return rows


def _default_out(run_dir: Path) -> Path:
    base = run_dir / "reproductions" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out, i = base, 1
    while out.exists():
        out, i = base.with_name(f"{base.name}_{i}"), i + 1
    return out


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def reproduce(
    run_dir: Path, out: Path | None = None, rtol: float = 0.0, atol: float = 1e-6, quiet: bool = False
) -> dict:
    """Re-run ``run_dir`` into ``out``; returns {out, returncode, rows, ok, error}."""
    run = completed_run(run_dir)
    out = Path(out).expanduser().resolve() if out else _default_out(run.dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        # never over another run, nor next to a stray checkpoints/last.ckpt (the runner resumes from it)
        raise ReproduceError(f"{out} already exists and is not empty; pick another --out")
    config, extra_overrides, notes = build_reproduction_config(run, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{CONFIG_NAME}.yaml").write_text(_dump(config))
    cwd = Path((run.hydra.get("runtime") or {}).get("cwd") or os.getcwd())
    if not cwd.is_dir():
        notes.append(f"the original working directory {cwd} is gone; running from {out}")
        cwd = out
    cmd = [
        sys.executable,
        "-m",
        "hydrahead.cli.train",
        "--config-path",
        str(out),
        "--config-name",
        CONFIG_NAME,
        *extra_overrides,
    ]
    log_file = out / "reproduce.log"
    if not quiet:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        print(f"reproducing {run.dir} -> {out}", file=sys.stderr)
    with open(log_file, "w") as log:
        log.write("$ " + " ".join(cmd) + f"\n(cwd {cwd})\n\n")
        log.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    result: dict = {
        "source": str(run.dir),
        "out": str(out),
        "returncode": proc.returncode,
        "command": cmd,
        "cwd": str(cwd),
        "notes": notes,
        "rows": [],
        "ok": False,
        "error": None,
    }
    new = load_run(out)
    if proc.returncode != 0 or new.status != "completed":
        result["error"] = new.error or f"exit status {proc.returncode}; see {log_file}"
        result["log_tail"] = _tail(log_file)
    else:
        result["rows"] = compare_metrics(run.metrics, new.metrics, rtol, atol)
        result["ok"] = bool(result["rows"]) and all(r["ok"] for r in result["rows"])
        if not result["rows"]:
            result["error"] = "neither run recorded any metrics"
    (out / "reproduction.json").write_text(
        json.dumps({k: v for k, v in result.items() if k != "log_tail"}, indent=2, default=str)
    )
    return result


def _dump(config: dict) -> str:
    import yaml

    header = "# Written by hydrahead-reproduce: the saved config of the source run + its Hydra settings.\n"
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
