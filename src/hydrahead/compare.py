"""Compare the jobs of one or more sweeps: one table (and one plot) per set of sweeps.

The library behind ``hydrahead-compare`` (:mod:`hydrahead.cli.compare`). Every run directory
under the given directories is read through :func:`hydrahead.rundir.load_run` (a run dir's own
subfolders are never searched); the jobs are grouped by the keys the sweep varied (read from each
job's ``.hydra/overrides.yaml``; a key missing from a job's overrides takes the job's group choice
or config value, so several sweeps compare too), and the metric is aggregated over seeds: mean,
sample std, n (completed jobs), plus the failed and still running jobs.

:func:`run_compare` writes ``comparison.csv``, ``comparison.md`` (sorted by the metric) and
``comparison.png`` (bars with std error bars over a categorical key; lines over a numeric key such
as ``head.layer``) and prints the table. Works on a sweep in progress: a job without
``metrics.json`` is pending, a ``running`` job whose process is gone (this host, dead pid) is failed.

**Control tasks** (Hewitt & Liang 2019). When any job has ``task.control`` true, each real job is
paired with its *control twin*: the job whose value for every measured override key (those of any
job's ``overrides.yaml``, less ``task.control``; a key a job does not override takes its config
value) and whose ``seed`` are the same, anywhere in the compared sweeps (several candidates: the
same sweep's, completed, first). The rows are then grouped by the swept keys without
``task.control`` (pass ``--by ...,task.control`` for the plain per-kind table instead) and hold:

- the real metric's mean ± std over *all* completed real jobs of the row, and the control metric's
  over all completed control jobs (``real_n``, ``control_n``): a job whose twin failed still counts
  for its own kind's mean;
- selectivity = metric(real) − metric(control), mean ± std over the *complete pairs* only (both
  twins completed with the metric): ``n`` = ``pairs``;
- ``unpaired``: completed jobs without a completed twin (no twin at all, or a twin that failed, is
  running or pending), each listed with its reason under the table (never dropped silently).
  Failed, running and pending jobs count under ``failed`` / ``running`` as without controls.

With ``--sort selectivity`` the rows sort by selectivity instead of the real metric; in both
directions as the metric (lower kbits are better, so a more negative selectivity is too).

**Majority-class baseline.** When completed jobs carry ``baselines.majority[<metric>]`` (the
score of always predicting train's most frequent class): its mean over the real jobs (a note says
so when they differ, i.e. the jobs are on different data), with controls also the control jobs' own
majority. It is never a group and never sorts: the printed table ends with a ``majority`` row
(``majority`` in the first key column, ``-`` in the others, in italics below a line),
``comparison.csv`` gets the columns ``majority`` (and ``control_majority``) on every row,
``comparison.md`` a sentence under its table, and the plot a dashed grey line.

Lower is better for a metric named like a loss, ``kbits`` (MDL codelengths), ``ece``, ``brier`` or
``nll`` (the monitor goes by ``task.mode``); higher otherwise (``mdl/compression``, accuracies).

**Calibration.** Beside the metric, the mean ``ece`` and ``brier`` of the same split (``val/acc`` ->
``val/ece``, ``val/brier``, and ``val/ece_calibrated`` for runs with ``calibrate=temperature``) where
the jobs report them: extra columns in the table, the CSV and the markdown; ``--metric val/ece``
compares on calibration itself.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydrahead.rundir import find_runs, load_run, measures, natural_key

OUTPUT_NAMES = ("comparison.csv", "comparison.md", "comparison.png")
CONTROL_KEY = "task.control"
LOWER_IS_BETTER = frozenset({"loss", "kbits", "bits", "ece", "brier", "nll"})
"""Name parts (split at / _ - .) of metrics where lower is better; any name containing "loss" too."""
CONTROL_CSV_COLUMNS = [
    "real_mean", "real_std", "control_mean", "control_std", "selectivity_mean", "selectivity_std",
    "pairs", "real_n", "control_n", "unpaired", "failed", "running",
]  # fmt: skip
"""comparison.csv's columns after the key columns with controls (then ``missing``, ``seeds``)."""
_UNKNOWN = object()
UNFINISHED = ("running", "pending", "requeued")
"""Statuses counted under ``running``: the job may still complete. Failed and cancelled count as failed."""


class CompareError(Exception):
    """Nothing to compare (exit 2)."""


# ----------------------------------------------------------------------------------------- runs


