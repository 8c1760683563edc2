"""hydrahead-reproduce: re-run a finished job from its saved config (a subprocess) and compare metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import FAST, run_train
from hydrahead.cli.reproduce import main
from hydrahead.reproduce import build_reproduction_config, compare_metrics
from hydrahead.rundir import load_run

# ++trainer.num_sanity_val_steps: a key outside the schema, which a config file alone cannot restore.
ARGS = [*FAST, "export=false", "seed=3", "++trainer.num_sanity_val_steps=0"]


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Path:
    """Job 0 of a one-job multirun (reproduced as a single run)."""
    sweep = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        run_train(ARGS, sweep, mp, multirun=True)
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "completed"
    return sweep / "0"


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_reproduces_from_any_cwd_then_detects_a_difference(job, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # not the repository, not the run
    assert main([str(job)]) == 0
    out = capsys.readouterr().out
    assert "reproduced" in out and "val/acc" in out
    (new,) = (job / "reproductions").iterdir()
    old_m, new_m = read(job / "metrics.json"), read(new / "metrics.json")
    assert new_m["status"] == "completed"
    assert new_m["metrics"] == pytest.approx(old_m["metrics"], abs=1e-6, rel=0)
    assert new_m["metrics"].keys() == old_m["metrics"].keys()
    # the same composed config, the saved Hydra settings, and a single run in the new directory
    assert yaml.safe_load((new / ".hydra" / "config.yaml").read_text()) == yaml.safe_load(
        (job / ".hydra" / "config.yaml").read_text()
    )
    hydra = yaml.safe_load((new / ".hydra" / "hydra.yaml").read_text())["hydra"]
    old_hydra = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra["mode"] == "RUN" and old_hydra["mode"] == "MULTIRUN"
    assert hydra["runtime"]["output_dir"] == str(new)
    assert hydra["job"]["config"] == old_hydra["job"]["config"] and hydra["job"]["name"] == "train"
    assert (new / "train.log").is_file() and (new / "checkpoints" / "best.ckpt").is_file()
    assert read(new / "reproduction.json")["ok"] is True

    # Tamper with the original's metrics: the same re-run now disagrees, and says where.
    payload = read(job / "metrics.json")
    payload["metrics"]["val/acc"] += 0.125
    (job / "metrics.json").write_text(json.dumps(payload))
    assert main([str(job), "--out", str(tmp_path / "again")]) == 1
    out = capsys.readouterr().out
    assert "NOT reproduced" in out and "val/acc" in out and "-0.125" in out
    assert "val/loss" not in out  # only the differing keys
    assert main([str(job), "--out", str(tmp_path / "again")]) == 2  # never over an existing run
    assert "not empty" in capsys.readouterr().err


def test_not_a_run_or_not_completed_exits_2(job, tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2

    for status in ("failed", "running"):
        run = tmp_path / status
        shutil.copytree(job / ".hydra", run / ".hydra")
        (run / "metrics.json").write_text(json.dumps({"status": status, "error": "RuntimeError: boom"}))
        assert main([str(run)]) == 2
        err = capsys.readouterr().err
        assert "did not complete" in err and status in err
    shutil.copytree(job / ".hydra", tmp_path / "pending" / ".hydra")
    assert main([str(tmp_path / "pending")]) == 2
    assert "no metrics.json" in capsys.readouterr().err


def test_a_failing_rerun_exits_1_with_the_error(job, tmp_path, capsys):
    run = tmp_path / "broken"
    shutil.copytree(job / ".hydra", run / ".hydra")
    shutil.copy(job / "metrics.json", run / "metrics.json")
    config = run / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("max_epochs: 1", "max_epochs: lots"))
    assert main([str(run)]) == 1  # fails at compose time, in the subprocess: no weights load
    err = capsys.readouterr().err
    assert "re-run failed" in err and "max_epochs" in err


def test_reproduction_config(job, tmp_path):
    run = load_run(job)
    config, extra, _ = build_reproduction_config(run, tmp_path / "new")
    assert config["defaults"] == ["train_schema", "_self_"]
    assert config["hydra"]["run"]["dir"] == str(tmp_path / "new")
    assert config["hydra"]["job"]["chdir"] is False
    assert "seed" in config["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]
    assert config["paths"]["output_dir"] == "${hydra:runtime.output_dir}"
    assert extra == ["++trainer.num_sanity_val_steps=0"]
    assert "num_sanity_val_steps" not in config["trainer"]
    assert "seed=3" in config["hydra"]["overrides"]["task"]
    rows = compare_metrics(
        {"a": 1.0, "b": 2.0, "c": float("nan")}, {"a": 1.0 + 5e-7, "b": 2.1, "c": float("nan"), "d": 1.0}
    )
    assert [(r["key"], r["ok"]) for r in rows] == [("a", True), ("b", False), ("c", True), ("d", False)]
    assert compare_metrics({"b": 2.0}, {"b": 2.1}, rtol=0.1)[0]["ok"]


def test_a_run_saved_before_the_cli_moved_still_reproduces(job, tmp_path):
    run = load_run(job)
    run.hydra["callbacks"] = {"sweep_report": {"_target_": "hydrahead.train.SweepReport"}}  # as saved then
    config, _, _ = build_reproduction_config(run, tmp_path / "new")
    assert config["hydra"]["callbacks"]["sweep_report"]["_target_"] == "hydrahead.cli.train.SweepReport"
