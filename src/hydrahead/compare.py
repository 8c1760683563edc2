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
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydrahead.rundir import find_runs, load_run, measures, natural_key

OUTPUT_NAMES = ("comparison.csv", "comparison.md", "comparison.png")
_UNKNOWN = object()


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


def read_job(job_dir: Path, sweep: Path) -> dict:
    """One job, flattened for grouping: status, metrics, overrides (parsed), config, group choices.

    Built on :func:`hydrahead.rundir.load_run`, so it never raises on missing or damaged files.
    """
    run = load_run(job_dir)
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
        "error": run.error,
        "host": run.record.get("host"),
        "pid": run.record.get("pid"),
        "killed": run.killed,
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

    @property
    def show_missing(self) -> bool:
        return any(row["missing"] for row in self.rows)


def default_metric(runs: list[dict]) -> str | None:
    monitors = Counter(r["monitor"] for r in runs if r.get("monitor"))
    return monitors.most_common(1)[0][0] if monitors else None


def compare(
    runs: list[dict], metric: str | None = None, by: list[str] | None = None, sweeps: list[str] | None = None
) -> Comparison:
    """Group ``runs`` by ``by`` (default: the swept keys) and aggregate ``metric`` over seeds."""
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
        descending = "loss" not in metric
    keys = list(by) if by else swept_keys(runs)

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
                if _is_number(value):
                    values.append(float(value))
                    seeds.append(format_value(run["seed"]))
                else:
                    row["missing"] += 1
            elif run["status"] in ("running", "pending"):
                row["running"] += 1
            else:
                row["failed"] += 1
        row["n"] = len(values)
        row["mean"] = statistics.fmean(values) if values else None
        row["std"] = statistics.stdev(values) if len(values) > 1 else None
        row["seeds"] = sorted(seeds, key=natural_key)
        rows.append(row)

    def order(row):
        labels = [natural_key(v) for v in row["keys"].values()]
        if row["mean"] is None:
            return (1, 0.0, labels)
        return (0, -row["mean"] if descending else row["mean"], labels)

    rows.sort(key=order)
    return Comparison(
        metric=metric,
        descending=descending,
        keys=keys,
        rows=rows,
        runs=runs,
        sweeps=sweeps or sorted({r["sweep"] for r in runs}),
        monitor=monitor,
    )


# -------------------------------------------------------------------------------------- outputs


