"""The run-dir contract: what run() writes is what load_run reads, for every reader after a run."""

from __future__ import annotations

import json
import os
import socket

from conftest import FAST, run_job
from hydrahead.cli.reproduce import main as reproduce_main
from hydrahead.rundir import RunDir, load_run, measures


def test_a_run_started_from_python_is_a_complete_run_dir(tmp_path):
    args = [*FAST, "head=mlp", "head.hidden_layers=[8]", "seed=4"]
    result = run_job(args, tmp_path / "run")
    run = load_run(result.run_dir)
    assert run.status == result.status == "completed"
    assert run.metrics == result.metrics and run.metrics["val/acc"] == result.best
    assert run.config["head"]["hidden_layers"] == [8] and run.config["seed"] == 4
    assert run.labels == result.record["labels"] and len(run.labels) == 4
    assert set(run.checkpoints) == {"last", "best"} and run.model_dir is not None
    # Without Hydra there is no hydra.yaml, yet the saved config alone re-runs to the same metrics.
    assert reproduce_main([str(result.run_dir)]) == 0


def test_a_running_record_whose_process_is_gone_reads_as_killed(tmp_path):
    writer = RunDir(tmp_path).create()
    writer.begin(monitor="val/acc")
    writer.write()
    assert load_run(tmp_path).status == "running"  # this very process: alive
    record = json.loads((tmp_path / "metrics.json").read_text())
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    (tmp_path / "metrics.json").write_text(json.dumps({**record, "pid": dead, "host": socket.gethostname()}))
    run = load_run(tmp_path)
    assert run.status == "failed" and run.killed and f"pid {dead}" in run.error


def test_missing_and_damaged_files_read_as_pending_or_failed(tmp_path):
    assert load_run(tmp_path).status == "pending"
    (tmp_path / "metrics.json").write_text("{not json")
    run = load_run(tmp_path)
    assert run.status == "failed" and run.unreadable and "unreadable metrics.json" in run.error


def test_one_list_of_keys_that_do_not_change_a_measurement():
    for key in ("seed", "ckpt_path", "export", "malloc", "trainer.devices", "logger", "logger.wandb.project"):
        assert not measures(key), key
    for key in ("head.layer", "backbone.freeze", "trainer.max_epochs", "optimizer.lr", "+trainer.x", "head"):
        assert measures(key), key
