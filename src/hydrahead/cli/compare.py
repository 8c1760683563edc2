"""``hydrahead-compare SWEEP_DIR [SWEEP_DIR ...]``: one table (and one plot) per set of sweeps.

    hydrahead-compare outputs/multiruns/2026-01-01_12-00-00_ab12cd
    hydrahead-compare outputs/multiruns/A outputs/multiruns/B --metric test/acc --by head,backbone.freeze

    hydrahead-compare outputs/multiruns/probes --metric mdl/compression --sort selectivity

Writes ``comparison.{csv,md,png}`` into the first directory or ``--out`` and prints the table. The
work is done by :mod:`hydrahead.compare`; this is only the command line. Exit status 2: nothing to
compare (no runs, no such metric) or the comparison could not be written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydrahead.compare import CompareError, run_compare, unknown_keys

EPILOG = """\
control tasks (Hewitt & Liang 2019): when any job has task.control=true, each real job is paired
  with its control twin (the same overrides but task.control, the same seed) and the rows, grouped
  without task.control, show the real and the control metric (mean ± std over all completed jobs of
  each kind) and selectivity = real - control (mean ± std over the complete pairs; n = pairs).
  Jobs without a completed twin are counted as 'unpaired' and listed with the reason. The plot has
  two panels: the metric (control dashed) and selectivity. --by ...,task.control: no pairing.

majority baseline: when the jobs' metrics.json carry baselines.majority[METRIC] (multiclass: always
  predicting train's most frequent class), the printed table ends with a 'majority' row (a baseline,
  never sorted; with controls also the control task's), comparison.csv gets the columns majority
  (and control_majority), comparison.md a sentence, and the plot a dashed grey line.

lower is better for losses, kbits (mdl/online_kbits), ece, brier and nll; higher otherwise
  (mdl/compression, accuracies); the monitor follows task.mode.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hydrahead-compare",
        description="Compare the jobs of one or more sweeps: group by the swept keys, aggregate over seeds.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep (or run) directories; searched recursively")
    parser.add_argument("--metric", help="metric to compare (default: the jobs' monitor, e.g. val/acc)")
    parser.add_argument(
        "--by",
        help="comma-separated grouping keys (default: the keys whose value differs; "
        "'sweep' groups by directory)",
    )
    parser.add_argument("--out", type=Path, help="where comparison.{csv,md,png} go (default: the first dir)")
    parser.add_argument(
        "--sort",
        choices=("metric", "selectivity"),
        default="metric",
        help="order of the rows: by the (real) metric, or by selectivity (needs control jobs)",
    )
    args = parser.parse_args(argv)
    by = [k.strip() for k in args.by.split(",") if k.strip()] if args.by else None
    try:
        comp = run_compare(args.dirs, args.metric, by, args.out, sort=args.sort)
    except CompareError as err:
        print(f"hydrahead-compare: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"hydrahead-compare: cannot write the comparison: {err} (try --out)", file=sys.stderr)
        return 2
    for key in unknown_keys(comp.runs, by or []):
        print(f"hydrahead-compare: warning: no job has a value for {key!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