def parse_overrides(lines: list[str]) -> dict[str, Any]:
    """``["head=mlp", "++trainer.x=2"]`` -> ``{"head": "mlp", "trainer.x": 2}`` (Hydra's grammar)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed: dict[str, Any] = {}
    for line in lines or []:
        line = str(line)
        try:
            override = parser.parse_override(line)
            key = override.key_or_group + (f"@{override.package}" if override.package else "")
            if override.is_delete():
                parsed[key] = None
                continue
            value = override.value()
        except Exception:  # not Hydra syntax (hand-written): split at the first '='
            key, _, value = line.lstrip("+~").partition("=")
        parsed[key] = value
    return parsed


def resolved(config: dict) -> dict:
    """The saved config with every interpolation that resolves outside Hydra resolved (the
    ``hh.*`` defaults such as ``${hh.if_frozen:...}``); the others (``${hydra:...}``) stay as written."""
    from omegaconf import OmegaConf

    from hydrahead.config.resolvers import register_resolvers

    if not config or "${" not in str(config):
        return config
    register_resolvers()
    try:
        tree = OmegaConf.create(config)
    except Exception:
        return config

    def walk(node, path: str):
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, str) and "${" in node:
            value = OmegaConf.select(tree, path, throw_on_resolution_failure=False)
            return (
                node
                if value is None
                else OmegaConf.to_container(value)
                if OmegaConf.is_config(value)
                else value
            )
        return node

    return walk(config, "")


def read_job(job_dir: Path, sweep: Path) -> dict:
    """One job, flattened for grouping: status, metrics, overrides (parsed), config, group choices.

    Built on :func:`hydrahead.rundir.load_run`, so it never raises on missing or damaged files.
    """
    run = load_run(job_dir)
    run.config = resolved(run.config)
    task = run.config.get("task") if isinstance(run.config.get("task"), dict) else {}
    job: dict = {
        "dir": str(job_dir),
        "sweep": str(sweep),
        "name": str(job_dir.relative_to(sweep)) if job_dir != sweep else job_dir.name,
        "status": run.status,
        "override_list": run.overrides,
        "overrides": parse_overrides(run.overrides),
        "config": run.config,
        "choices": run.choices,
        "metrics": run.metrics,
        "monitor": run.monitor,
        "mode": task.get("mode"),
        # a cancelled job's why is its reason (scancel, lost by SLURM), not the SIGTERM it died of
        "error": (run.record.get("reason") if run.status == "cancelled" else None) or run.error,
        "attempt": run.record.get("attempt"),
        "host": run.record.get("host"),
        "pid": run.record.get("pid"),
        "killed": run.killed,
        "baselines": run.record.get("baselines") if isinstance(run.record.get("baselines"), dict) else {},
    }
    job["seed"] = value_of(job, "seed")
    return job


def collect_runs(dirs: list[str | Path]) -> list[dict]:
    """Every job under every directory (union; each job remembers its sweep). Raises CompareError."""
    runs = []
    for given in dirs:
        root = Path(given).expanduser().resolve()
        if not root.is_dir():
            raise CompareError(f"{given}: no such directory")
        runs.extend(read_job(job, root) for job in find_runs(root))
    return runs


# ------------------------------------------------------------------------------------- grouping


def _lookup(config: dict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _UNKNOWN
        node = node[part]
    return node


def value_of(run: dict, key: str) -> Any:
    """The job's value for ``key``: its override, else its group choice, else its config value."""
    if key == "sweep":
        return Path(run["sweep"]).name
    if key in run["overrides"]:
        return run["overrides"][key]
    if key in run["choices"]:
        return run["choices"][key]
    return _lookup(run["config"], key)


def unknown_keys(runs: list[dict], keys: list[str]) -> list[str]:
    """Those of ``keys`` that no job has a value for (a typo in ``--by``, say)."""
    return [key for key in keys if all(value_of(r, key) is _UNKNOWN for r in runs)]


def format_value(value: Any) -> str:
    if value is _UNKNOWN:
        return "?"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def swept_keys(runs: list[dict]) -> list[str]:
    """Override keys with more than one known value across the jobs (in order of first appearance).

    A job that cannot tell its value (no .hydra/, say) does not make a key swept by itself.
    """
    candidates: list[str] = []
    for run in runs:
        for key in run["overrides"]:
            if key not in candidates and measures(key):
                candidates.append(key)
    swept = []
    for key in candidates:
        values = {format_value(v) for v in (value_of(r, key) for r in runs) if v is not _UNKNOWN}
        if len(values) > 1:
            swept.append(key)
    return swept