def _num(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def table_rows(comp: Comparison, full_precision: bool = False) -> tuple[list[str], list[list[str]]]:
    header = [*comp.keys] if comp.keys else ["group"]
    header += [f"{comp.metric} mean", "std", "n", "failed", "running"]
    header += ["missing"] if comp.show_missing or full_precision else []
    header += ["seeds"]
    body = []
    for row in comp.rows:
        cells = [*row["keys"].values()] if comp.keys else ["all"]
        fmt = (lambda v: "" if v is None else repr(v)) if full_precision else _num
        cells += [fmt(row["mean"]), fmt(row["std"]), str(row["n"]), str(row["failed"]), str(row["running"])]
        cells += [str(row["missing"])] if comp.show_missing or full_precision else []
        cells += [" ".join(row["seeds"])]
        body.append(cells)
    return header, body


def _title(comp: Comparison) -> str:
    names = [Path(s).name for s in comp.sweeps]
    sweeps = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
    better = "higher" if comp.descending else "lower"
    return f"{comp.metric}: mean ± std over seeds ({better} is better) — {sweeps}"


def _problems(comp: Comparison) -> list[str]:
    lines = []
    for run in comp.runs:
        if run["status"] not in ("completed",):
            note = run["error"] or ("no metrics.json yet" if run["status"] == "pending" else "")
            if run["status"] == "running" and run.get("host"):
                note = f"on {run['host']}, pid {run.get('pid')}"
            lines.append(f"{run['status']}: {run['dir']}" + (f" — {note}" if note else ""))
    return lines


def write_csv(comp: Comparison, path: Path) -> None:
    header, body = table_rows(comp, full_precision=True)
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
    problems = _problems(comp)
    if problems:
        lines += ["", "Not completed:", ""] + [f"- {p}" for p in problems]
    path.write_text("\n".join(lines) + "\n")


def print_table(comp: Comparison) -> None:
    from rich.console import Console
    from rich.table import Table

    header, body = table_rows(comp)
    table = Table(title=_title(comp))
    nkeys = len(comp.keys or ["group"])
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if nkeys <= i and name != "seeds" else "left")
    for cells, row in zip(body, comp.rows):
        style = "red" if row["failed"] and not row["n"] else None
        table.add_row(*cells, style=style)
    console = Console()
    if not console.is_terminal:  # a pipe or a log file: the table at its natural width, never cropped
        console = Console(width=max(console.width, 200))
    console.print(table)
    for line in _problems(comp):
        console.print(
            line,
            style="yellow" if line.startswith(("running", "pending")) else "red",
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


def write_plot(comp: Comparison, path: Path) -> str:
    """The PNG; returns the kind drawn ("line" or "bar")."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    kind, x_key, series_keys = plot_kind(comp)
    series: dict[str, list[dict]] = {}
    for row in comp.rows:
        label = ", ".join(
            row["keys"][k] if len(series_keys) == 1 else f"{k}={row['keys'][k]}" for k in series_keys
        )
        series.setdefault(label, []).append(row)
    fig, ax = plt.subplots(figsize=(min(24.0, max(6.0, 1.2 * len(comp.rows) + 2)), 4.8))
    if kind == "line":
        for label, rows in series.items():
            rows = sorted((r for r in rows if r["mean"] is not None), key=lambda r: r["raw"][x_key])
            if not rows:
                continue
            ax.errorbar(
                [r["raw"][x_key] for r in rows],
                [r["mean"] for r in rows],
                yerr=[r["std"] or 0.0 for r in rows],
                marker="o",
                capsize=4,
                label=label or None,
            )
        xs = sorted({row["raw"][x_key] for row in comp.rows})
        if xs and xs[0] > 0 and xs[-1] / xs[0] > 20:  # learning rates, batch sizes: a log axis
            ax.set_xscale("log")
        if len(xs) <= 20:
            ax.set_xticks(xs, [format_value(x) for x in xs])
        ax.set_xlabel(x_key)
    else:
        if len(series) <= 1:  # one series: bars in the table's (metric) order
            categories = [row["keys"][x_key] if x_key else "all" for row in comp.rows]
        else:
            categories = sorted({row["keys"][x_key] for row in comp.rows}, key=natural_key)
        width = 0.8 / max(1, len(series))
        for i, (label, rows) in enumerate(series.items()):
            by_cat = {(r["keys"][x_key] if x_key else "all"): r for r in rows}
            pos, means, errs = [], [], []
            for j, cat in enumerate(categories):
                row = by_cat.get(cat)
                if row and row["mean"] is not None:
                    pos.append(j - 0.4 + width * (i + 0.5))
                    means.append(row["mean"])
                    errs.append(row["std"] or 0.0)
            ax.bar(pos, means, width, yerr=errs, capsize=4, label=label or None)
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
    if not any(row["mean"] is not None for row in comp.rows):
        ax.text(0.5, 0.5, "no completed runs yet", ha="center", va="center", transform=ax.transAxes)
    if 1 < len(series) <= 12:  # an Optuna search (every job its own point) gets no legend: use --by
        ax.legend(title=", ".join(series_keys), fontsize="small")
    ax.set_ylabel(comp.metric)
    ax.set_title(_title(comp), fontsize="medium", wrap=True)
    ax.grid(axis="y", alpha=0.3)
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
) -> Comparison:
    """collect -> compare -> write csv/md/png (-> print). Raises CompareError when there is nothing."""
    runs = collect_runs(dirs)
    if not runs:
        raise CompareError(
            f"no runs under {', '.join(map(str, dirs))} (no directory with .hydra/ or metrics.json)"
        )
    sweeps = [str(Path(d).expanduser().resolve()) for d in dirs]
    comp = compare(runs, metric, by, sweeps=sweeps)
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
