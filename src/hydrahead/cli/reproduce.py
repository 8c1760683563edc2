"""``hydrahead-reproduce RUN_DIR``: re-run a finished run from its saved config and compare metrics.

    hydrahead-reproduce outputs/runs/2026-01-01_12-00-00_ab12cd
    hydrahead-reproduce outputs/multiruns/<sweep>/3 --out /tmp/repro --atol 1e-4

The work is done by :mod:`hydrahead.reproduce`; this is the command line and its tables.
Exit status: 0 the metrics match within ``|new - old| <= atol + rtol * |old|``; 1 they differ (a
diff is printed) or the re-run failed; 2 the directory is not a completed run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hydrahead.reproduce import ReproduceError, reproduce


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _print_table(title: str, rows: list[dict], delta: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("old", justify="right")
    table.add_column("new", justify="right")
    if delta:
        table.add_column("delta", justify="right")
    for row in rows:
        cells = [row["key"], _fmt(row["old"]), _fmt(row["new"])]
        if delta:
            cells.append(
                "missing" if row["delta"] is None and row["old"] != row["new"] else _fmt(row["delta"])
            )
        table.add_row(*cells)
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hydrahead-reproduce",
        description="Re-run a finished run from its saved config and compare its metrics with the original.",
    )
    parser.add_argument(
        "run_dir", type=Path, help="a run directory (holds .hydra/config.yaml and metrics.json)"
    )
    parser.add_argument(
        "--out", type=Path, help="new run directory (default: RUN_DIR/reproductions/<timestamp>)"
    )
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0)")
    parser.add_argument(
        "--atol",
        type=float,
        default=1e-6,
        help="absolute tolerance (default 1e-6: absorbs float printing in JSON)",
    )
    args = parser.parse_args(argv)
    try:
        result = reproduce(args.run_dir, args.out, rtol=args.rtol, atol=args.atol)
    except ReproduceError as err:
        print(f"hydrahead-reproduce: {err}", file=sys.stderr)
        return 2
    if result["error"]:
        if result.get("log_tail"):
            print(result["log_tail"], file=sys.stderr)
        print(
            f"hydrahead-reproduce: the re-run failed: {result['error']}\n  run dir: {result['out']}",
            file=sys.stderr,
        )
        return 1
    rows = result["rows"]
    tolerance = f"atol={args.atol}, rtol={args.rtol}"
    if result["ok"]:
        _print_table(f"reproduced: {len(rows)} metrics match ({tolerance})", rows, False)
        print(f"new run: {result['out']}")
        return 0
    bad = [r for r in rows if not r["ok"]]
    _print_table(f"NOT reproduced: {len(bad)} of {len(rows)} metrics differ ({tolerance})", bad, True)
    print(f"new run: {result['out']}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