def lower_is_better(metric: str) -> bool:
    """True for a loss, a codelength (``mdl/online_kbits``), ``ece``, ``brier`` or ``nll``."""
    name = metric.lower()
    return "loss" in name or bool(LOWER_IS_BETTER & set(re.split(r"[/_.\-]", name)))


def is_control(run: dict) -> bool:
    """Whether the job trained on the control task (``task.control`` true, overridden or in its config)."""
    return format_value(value_of(run, CONTROL_KEY)) == "true"


def metric_value(run: dict, metric: str) -> float | None:
    """The job's value of ``metric`` when it completed with one, else None."""
    value = run["metrics"].get(metric) if run["status"] == "completed" else None
    return float(value) if _is_number(value) else None


def find_twins(runs: list[dict]) -> dict[str, dict]:
    """Real job <-> control job: the same value for every measured override key but ``task.control``,
    and the same seed. Maps each paired job's dir to its twin (both ways); a job without one is absent.

    Several candidates for one job (a config run twice): the one in the same sweep, completed, first.
    """
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run["overrides"] if k not in keys and k != CONTROL_KEY and measures(k)]
    sides: dict[tuple, tuple[list[dict], list[dict]]] = {}
    for run in runs:
        twin_key = (tuple(format_value(value_of(run, k)) for k in keys), format_value(run["seed"]))
        sides.setdefault(twin_key, ([], []))[is_control(run)].append(run)
    twins: dict[str, dict] = {}
    for reals, controls in sides.values():
        for real in sorted(reals, key=lambda r: (r["status"] != "completed", natural_key(r["dir"]))):
            if not controls:
                break
            twin = min(
                controls,
                key=lambda c, r=real: (
                    c["sweep"] != r["sweep"],
                    c["status"] != "completed",
                    natural_key(c["dir"]),
                ),
            )
            controls.remove(twin)
            twins[real["dir"]], twins[twin["dir"]] = twin, real
    return twins


def unpaired_reason(run: dict, twins: dict[str, dict], metric: str) -> str | None:
    """Why the job is in no complete pair ("no control twin", "control twin failed: DIR"), else None."""
    other = "real" if is_control(run) else "control"
    twin = twins.get(run["dir"])
    if twin is None:
        return f"no {other} twin"
    if twin["status"] != "completed":
        return f"{other} twin {twin['status']}: {twin['dir']}"
    if metric_value(twin, metric) is None:
        return f"{other} twin has no {metric}: {twin['dir']}"
    return None


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    return (statistics.fmean(values) if values else None), (
        statistics.stdev(values) if len(values) > 1 else None
    )


def control_stats(members: list[dict], twins: dict[str, dict], metric: str) -> dict:
    """A row's control fields: the control metric over its completed control jobs, selectivity
    (real - control) over its complete pairs (``n`` = ``pairs``, ``seeds`` theirs), and counts."""
    reals = [r for r in members if not is_control(r) and metric_value(r, metric) is not None]
    controls = [r for r in members if is_control(r) and metric_value(r, metric) is not None]
    paired = [r for r in reals if unpaired_reason(r, twins, metric) is None]
    diffs = [metric_value(r, metric) - metric_value(twins[r["dir"]], metric) for r in paired]
    control_mean, control_std = _mean_std([metric_value(r, metric) for r in controls])
    selectivity_mean, selectivity_std = _mean_std(diffs)
    return {
        "control_mean": control_mean,
        "control_std": control_std,
        "selectivity_mean": selectivity_mean,
        "selectivity_std": selectivity_std,
        "pairs": len(paired),
        "n": len(paired),
        "real_n": len(reals),
        "control_n": len(controls),
        "unpaired": sum(unpaired_reason(r, twins, metric) is not None for r in reals + controls),
        "seeds": sorted((format_value(r["seed"]) for r in paired), key=natural_key),
    }


def unpaired_runs(runs: list[dict], twins: dict[str, dict], metric: str) -> list[str]:
    """One line ("real: DIR — no control twin") per completed job with the metric in no complete pair."""
    lines = []
    for run in runs:
        reason = unpaired_reason(run, twins, metric) if metric_value(run, metric) is not None else None
        if reason:
            lines.append(f"{'control' if is_control(run) else 'real'}: {run['dir']} — {reason}")
    return lines


