"""``hydrahead-predict MODEL --input FILE``: batch inference on a JSONL, CSV, Parquet or CoNLL file.

    hydrahead-predict outputs/runs/<run> --input test.jsonl --output preds.jsonl
    hydrahead-predict outputs/runs/<run>/model -i dev.csv -o preds.csv --top-k 3 --field text=sentence
    hydrahead-predict my-export -i big.parquet --device cuda --precision bf16 --batch-size 256 > preds.jsonl

MODEL is a run directory (its export, or its model rebuilt from ``--checkpoint``; the input's field
names and max_length are the run's) or an export directory (hydrahead or native HF). The input is
read as training reads it; labels in it are ignored. Output: one JSON line (or CSV row) per input
row, in input order, with ``line``, the input's ``id`` and the prediction (see ``hydrahead.predict``).
Exit status: 0 done; 2 refused (a bad row, named ``file:line``, after the rows before it were
written; a model or option that cannot work), one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

PROG = "hydrahead-predict"


def _field(value: str) -> tuple[str, str]:
    key, sep, name = value.partition("=")
    if not sep or not key or not name:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=NAME (e.g. text=sentence)")
    return key.strip(), name.strip()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Predict every row of a data file with a trained model; rows come out in input order.",
        epilog="Exit status: 0 done; 2 refused (a bad row as FILE:LINE, rows before it already written).",
    )
    p.add_argument("model", type=Path, metavar="RUN_DIR|EXPORT_DIR", help="a run directory or an export")
    p.add_argument("-i", "--input", type=Path, required=True, help="JSONL, CSV, Parquet or CoNLL file")
    p.add_argument(
        "-o",
        "--output",
        default="-",
        help="predictions: '-' stdout (default), a .csv file (CSV, nested values as JSON), else JSON lines; "
        "written row by row, an existing file replaced",
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "jsonl", "csv", "parquet", "conll"],
        help="input format (default: from the extension)",
    )
    p.add_argument(
        "--field",
        action="append",
        type=_field,
        default=[],
        metavar="KEY=NAME",
        help="input field name, e.g. text=sentence (keys: text, text_pair, tokens, spans, word_positions); "
        "default: the run's data.fields, else the key itself",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=1,
        help="multiclass: list the K best labels (default 1: the best; 0: all)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="multilabel: predict labels above it (default: the run's task.threshold, else 0.5)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (default 64)")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=2048,
        help="rows read, length-sorted and written at a time (default 2048): bounds memory",
    )
    p.add_argument(
        "--max-length",
        type=int,
        help="truncate inputs (default: the run's data.max_length, else the model's)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--precision", default="32", help="32 (default), bf16 or 16: autocast for the forward pass"
    )
    p.add_argument(
        "--checkpoint",
        metavar="best|last|PATH",
        help="run directories: rebuild the model from this checkpoint (default: its export, else best)",
    )
    p.add_argument(
        "--on-error",
        default="raise",
        choices=["raise", "skip"],
        help="a bad row: stop with FILE:LINE (default) or skip it and count it",
    )
    p.add_argument(
        "--id-field", default="id", help="input field copied to each output row as 'id' (default id)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    from hydrahead.config.schema import ConfigError
    from hydrahead.data.encode import DataError
    from hydrahead.predict import PredictError, load_predictor, predict_file

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("hydrahead.predict", "hydrahead.export")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        predictor = load_predictor(
            args.model,
            device=args.device,
            precision=args.precision,
            fields=dict(args.field),
            fmt=args.format,
            max_length=args.max_length,
            threshold=args.threshold,
            checkpoint=args.checkpoint,
        )
        summary = predict_file(
            predictor,
            args.input,
            args.output,
            batch_size=args.batch_size,
            chunk_size=args.chunk_size,
            top_k=args.top_k,
            on_error=args.on_error,
            id_field=args.id_field,
            progress=not args.quiet and sys.stderr.isatty(),
        )
    except (DataError, PredictError, ConfigError) as err:
        message = " ".join(str(err).strip().splitlines())  # one line
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    if not args.quiet:
        where = "stdout" if summary.output == "-" else summary.output
        skipped = f", skipped {summary.skipped} bad row(s)" if summary.skipped else ""
        print(
            f"{PROG}: predicted {summary.rows} row(s) of {args.input} with {predictor.source} "
            f"({predictor.level}, {predictor.task}, {predictor.device}) -> {where}{skipped}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
