"""``hydrahead-eval RUN_DIR [--data OVERRIDE ...]``: evaluate a finished run on another file or split.

    hydrahead-eval outputs/2026-12-02/10-00-00                                  # its own test split
    hydrahead-eval outputs/... --data data.test_file=data/new.jsonl --name new  # another labelled file
    hydrahead-eval outputs/... --split validation --data data=wordnet_lemma

Writes ``RUN_DIR/eval/<name>/``: metrics.json, per_class.csv, confusion_matrix.csv/.png, reliability.png.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hydrahead-eval",
        description="Evaluate a finished run on another labelled file or split; writes RUN_DIR/eval/<name>/.",
    )
    parser.add_argument("run_dir", help="a run directory (outputs/...)")
    parser.add_argument(
        "--data",
        nargs="+",
        default=[],
        metavar="OVERRIDE",
        help="data overrides on the run's saved data config: data.test_file=x.jsonl, data=<preset>, ...",
    )
    parser.add_argument("--split", default="test", choices=["test", "validation", "train"])
    parser.add_argument("--name", help="the eval/<name> folder (default: the file's stem, else the split)")
    parser.add_argument("--checkpoint", default="best", help="best, last or a checkpoint file")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, help="evaluation batch size (default: the run's)")
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from hydrahead.config.schema import ConfigError
    from hydrahead.data.encode import DataError
    from hydrahead.evaluate_run import EvalError, evaluate_run
    from hydrahead.export import ExportError

    try:
        record = evaluate_run(
            args.run_dir, args.data, args.split, args.name, args.checkpoint, args.device, args.batch_size
        )
    except (ConfigError, DataError, EvalError, ExportError, OSError) as err:
        print(f"hydrahead-eval: error: {err}", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{record['split']} of {record['data']['file'] or record['data']['name']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in record["metrics"].items():
        table.add_row(key, f"{value:.4f}")
    console = Console()
    console.print(table)
    console.print(f"{record['items']} items; written to {record['dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