def majority_baseline(runs: list[dict], metric: str, keys: list[str], controls: bool = False) -> dict | None:
    """The ``majority`` baseline row: ``baselines.majority[metric]`` averaged over the completed real
    jobs (and with ``controls`` over the control jobs, into ``control_mean``); None when none has it.

    ``note`` (the printed row's seeds cell) names the class (``label``), and says so when the jobs
    disagree (``spread``)."""
    found: dict[bool, list[tuple[float, str]]] = {False: [], True: []}
    for run in runs:
        majority = run["baselines"].get("majority") if run["status"] == "completed" else None
        value = majority.get(metric) if isinstance(majority, dict) else None
        if _is_number(value) and (controls or not is_control(run)):
            found[is_control(run)].append((float(value), format_value(majority.get("label", "?"))))
    if not found[False] and not found[True]:
        return None
    values = [v for v, _ in found[False]]
    control_values = [v for v, _ in found[True]]
    labels = sorted({label for _, label in found[False]}, key=natural_key)
    label = f" {labels[0]!r}" if len(labels) == 1 else ""
    differ = len(set(values)) > 1
    spread = f"; the jobs differ ({min(values):.4f}-{max(values):.4f}): mean shown" if differ else ""
    mean, std = _mean_std(values)
    control_mean, control_std = _mean_std(control_values)
    return {
        "baseline": "majority",
        "keys": {k: "majority" if i == 0 else "-" for i, k in enumerate(keys)},
        "mean": mean,
        "std": std if differ else None,
        "n": len(values),
        "control_mean": control_mean,
        "control_std": control_std if len(set(control_values)) > 1 else None,
        "selectivity_mean": None,
        "selectivity_std": None,
        "pairs": None,
        "real_n": len(values),
        "control_n": len(control_values),
        "unpaired": None,
        "failed": None,
        "running": None,
        "missing": None,
        "seeds": [],
        "note": f"baseline: majority class{label} of train{spread}",
        "label": label.strip(),
        "spread": spread,
    }


@dataclass
class Comparison:
    metric: str
    descending: bool
    keys: list[str]
    rows: list[dict]
    runs: list[dict]
    sweeps: list[str]
    monitor: str | None = None
    plot_kind: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    controls: bool = False
    """Control-task mode: rows pair real and control jobs and report selectivity."""
    baseline: dict | None = None
    """The majority-class baseline (never in ``rows``, never sorted; printed as the last row), or None."""
    unpaired: list[str] = field(default_factory=list)
    """With controls: one line per completed job in no complete pair, with the reason."""
    sort: str = "metric"
    """"metric" (the real metric) or "selectivity"."""
    extras: list[str] = field(default_factory=list)
    """Calibration beside the metric: the same split's ``ece`` and ``brier`` (and their
    ``_calibrated`` values) where jobs have them; a mean per row (real jobs), never sorted on."""

    @property
    def show_missing(self) -> bool:
        return any(row["missing"] for row in self.rows)


def default_metric(runs: list[dict]) -> str | None:
    monitors = Counter(r["monitor"] for r in runs if r.get("monitor"))
    return monitors.most_common(1)[0][0] if monitors else None


