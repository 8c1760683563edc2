"""What ``hydrahead-train`` shows a person: one line saying what runs, the progress, a summary at the end.

Everything else, library chatter included, goes to the job's ``train.log`` only:
``conf/hydra/job_logging/hydrahead.yaml`` puts :class:`ConsoleFilter` on the console handler and keeps
the file handler unfiltered. The start line and the summary are the CLI's; :func:`hydrahead.run`
prints nothing of its own.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig


class ConsoleFilter(logging.Filter):
    """What reaches the console: errors from anyone, warnings from hydrahead and Hydra, and the INFO
    lines of ``info_loggers`` and ``info_modules``; library INFO and WARNING lines and Python warnings
    (``py.warnings``, with ``logging.captureWarnings``) stay in ``train.log``.

    ``info_modules`` names modules by file stem: the head trainer logs its epoch lines through
    ``hydrahead.run`` like the run's plumbing does, and they are the frozen path's progress bar.
    """

    def __init__(
        self,
        own: list[str] = ("hydrahead", "hydra"),
        info_loggers: list[str] = (),
        info_modules: list[str] = (),
    ):
        super().__init__()
        self.own = set(own)
        self.info_loggers = set(info_loggers)
        self.info_modules = set(info_modules)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if record.name == "py.warnings" or record.name.split(".", 1)[0] not in self.own:
            return False
        if record.levelno >= logging.WARNING:
            return True
        return record.levelno >= logging.INFO and (
            record.name in self.info_loggers or record.module in self.info_modules
        )


class ConsoleFormatter(logging.Formatter):
    """INFO lines as they are; warnings and errors with their level and logger (``WARNING [name] ...``)."""

    def __init__(self, fmt: str = "%(levelname)s [%(name)s] %(message)s"):
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno < logging.WARNING and not record.exc_info:
            return record.getMessage()
        return super().format(record)


class FileFormatter(logging.Formatter):
    """Hydra's log-file format, without the blank line a captured Python warning ends in."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).rstrip("\n")


def shown(path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def start_line(cfg: DictConfig, choices: dict) -> str:
    """One line saying what this job runs: backbone (and how it trains), head, task, data, where it goes.

    ``choices``: Hydra's config-group choices (``hydra.runtime.choices``), for the head preset's name.
    """
    bb, head, data = cfg.backbone, cfg.head, cfg.data
    if bb.get("adapter"):
        how = f"{bb.adapter} adapter"
    elif bb.freeze is True:
        how = "frozen"
    elif bb.freeze is False or bb.freeze == 0:
        how = "fine-tuned"
    else:
        how = f"bottom {bb.freeze} layers frozen"
    layers = "layers" if str(head.layer) in ("all",) or ":" in str(head.layer) else "layer"
    parts = [f"{layers} {head.layer}" + (f" {head.combine}" if layers == "layers" else "")]
    where = {"sequence": f"{head.pooling} pooling", "token": "per token"}
    parts.append(where.get(data.level, "at positions"))
    if head.hidden_layers:
        parts.append(f"hidden {list(head.hidden_layers)}")
    epochs = cfg.trainer.get("max_epochs")
    line = (
        f"hydrahead: {bb.name_or_path} ({how}) · head {choices.get('head') or 'custom'} ({', '.join(parts)})"
        f" · {cfg.task.name} {data.level} · data {data.name}"
        + (f" · {epochs} epoch{'s' if epochs != 1 else ''}" if epochs else "")
    )
    own_last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if cfg.get("ckpt_path"):
        line += f" · resuming from {shown(cfg.ckpt_path)}"
    elif own_last.is_file():
        line += " · resuming from its last.ckpt"
    return f"{line} → {shown(cfg.paths.output_dir)}"


def _number(value) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    if math.isnan(value):
        return "nan"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def best_epoch(record: dict) -> int | None:
    """The best checkpoint's epoch (0-based): the head trainer records it; Lightning's is in best.ckpt."""
    if record.get("best_epoch") is not None:
        return int(record["best_epoch"])
    path = record.get("best_checkpoint")
    if not path or not Path(path).is_file():
        return None
    try:
        import torch

        epoch = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("epoch")
    except Exception:  # an unreadable checkpoint is for the run's own checks to report, not the summary
        return None
    return int(epoch) if epoch is not None else None


def best_text(record: dict) -> str | None:
    """``val/acc 0.912 at epoch 2 of 3``: the best checkpoint's monitored metric and when it was saved."""
    if record.get("best") is None:
        return None
    text = f"{record.get('monitor', 'best')} {_number(record['best'])}"
    epoch, epochs = best_epoch(record), record.get("epochs")
    if epoch is not None:
        text += f" at epoch {epoch + 1}" + (f" of {epochs}" if epochs else "")
    return text


def wandb_offline_run(run_dir: Path) -> Path | None:
    """The run's offline W&B folder (the newest, if a resume added one), or None."""
    runs = sorted((Path(run_dir) / "wandb").glob("offline-run-*"))
    return runs[-1] if runs else None


def job_line(num, result) -> str:
    """A multirun job's one-line summary: ``#3 done: val/acc 0.912 at epoch 2 of 3 → <run dir>``."""
    best = best_text(result.record) or "no monitored metric"
    return f"#{num} {result.status}: {best} → {shown(result.run_dir)}"


def print_summary(result) -> None:
    """The end of a single run: its final metrics (val and test columns), the majority-class baseline,
    the best epoch, the run dir, the export and the ``wandb sync`` command of an offline W&B run."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    record, run_dir = result.record, Path(result.run_dir)
    rows: dict[str, dict[str, float]] = {}
    columns: list[str] = []
    others: dict[str, float] = {}
    for key, value in record.get("metrics", {}).items():
        split, _, name = key.partition("/")
        if split in ("val", "test") and name:
            rows.setdefault(name, {})[split] = value
            if split not in columns:
                columns.append(split)
        elif "block_" not in key:  # MDL's per-block codelengths: metrics.json has them
            others[key] = value
    wall = record.get("wall_s")
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        title=f"hydrahead: {record.get('status', 'done')}" + (f" in {wall:.1f} s" if wall else ""),
        title_justify="left",
    )
    table.add_column("metric")
    for split in columns:
        table.add_column(split, justify="right")
    for name, values in rows.items():
        table.add_row(name, *(_number(values[s]) if s in values else "" for s in columns))
    majority = (record.get("baselines") or {}).get("majority")
    if majority and columns:
        table.add_row(
            f"majority: {majority.get('label')}",
            *(_number(majority[f"{s}/acc"]) if f"{s}/acc" in majority else "" for s in columns),
        )
    console = Console()
    console.print(table)
    lines = [(key, _number(value)) for key, value in others.items()]
    lines.append(("best", best_text(record)))
    lines.append(("run dir", shown(run_dir)))
    if (run_dir / "model").is_dir():
        lines.append(("export", shown(run_dir / "model")))
    elif record.get("status") == "completed":
        lines.append(("export", f"none yet: hydrahead-export {shown(run_dir)}"))
    offline = wandb_offline_run(run_dir)
    if offline is not None:
        lines.append(("W&B", f"wandb sync {shown(offline)}"))
    width = max(len(key) for key, value in lines if value) + 2
    for key, value in lines:
        if value:
            # soft_wrap: long paths stay whole (copy-pasteable) instead of wrapping inside a column
            console.print(f"{key:<{width}}{value}", soft_wrap=True, highlight=False, markup=False)
