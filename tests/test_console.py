"""What hydrahead-train prints: a start line, the progress, a summary; library chatter only in train.log."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import pytest

from conftest import read_metrics, train_cli
from hydrahead.cli.console import ConsoleFilter, print_summary, start_line

TINY = [
    "backbone=tiny_bert",
    "data=synthetic_sequences",
    "trainer.max_epochs=1",
    "data.num_train=128",
    "data.num_validation=32",
    "data.num_test=32",
]
# Lines libraries print on every run that ask nothing of the user (Lightning's hints and checkpoint
# notes, a torch deprecation, matplotlib's font cache, W&B's banner and its stale 'anonymous' setting).
CHATTER = [
    "litlogger",
    "ModelCheckpoint",
    "Restoring states",
    "Loaded model weights",
    "GPU available",
    "TPU available",
    "srun",
    "pytree",
    "Matplotlib is building the font cache",
    "anonymous",
    "Seed set",
    "wandb:",
    "UserWarning",
    "feature cache",
    "C heap",
]


def _console_run(tmp_path: Path, *args: str):
    """hydrahead-train in a fresh process, W&B offline, an ``srun`` on PATH (Lightning's SLURM hint
    fires) and a fresh matplotlib cache (its font-cache notice fires when the build takes over 5 s:
    test_console_filter_keeps_chatter_off_and_errors_on covers that record); console and run dir back."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "WANDB_SILENT", "WANDB_QUIET")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", WANDB_MODE="offline")
    run_dir = tmp_path / "run"
    proc = train_cli(
        *TINY, *args, "hydra.run.dir=run", f"paths.root_dir={tmp_path}", cwd=tmp_path, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr, run_dir


def _metric_rows(console: str, metrics: dict) -> None:
    """Each final metric in the summary table: ``name  val  test`` as metrics.json has them."""
    for key, value in metrics.items():
        split, name = key.split("/", 1)
        if split != "val":
            continue
        test = metrics.get(f"test/{name}")
        row = rf"^{re.escape(name)}\s+{value:.3f}" + (rf"\s+{test:.3f}" if test is not None else "") + r"\s*$"
        assert re.search(row, console, re.M), (key, console)


def test_fine_tuned_run_prints_start_line_progress_and_summary_only(tmp_path):
    console, run_dir = _console_run(tmp_path)
    record = read_metrics(run_dir)
    assert record["status"] == "completed"
    lines = console.splitlines()
    starts = [line for line in lines if line.startswith("hydrahead: tiny:bert")]
    assert starts == [
        "hydrahead: tiny:bert (fine-tuned) · head linear (layer -1, cls pooling) · multiclass sequence"
        " · data synthetic_sequences · 1 epoch → run"
    ]
    assert any(line.startswith("Epoch ") for line in lines)  # Lightning's progress bar stays
    assert any(line.startswith("hydrahead: completed in ") for line in lines)
    _metric_rows(console, record["metrics"])
    assert re.search(rf"^best\s+val/acc {record['best']:.3f} at epoch 1 of 1$", console, re.M)
    assert re.search(r"^run dir\s+run$", console, re.M)
    assert re.search(r"^export\s+run/model$", console, re.M)
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert re.search(rf"^W&B\s+wandb sync run/wandb/{offline.name}$", console, re.M)
    for chatter in CHATTER:
        assert chatter not in console, chatter
    log = (run_dir / "train.log").read_text()
    assert starts[0] in log  # the start line is in the log too
    for line in ("GPU available", "Restoring states", "srun", "ModelCheckpoint", "pytree", "C heap"):
        assert line in log, line


def test_frozen_run_shows_its_epochs_and_how_to_export(tmp_path):
    console, run_dir = _console_run(tmp_path, "backbone.freeze=true")
    record = read_metrics(run_dir)
    assert record["engine"] == "head_trainer"
    lines = console.splitlines()
    assert lines[0].startswith("hydrahead: tiny:bert (frozen) · head linear")
    assert [line.split(":")[0] for line in lines if line.startswith("epoch ")] == ["epoch 1/1"]
    _metric_rows(console, record["metrics"])
    assert re.search(r"^export\s+none yet: hydrahead-export run$", console, re.M)
    assert re.search(r"^W&B\s+wandb sync run/wandb/offline-run-", console, re.M)
    for chatter in CHATTER:
        assert chatter not in console, chatter


def _main(argv: list[str], monkeypatch) -> int:
    from hydrahead.cli.train import main

    monkeypatch.setattr(sys, "argv", ["hydrahead-train", *argv])
    try:
        main()
    except SystemExit as stop:
        return stop.code or 0
    return 0


def test_help_is_the_projects(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert _main(["--help"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert out.startswith("hydrahead-train: train a classification head on a Hugging Face encoder")
    assert "powered by Hydra" not in out
    for command in (
        "hydrahead-train backbone=tiny_bert data=synthetic_sequences",
        "backbone.freeze=true",
        "hydrahead-train -m experiment=layer_sweep",
        "hydra/launcher=slurm",
        "hydrahead-compare",
        "hydrahead-export RUN_DIR",
        "hydrahead-predict RUN_DIR --input FILE",
        "hydrahead-eval RUN_DIR --data",
        "hydrahead-reproduce RUN_DIR",
    ):
        assert command in out, command
    assert re.search(r"^backbone: .*tiny_bert", out, re.M)  # Hydra's config groups listing
    assert _main(["--hydra-help"], monkeypatch) == 0
    assert "Hydra (" in capsys.readouterr().out  # --hydra-help stays Hydra's


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (
            ["-m", "experiment=layer_sweep", "--cfg", "job"],
            "drop -m (hydrahead-train experiment=layer_sweep --cfg job)",
        ),
        (
            ["--multirun", "head=linear,mlp", "seed=0", "--cfg", "job"],
            "(hydrahead-train head=linear seed=0 --cfg job)",
        ),
    ],
)
def test_cfg_job_of_a_multirun_says_what_to_run_instead(argv, suggestion, monkeypatch, capsys):
    assert _main(argv, monkeypatch) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("hydrahead-train: error: --cfg shows one job's config, not a sweep's")
    assert captured.err.count("\n") == 1 and suggestion in captured.err


def test_cfg_resolve_prints_the_resolved_config(monkeypatch, capsys, tmp_path):
    assert _main(["--cfg", "job", "--resolve", f"paths.root_dir={tmp_path}"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "${" not in out
    assert re.search(rf"^  output_dir: {re.escape(str(tmp_path))}/outputs/runs/\S+$", out, re.M)
    assert _main(["--cfg", "hydra", "--resolve", f"paths.root_dir={tmp_path}"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^run:\n  dir: {re.escape(str(tmp_path))}/outputs/runs/\S+$", out, re.M)
    assert "job_logging" in out  # Hydra's own config, resolved
    given = tmp_path / "here"
    assert _main(["--cfg", "job", "--resolve", f"paths.output_dir={given}", "-p", "paths"], monkeypatch) == 0
    assert f"output_dir: {given}" in capsys.readouterr().out


def _record(name: str, level: int, module: str = "x") -> logging.LogRecord:
    record = logging.LogRecord(name, level, f"/src/{module}.py", 1, "message", None, None)
    return record


def test_console_filter_keeps_chatter_off_and_errors_on():
    keep = ConsoleFilter(info_loggers=["hydrahead.train"], info_modules=["head_trainer"])
    shown = {
        ("lightning.pytorch.utilities.rank_zero", logging.INFO, "x"): False,
        ("matplotlib.font_manager", logging.WARNING, "x"): False,
        ("py.warnings", logging.WARNING, "x"): False,
        ("wandb", logging.WARNING, "x"): False,
        ("hydrahead.run", logging.INFO, "pipeline"): False,  # plumbing: train.log only
        ("hydrahead.run", logging.INFO, "head_trainer"): True,  # the frozen path's epochs
        ("hydrahead.run", logging.DEBUG, "head_trainer"): False,
        ("hydrahead.train", logging.INFO, "x"): True,
        ("hydrahead.data.readers", logging.WARNING, "x"): True,
        ("hydra.core.utils", logging.WARNING, "x"): True,
        ("lightning.pytorch", logging.ERROR, "x"): True,  # genuine errors are never hidden
        ("torch", logging.CRITICAL, "x"): True,
    }
    for (name, level, module), expected in shown.items():
        assert keep.filter(_record(name, level, module)) is expected, (name, level, module)


def test_start_line_and_summary(tmp_path, capsys, monkeypatch):
    from hydrahead import compose
    from hydrahead.pipeline import RunResult

    monkeypatch.chdir(tmp_path)
    cfg = compose(
        ["backbone=tiny_bert", "data=synthetic_positions", "head=mask_gather", "backbone.freeze=2"],
        output_dir=tmp_path / "r",
    )
    assert start_line(cfg, {"head": "mask_gather"}) == (
        "hydrahead: tiny:bert (bottom 2 layers frozen) · head mask_gather (layer -1, at positions) · "
        "multiclass positions · data synthetic_positions · 2 epochs → r"
    )
    cfg = compose(
        ["backbone=tiny_bert", "head=scalar_mix", "ckpt_path=/x/last.ckpt"], output_dir=tmp_path / "r"
    )
    assert "head scalar_mix (layers all scalar_mix, mean pooling)" in start_line(cfg, {"head": "scalar_mix"})
    assert start_line(cfg, {"head": "scalar_mix"}).endswith("· resuming from /x/last.ckpt → r")

    (tmp_path / "r" / "model").mkdir(parents=True)
    record = {
        "status": "completed",
        "wall_s": 3.21,
        "monitor": "val/acc",
        "best": 0.75,
        "best_epoch": 1,
        "epochs": 3,
        "metrics": {
            "val/acc": 0.75,
            "val/loss": 0.5,
            "test/acc": 0.625,
            "test/loss": 0.61,
            "mdl/online_kbits": 12.5,
            "mdl/block_00_kbits": 1.0,
        },
        "baselines": {"majority": {"label": "animal", "val/acc": 0.25, "test/acc": 0.3}},
    }
    print_summary(RunResult(tmp_path / "r", record))
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("hydrahead: completed in 3.2 s")
    assert re.search(r"^acc\s+0\.750\s+0\.625$", out, re.M)
    assert re.search(r"^majority: animal\s+0\.250\s+0\.300$", out, re.M)
    assert re.search(r"^mdl/online_kbits\s+12\.500$", out, re.M) and "block_00" not in out
    assert re.search(r"^best\s+val/acc 0\.750 at epoch 2 of 3$", out, re.M)
    assert re.search(r"^export\s+r/model$", out, re.M) and "W&B" not in out