def compare(
    runs: list[dict],
    metric: str | None = None,
    by: list[str] | None = None,
    sweeps: list[str] | None = None,
    sort: str = "metric",
) -> Comparison:
    """Group ``runs`` by ``by`` (default: the swept keys) and aggregate ``metric`` over seeds.

    With control jobs (and ``task.control`` not in ``by``): pair them with their real twins and
    report selectivity (see the module docstring); ``sort="selectivity"`` orders the rows by it.
    """
    if not runs:
        raise CompareError("no runs found (no directory with .hydra/ or metrics.json)")
    monitor = default_metric(runs)
    metric = metric or monitor
    if not metric:
        raise CompareError("no job names its monitored metric; pass --metric")
    completed = [r for r in runs if r["status"] == "completed"]
    if completed and not any(_is_number(r["metrics"].get(metric)) for r in completed):
        available = sorted({k for r in completed for k in r["metrics"]})
        raise CompareError(
            f"no completed job has metric {metric!r}; available: {', '.join(available) or 'none'}"
        )
    if metric == monitor:
        modes = Counter(r["mode"] for r in runs if r.get("mode") in ("max", "min"))
        descending = (modes.most_common(1)[0][0] if modes else "max") == "max"
    else:
        descending = not lower_is_better(metric)
    controls = any(is_control(r) for r in runs) and CONTROL_KEY not in (by or [])
    if sort not in ("metric", "selectivity"):
        raise CompareError(f"--sort {sort}: expected metric or selectivity")
    if sort == "selectivity" and not controls:
        raise CompareError("--sort selectivity needs control jobs (task.control=true)")
    keys = [k for k in (by or swept_keys(runs)) if not (controls and k == CONTROL_KEY)]
    twins = find_twins(runs) if controls else {}

    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(tuple(format_value(value_of(run, k)) for k in keys), []).append(run)
    rows = []
    for labels, members in groups.items():
        values, seeds = [], []
        row = {
            "keys": dict(zip(keys, labels)),
            "raw": {k: value_of(members[0], k) for k in keys},
            "failed": 0,
            "running": 0,
            "missing": 0,
            "runs": [m["dir"] for m in members],
        }
        for run in members:
            if run["status"] == "completed":
                value = run["metrics"].get(metric)
                if not _is_number(value):
                    row["missing"] += 1
                elif not (controls and is_control(run)):  # with controls: the real jobs' mean
                    values.append(float(value))
                    seeds.append(format_value(run["seed"]))
            elif run["status"] in UNFINISHED:
                row["running"] += 1
            else:
                row["failed"] += 1
        row["n"] = len(values)
        row["mean"] = statistics.fmean(values) if values else None
        row["std"] = statistics.stdev(values) if len(values) > 1 else None
        row["seeds"] = sorted(seeds, key=natural_key)
        if controls:
            row.update(control_stats(members, twins, metric))
        rows.append(row)

    extras = calibration_metrics(completed, metric)
    for row in rows:
        members = [r for r in runs if r["dir"] in set(row["runs"]) and r["status"] == "completed"]
        members = [r for r in members if not (controls and is_control(r))]
        row["extras"] = {}
        for name in extras:
            found = [float(r["metrics"][name]) for r in members if _is_number(r["metrics"].get(name))]
            row["extras"][name] = statistics.fmean(found) if found else None

    by_value = "selectivity_mean" if sort == "selectivity" else "mean"

    def order(row):
        labels = [natural_key(v) for v in row["keys"].values()]
        if row[by_value] is None:
            return (1, 0.0, labels)
        return (0, -row[by_value] if descending else row[by_value], labels)

    rows.sort(key=order)
    return Comparison(
        metric=metric,
        descending=descending,
        keys=keys,
        rows=rows,
        runs=runs,
        sweeps=sweeps or sorted({r["sweep"] for r in runs}),
        monitor=monitor,
        controls=controls,
        baseline=majority_baseline(runs, metric, keys, controls),
        unpaired=unpaired_runs(runs, twins, metric) if controls else [],
        sort=sort,
        extras=extras,
    )


CALIBRATION = ("ece", "brier", "ece_calibrated", "brier_calibrated")


def calibration_metrics(completed: list[dict], metric: str) -> list[str]:
    """The calibration metrics of ``metric``'s split (``val/acc`` -> ``val/ece``, ...) that jobs report."""
    stage = metric.split("/", 1)[0] if "/" in metric else None
    if stage is None:
        return []
    names = [f"{stage}/{name}" for name in CALIBRATION if f"{stage}/{name}" != metric]
    return [name for name in names if any(_is_number(r["metrics"].get(name)) for r in completed)]


# -------------------------------------------------------------------------------------- outputs


