"""``hydrahead-export RUN_DIR``: a full HF export of a run's model, rebuilt from its checkpoint.

    hydrahead-export outputs/multiruns/<sweep>/3                    # -> <run>/model
    hydrahead-export outputs/runs/<run> --out /tmp/model --native    # the backbone's own HF class
    hydrahead-export outputs/runs/<run> --checkpoint last

For frozen runs, which keep only the head: the backbone is rebuilt from the source the checkpoint
names and is refused if its weight files changed since training. Fine-tuned runs export from their
checkpoint alone. A run that did not complete exports with a warning.
Exit status: 0 exported; 2 refused (not a run dir, no such checkpoint, the backbone's weights
changed, no native class for this head), one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hydrahead-export",
        description="Rebuild a run's model from its checkpoint and write a full HF export.",
    )
    parser.add_argument("run_dir", type=Path, help="a run directory (holds .hydra/ and checkpoints/)")
    parser.add_argument("--out", type=Path, help="export directory (default: RUN_DIR/model; replaced)")
    parser.add_argument(
        "--native",
        action="store_true",
        help="export as the backbone's own HF class (standard heads only: linear, last layer)",
    )
    parser.add_argument(
        "--checkpoint", default="best", metavar="best|last|PATH", help="which checkpoint (default best)"
    )
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    from hydrahead.config.schema import ConfigError
    from hydrahead.export import ExportError, export_run

    hf_logging.disable_progress_bar()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hydrahead-export: %(levelname)s: %(message)s"))
    logger = logging.getLogger("hydrahead.export")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        out = export_run(args.run_dir, args.out, native=args.native, checkpoint=args.checkpoint)
    except (ExportError, ConfigError) as err:
        print(f"hydrahead-export: {err}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(handler)
    print(f"exported {'native' if args.native else 'hydrahead'} model to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