def _num(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _count(value: int | None) -> str:
    return "" if value is None else str(value)


def table_rows(
    comp: Comparison, full_precision: bool = False, baseline_row: bool = False
) -> tuple[list[str], list[list[str]]]:
    """The header and the cells of every row; ``baseline_row``: the majority row (if any) last.

    ``full_precision`` (the CSV): repr() of the floats, ``missing`` always, with controls the column
    names of :data:`CONTROL_CSV_COLUMNS`, and with a baseline the columns ``majority`` (and
    ``control_majority``) last, the same on every row.
    """
    header = [*comp.keys] if comp.keys else ["group"]
    if comp.controls and full_precision:
        header += CONTROL_CSV_COLUMNS
    elif comp.controls:
        header += [f"{comp.metric} real", "std", "control", "std", "selectivity", "std", "pairs"]
        header += ["real n", "control n", "unpaired", "failed", "running"]
    else:
        header += [f"{comp.metric} mean", "std", "n", "failed", "running"]
    header += ["missing"] if comp.show_missing or full_precision else []
    header += comp.extras
    header += ["seeds"]
    majority: list[str] = []  # the baseline's fields that the CSV repeats on every row
    if full_precision and comp.baseline:
        majority = ["mean", "control_mean"] if comp.controls else ["mean"]
        header += ["majority", "control_majority"] if comp.controls else ["majority"]
    body = []
    fmt = (lambda v: "" if v is None else repr(v)) if full_precision else _num
    for row in [*comp.rows, *([comp.baseline] if comp.baseline and baseline_row else [])]:
        cells = [*row["keys"].values()] if comp.keys else [row.get("baseline") or "all"]
        cells += [fmt(row["mean"]), fmt(row["std"])]
        if comp.controls:
            cells += [
                fmt(row[k]) for k in ("control_mean", "control_std", "selectivity_mean", "selectivity_std")
            ]
            counts = ("pairs", "real_n", "control_n", "unpaired", "failed", "running")
        else:
            counts = ("n", "failed", "running")
        cells += [_count(row[k]) for k in counts]
        cells += [_count(row["missing"])] if comp.show_missing or full_precision else []
        cells += [fmt((row.get("extras") or {}).get(name)) for name in comp.extras]
        cells += [row.get("note") or " ".join(row["seeds"])]
        cells += [fmt(comp.baseline[k]) for k in majority]
        body.append(cells)
    return header, body


def _title(comp: Comparison) -> str:
    names = [Path(s).name for s in comp.sweeps]
    sweeps = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
    better = "higher" if comp.descending else "lower"
    if comp.controls:
        return (
            f"{comp.metric}: real vs control task, selectivity = real − control; mean ± std over seeds "
            f"({better} is better) — {sweeps}"
        )
    return f"{comp.metric}: mean ± std over seeds ({better} is better) — {sweeps}"


def baseline_text(comp: Comparison) -> str:
    """The majority baseline in a sentence (under the md table; the printed table's caption)."""
    row = comp.baseline or {}
    label = f" {row['label']}" if row.get("label") else ""
    text = (
        f"Baseline, not a job: always predicting train's majority class{label} scores {comp.metric} "
        f"{_num(row.get('mean'))} ({row.get('real_n', 0)} real jobs{row.get('spread', '')})"
    )
    if comp.controls:
        text += (
            f"; on the control task {_num(row.get('control_mean'))} ({row.get('control_n', 0)} control jobs)"
        )
    return text + "."


def _problems(comp: Comparison) -> list[str]:
    """A line per job that did not complete: ``<status>: <dir> — <why>`` (a cancelled job's reason,
    a requeued job's attempt, a running job's host and pid)."""
    lines = []
    for run in comp.runs:
        if run["status"] not in ("completed",):
            note = run["error"] or ("no metrics.json yet" if run["status"] == "pending" else "")
            if run["status"] == "running" and run.get("host"):
                note = f"on {run['host']}, pid {run.get('pid')}"
            if run["status"] == "requeued":
                note = f"attempt {run.get('attempt') or '?'}, waiting in the queue to run again"
            lines.append(f"{run['status']}: {run['dir']}" + (f" — {note}" if note else ""))
    return lines


def write_csv(comp: Comparison, path: Path) -> None:
    header, body = table_rows(comp, full_precision=True)
    if not comp.controls:
        header[len(comp.keys or ["group"])] = "mean"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["metric", *header])
        for cells in body:
            writer.writerow([comp.metric, *cells])


def write_markdown(comp: Comparison, path: Path) -> None:
    header, body = table_rows(comp)
    right = {i for i, name in enumerate(header) if i >= len(comp.keys or ["group"]) and name != "seeds"}
    lines = [
        f"# {_title(comp)}",
        "",
        f"Sweeps: {', '.join(comp.sweeps)}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]
    if comp.baseline:
        lines += ["", baseline_text(comp)]
    if comp.unpaired:
        lines += ["", "Not paired (in the means of their kind, not in selectivity):", ""]
        lines += [f"- {p}" for p in comp.unpaired]
    problems = _problems(comp)
    if problems:
        lines += ["", "Not completed:", ""] + [f"- {p}" for p in problems]
    path.write_text("\n".join(lines) + "\n")


def print_table(comp: Comparison) -> None:
    from rich.console import Console
    from rich.table import Table

    header, body = table_rows(comp, baseline_row=True)
    table = Table(title=_title(comp))
    nkeys = len(comp.keys or ["group"])
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if nkeys <= i and name != "seeds" else "left")
    for cells, row in zip(body, [*comp.rows, comp.baseline]):
        if row.get("baseline"):  # set apart below a line, in italics
            table.add_section()
            table.add_row(*cells, style="italic")
            table.caption = baseline_text(comp)
            continue
        style = "red" if row["failed"] and not row["n"] else None
        table.add_row(*cells, style=style)
    console = Console()
    if not console.is_terminal:  # a pipe or a log file: the table at its natural width, never cropped
        console = Console(width=max(console.width, 200))
    console.print(table)
    for line in comp.unpaired:
        console.print(f"not paired: {line}", style="yellow", highlight=False, markup=False)
    for line in _problems(comp):
        console.print(
            line,
            style="yellow" if line.startswith(tuple(UNFINISHED)) else "red",
            highlight=False,
            markup=False,
        )


def plot_kind(comp: Comparison) -> tuple[str, str | None, list[str]]:
    """("line" | "bar", x key, series keys): a line over the first numeric key, else bars."""
    if not comp.keys:
        return "bar", None, []
    numeric = [k for k in comp.keys if all(_is_number(row["raw"][k]) for row in comp.rows)]
    x = numeric[0] if numeric else comp.keys[0]
    return ("line" if numeric else "bar"), x, [k for k in comp.keys if k != x]


def _series(comp: Comparison, series_keys: list[str]) -> dict[str, list[dict]]:
    """Series label -> its rows (one series, label "", when there are no series keys)."""
    series: dict[str, list[dict]] = {}
    for row in comp.rows:
        label = ", ".join(
            row["keys"][k] if len(series_keys) == 1 else f"{k}={row['keys'][k]}" for k in series_keys
        )
        series.setdefault(label, []).append(row)
    return series


def _label(series: str, variant: str | None) -> str | None:
    """A legend entry: the series, and with controls which kind ("real", "control")."""
    if variant is None:
        return series or None
    if variant == "real":
        return series or "real"
    return f"{series}, {variant}" if series else variant


def _draw_lines(ax, comp: Comparison, series: dict[str, list[dict]], x_key: str, fields: list[tuple]) -> None:
    """One line per series and field ``(mean key, std key, variant, style)``; a series keeps its colour."""
    for i, (label, rows) in enumerate(series.items()):
        for mean, std, variant, style in fields:
            points = sorted((r for r in rows if r[mean] is not None), key=lambda r: r["raw"][x_key])
            if not points:
                continue
            ax.errorbar(
                [r["raw"][x_key] for r in points],
                [r[mean] for r in points],
                yerr=[r[std] or 0.0 for r in points],
                marker="o",
                capsize=4,
                color=f"C{i}",
                label=_label(label, variant),
                **style,
            )
    xs = sorted({row["raw"][x_key] for row in comp.rows})
    if xs and xs[0] > 0 and xs[-1] / xs[0] > 20:  # learning rates, batch sizes: a log axis
        ax.set_xscale("log")
    if len(xs) <= 20:
        ax.set_xticks(xs, [format_value(x) for x in xs])
    ax.set_xlabel(x_key)


def _draw_bars(
    ax, comp: Comparison, series: dict[str, list[dict]], x_key: str | None, fields: list[tuple]
) -> None:
    """Bars with std error bars: per category one bar per series and field, a series keeps its colour."""
    if len(series) <= 1:  # one series: bars in the table's (metric) order
        categories = [row["keys"][x_key] if x_key else "all" for row in comp.rows]
    else:
        categories = sorted({row["keys"][x_key] for row in comp.rows}, key=natural_key)
    width = 0.8 / max(1, len(series) * len(fields))
    for i, (label, rows) in enumerate(series.items()):
        by_cat = {(r["keys"][x_key] if x_key else "all"): r for r in rows}
        for f, (mean, std, variant, style) in enumerate(fields):
            slot = i * len(fields) + f
            pos, means, errs = [], [], []
            for j, cat in enumerate(categories):
                row = by_cat.get(cat)
                if row and row[mean] is not None:
                    pos.append(j - 0.4 + width * (slot + 0.5))
                    means.append(row[mean])
                    errs.append(row[std] or 0.0)
            ax.bar(
                pos, means, width, yerr=errs, capsize=4, color=f"C{i}", label=_label(label, variant), **style
            )
    ticks = categories
    if len(series) <= 1:
        ticks = [
            f"{c}\nn={r['n']}"
            + (f"\n{r['failed']} failed" if r["failed"] else "")
            + (f"\n{r['running']} running" if r["running"] else "")
            for c, r in zip(categories, comp.rows)
        ]
    ax.set_xticks(
        range(len(categories)),
        ticks,
        rotation=0 if len(categories) <= 6 else 30,
        ha="center" if len(categories) <= 6 else "right",
    )
    ax.set_xlabel(x_key or "")


def write_plot(comp: Comparison, path: Path) -> str:
    """The PNG; returns the kind drawn ("line" or "bar").

    With controls two panels: the metric (real solid, control dashed or hatched in the same colour)
    and selectivity. The majority baseline is a dashed grey line on the metric's panel.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    with matplotlib.rc_context({"text.parse_math": False}):  # "$" in a label is text, not TeX
        return _draw(comp, path)


def _draw(comp: Comparison, path: Path) -> str:
    import matplotlib.pyplot as plt

    kind, x_key, series_keys = plot_kind(comp)
    series = _series(comp, series_keys)
    control_style = {"linestyle": "--", "mfc": "none"} if kind == "line" else {"alpha": 0.45, "hatch": "//"}
    panels = [
        (
            comp.metric,
            [("mean", "std", "real" if comp.controls else None, {})]
            + ([("control_mean", "control_std", "control", control_style)] if comp.controls else []),
        )
    ]
    if comp.controls:
        panels.append(
            (
                f"selectivity ({comp.metric}: real − control)",
                [("selectivity_mean", "selectivity_std", None, {})],
            )
        )
    if kind == "line":  # one point per x value: the width follows the x axis, not the row count
        width = min(12.0, max(6.0, 0.6 * len({row["raw"][x_key] for row in comp.rows}) + 4))
    else:
        width = min(24.0, max(6.0, 1.2 * len(comp.rows) + 2))
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 4.8), squeeze=False)
    for ax, (ylabel, fields) in zip(axes[0], panels):
        if kind == "line":
            _draw_lines(ax, comp, series, x_key, fields)
        else:
            _draw_bars(ax, comp, series, x_key, fields)
        if not any(row[fields[0][0]] is not None for row in comp.rows):
            ax.text(0.5, 0.5, "no completed runs yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    ax = axes[0][0]
    baseline = comp.baseline or {}
    if baseline.get("mean") is not None:
        ax.axhline(baseline["mean"], linestyle="--", color="grey", label="majority class")
    if baseline.get("control_mean") is not None:
        ax.axhline(baseline["control_mean"], linestyle=":", color="grey", label="majority class (control)")
    if comp.controls:
        axes[0][1].axhline(0.0, color="black", linewidth=0.8)
    # an Optuna search (every job its own point) gets no legend: use --by
    if 1 < len(series) <= 12 or (len(series) <= 12 and (comp.controls or comp.baseline)):
        ax.legend(title=", ".join(series_keys) or None, fontsize="small")
    if comp.controls:
        fig.suptitle(_title(comp), fontsize="medium", wrap=True)
    else:
        ax.set_title(_title(comp), fontsize="medium", wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return kind


def run_compare(
    dirs: list[str | Path],
    metric: str | None = None,
    by: list[str] | None = None,
    out: str | Path | None = None,
    show: bool = True,
    sort: str = "metric",
) -> Comparison:
    """collect -> compare -> write csv/md/png (-> print). Raises CompareError when there is nothing."""
    runs = collect_runs(dirs)
    if not runs:
        raise CompareError(
            f"no runs under {', '.join(map(str, dirs))} (no directory with .hydra/ or metrics.json)"
        )
    sweeps = [str(Path(d).expanduser().resolve()) for d in dirs]
    comp = compare(runs, metric, by, sweeps=sweeps, sort=sort)
    out_dir = Path(out).expanduser().resolve() if out else Path(sweeps[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = (out_dir / name for name in OUTPUT_NAMES)
    write_csv(comp, csv_path)
    write_markdown(comp, md_path)
    comp.plot_kind = write_plot(comp, png_path)
    comp.files = {"csv": str(csv_path), "md": str(md_path), "png": str(png_path)}
    if show:
        print_table(comp)
        print(f"wrote {csv_path}, {md_path.name}, {png_path.name} ({comp.plot_kind} plot)")
    return comp
