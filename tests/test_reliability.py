"""Reliability and security: bad input fails fast and clearly, faults lose nothing, loading is safe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hydrahead.build
from conftest import FAST, read_metrics, run_train, train_cli
from hydrahead.cli.train import main

BASE = ["backbone=tiny_bert", "data=synthetic_sequences", "logger=none"]


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory):
    """A finished tiny run (head=mlp [8]) whose checkpoint the cases below resume from or tamper with."""
    root = tmp_path_factory.mktemp("ckpt")
    monkeypatch = pytest.MonkeyPatch()
    try:
        run_train([*FAST, "export=false", "head=mlp", "head.hidden_layers=[8]"], root / "run", monkeypatch)
    finally:
        monkeypatch.undo()
    corrupt = root / "corrupt.ckpt"
    corrupt.write_bytes((root / "run" / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    return {"last": root / "run" / "checkpoints" / "last.ckpt", "corrupt": corrupt}


def bad_configs(tmp: Path, ckpt: dict) -> list[tuple[list[str], str]]:
    (tmp / "afile").write_text("x")
    return [
        (["head=nope"], "head=nope: no such option; available: intermediate, linear"),
        (["data=imagenet"], "data=imagenet: no such option"),
        (["optimizer=lion"], "optimizer=lion: no such option; available: adamw, sgd"),
        (["task=regression"], "task=regression: no such option; available: multiclass, multilabel"),
        (["logger=tensorboard"], "logger=tensorboard: no such option"),
        (
            ["head.hiden_layers=[8]"],
            "unknown key head.hiden_layers; head has: layer, combine, pooling, hidden_layers",
        ),
        (["trainer.max_epoch=3"], "unknown key trainer.max_epoch"),
        (["backbone.frezee=true"], "unknown key backbone.frezee"),
        (["trainer.max_epochs=lots"], "trainer.max_epochs=lots: expected integer"),
        (["head.dropout=high"], "head.dropout=high: expected float"),
        (["head.dropout=-0.1"], r"head.dropout=-0.1 must be a number in [0, 1)"),
        (["head.dropout=1.0"], r"head.dropout=1.0 must be a number in [0, 1)"),
        (["head.hidden_layers=[0]"], "head.hidden_layers=[0] must be positive ints"),
        (["head.hidden_layers=[-5,3]"], "head.hidden_layers=[-5, 3] must be positive ints"),
        (
            ["head.layer=9"],
            "head.layer=9 is out of range for this backbone (4 layers): valid indices are 0..4",
        ),
        (["head.layer=-6"], "head.layer=-6 is out of range"),
        (["head.layer=abc"], "head.layer='abc' must be an int"),
        (["head=mask_gather"], "head needs data at level 'positions' (head.level)"),
        (["head.pooling=sum"], "head.pooling='sum' is not one of ['cls', 'mean', 'max', 'pooler']"),
        (["head.combine=sum"], "head.combine='sum' is not one of"),
        (["optimizer.lr=0"], "optimizer.lr=0.0 must be > 0"),
        (["optimizer.lr=-1e-3"], "optimizer.lr=-0.001 must be > 0"),
        (["optimizer.backbone_lr=0"], "optimizer.backbone_lr=0.0 must be > 0"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be >= 1"),
        (["scheduler.warmup_ratio=1.5"], "scheduler.warmup_ratio=1.5 must be in [0, 1)"),
        (["data.batch_size=0"], "data.batch_size=0 must be >= 1"),
        (["task.threshold=2"], "task.threshold=2.0 must be in (0, 1)"),
        (["backbone.freeze=maybe"], "backbone.freeze='maybe' must be true, false or a non-negative int"),
        (["backbone.freeze=9"], "backbone.freeze=9 exceeds the backbone's 4 layers"),
        (["backbone.cache=maybe"], "backbone.cache='maybe' is not one of ['auto', 'on', 'off']"),
        (["data=local"], "data.train_file is not set"),
        (
            [
                "data=local",
                f"data.train_file={tmp}/missing.jsonl",
                f"data.validation_file={tmp}/missing.jsonl",
            ],
            "data.train_file=.*missing.jsonl: no such file",
        ),
        (["data.format=xml"], "data.format='xml' is not one of"),
        (
            ["backbone.name_or_path=/no/such/model"],
            "backbone.name_or_path='/no/such/model': no such model directory",
        ),
        ([f"ckpt_path={tmp}/nope.ckpt"], "ckpt_path=.*nope.ckpt: no such checkpoint file"),
        ([f"ckpt_path={ckpt['corrupt']}"], "ckpt_path=.*corrupt.ckpt: not a readable checkpoint"),
        (
            ["head=mlp", "head.hidden_layers=[16]", f"ckpt_path={ckpt['last']}"],
            "is incompatible with this config: head.hidden_layers: checkpoint [8], config [16]",
        ),
        ([f"hydra.run.dir={tmp}/afile/run"], "cannot write the run directory"),
    ]


class WeightsLoaded(AssertionError):
    pass


def _no_weights(*args, **kwargs):
    raise WeightsLoaded("weights were loaded for a config that cannot work")


def test_bad_configs_fail_fast_with_one_clear_line(
    tmp_path, trained_ckpt, local_bert_dir, monkeypatch, capsys
):
    import re

    # A saved BERT directory (4 layers, like tiny:bert) loads real weights, and the guard sits where
    # build_model looks the loader up: prove it fires for a good config before trusting its silence.
    monkeypatch.setattr(hydrahead.build, "load_backbone_weights", _no_weights)
    loads = [f"backbone.name_or_path={local_bert_dir}", "backbone.pretrained=true"]
    monkeypatch.setattr(sys, "argv", ["hydrahead-train", *BASE, *loads, f"hydra.run.dir={tmp_path}/good"])
    with pytest.raises(SystemExit) as stop:  # Hydra prints the job's error and exits 1
        main()
    assert stop.value.code == 1
    assert "WeightsLoaded" in capsys.readouterr().err
    cases = bad_configs(tmp_path, trained_ckpt)
    assert len(cases) >= 25
    for overrides, expected in cases:
        runs = tmp_path / "runs"
        own = ("backbone.name_or_path", "ckpt_path")  # these cases name their own backbone (or checkpoint)
        loading = [] if any(o.startswith(own) for o in overrides) else loads
        argv = ["hydrahead-train", *BASE, *loading, *overrides, f"paths.root_dir={tmp_path}"]
        if not any(o.startswith("hydra.run.dir") for o in overrides):
            argv.append(f"hydra.run.dir={runs}")
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as stop:
            main()
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2, overrides
        assert len(err) == 1 and err[0].startswith("hydrahead-train: error: "), (overrides, err)
        matches = expected in err[0] or (".*" in expected and re.search(expected, err[0]))
        assert matches, (overrides, err[0])
        assert not runs.exists(), overrides  # no run directory at all, let alone a finished-looking one


def test_multilabel_task_on_single_label_data(tmp_path, local_bert_dir, monkeypatch, capsys):
    rows = [{"text": "a b", "label": "x"}, {"text": "c d", "label": "y"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(hydrahead.build, "load_backbone_weights", _no_weights)
    args = [
        f"backbone.name_or_path={local_bert_dir}",
        "logger=none",
        "data=local",
        "task=multilabel",
        f"data.train_file={tmp_path}/d.jsonl",
        f"data.validation_file={tmp_path}/d.jsonl",
    ]
    with pytest.raises(SystemExit) as stop:
        run_train(args, tmp_path / "run", monkeypatch)
    assert stop.value.code == 2
    assert "d.jsonl: task=multilabel, but every row has exactly one label" in capsys.readouterr().err
    assert read_metrics(tmp_path / "run")["status"] == "failed"


def test_a_crash_during_a_checkpoint_save_keeps_the_previous_one(tmp_path, monkeypatch):
    from hydrahead.training.checkpoint import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "state_dict": {"w": torch.ones(3)}}, target)

    def dies_halfway(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "state_dict": {"w": torch.zeros(3)}}, target)
    monkeypatch.undo()
    assert io.load_checkpoint(target)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_full_disk_is_reported_in_one_line_and_recorded(tmp_path, monkeypatch, capsys):
    import errno

    from hydrahead.training.checkpoint import AtomicCheckpointIO

    def disk_full(self, checkpoint, path, storage_options=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", disk_full)
    with pytest.raises(SystemExit) as stop:
        run_train([*FAST, "export=false"], tmp_path / "run", monkeypatch)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert ("No space left on device" in err and "last.ckpt" in err) or "best.ckpt" in err
    assert "No space left on device" in read_metrics(tmp_path / "run")["error"]


def test_pickled_code_in_a_checkpoint_is_never_run(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"head": {}}, "payload": Exploit()}, evil)
    monkeypatch.setattr(
        sys, "argv", ["hydrahead-train", *BASE, f"ckpt_path={evil}", f"hydra.run.dir={tmp_path}/r"]
    )
    with pytest.raises(SystemExit):
        main()
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert not marker.exists()


def test_exports_are_safetensors_and_trust_remote_code_is_off_by_default(tmp_path, monkeypatch):
    import inspect

    from hydrahead.backbones import load_backbone_config, load_backbone_weights, load_tokenizer
    from hydrahead.config import BackboneConfig

    assert BackboneConfig().trust_remote_code is False
    for loader in (load_tokenizer, load_backbone_config, load_backbone_weights):
        assert inspect.signature(loader).parameters["trust_remote_code"].default is False
    run_train(FAST, tmp_path, monkeypatch)
    files = {p.name for p in (tmp_path / "model").iterdir()}
    assert "model.safetensors" in files
    assert not {f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pth", ".ckpt"))}


def test_secrets_from_the_environment_are_masked(tmp_path, monkeypatch):
    from wandb_records import read_run

    secret = "wandb_s3cr3t_value_do_not_log"
    monkeypatch.setenv("MY_WANDB_API_KEY", secret)
    monkeypatch.setenv("WANDB_API_KEY", "restored-after-the-test")  # the run logs in with the secret
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = [a for a in FAST if a != "logger=none"] + [
        "logger=wandb",
        "export=false",
        "logger.wandb.api_key=${oc.env:MY_WANDB_API_KEY}",
    ]
    run_train(args, tmp_path, monkeypatch)
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    assert read_run(run_file)["config"]["logger"]["wandb"]["api_key"] in ("***", None)  # W&B drops api keys
    hparams = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["logger"]["wandb"]["api_key"] == "***"
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []


@pytest.mark.slow
def test_nothing_is_written_outside_the_run_data_and_cache_dirs(tmp_path):
    home, cwd, root = tmp_path / "home", tmp_path / "cwd", tmp_path / "root"
    for folder in (home, cwd):
        folder.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "WANDB_MODE": "offline",
        "HYDRAHEAD_ROOT": str(root),
    }
    for key in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_DIR"):
        env.pop(key, None)
    proc = train_cli(*FAST, "logger=wandb", env=env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(home.rglob("*")) == [] and list(cwd.rglob("*")) == []
    assert {p.name for p in root.iterdir()} <= {"outputs", "data", ".cache"}


def _start_train(args: list[str], **kwargs) -> subprocess.Popen:
    """``python -m hydrahead.cli.train *args`` started in the background (to be signalled)."""
    return subprocess.Popen(
        [sys.executable, "-m", "hydrahead.cli.train", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


LONG = [a for a in FAST if "limit_train" not in a and "max_epochs" not in a and "num_train" not in a] + [
    "trainer.max_epochs=3",
    "data.num_train=2000",
    "export=false",
    "backbone=tiny_roberta",
]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_interrupted_mid_epoch_then_resumed_equals_an_uninterrupted_run(sig, tmp_path):
    full = train_cli(*LONG, f"hydra.run.dir={tmp_path}/full", timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]
    proc = _start_train([*LONG, f"hydra.run.dir={tmp_path}/cut"])
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the second epoch
    proc.send_signal(sig)
    proc.wait(timeout=120)
    assert proc.returncode != 0
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the intact end-of-epoch checkpoint
    resumed = train_cli(*LONG, f"ckpt_path={last}", f"hydra.run.dir={tmp_path}/resumed", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert read_metrics(tmp_path / "resumed")["metrics"] == read_metrics(tmp_path / "full")["metrics"]
    assert read_metrics(tmp_path / "cut")["status"] in ("failed", "running")  # running: SIGKILL left no word


@pytest.mark.slow
def test_killing_one_job_of_a_local_sweep_spares_the_others(tmp_path):
    from hydrahead.compare import collect_runs

    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *LONG,
        "hydra/launcher=local",
        "seed=0,1,2",
        f"hydra.sweep.dir={sweep}",
        "trainer.max_epochs=2",
    ]
    proc = _start_train(args)
    victim = None
    deadline = time.time() + 300
    while victim is None and time.time() < deadline:
        for status in sweep.glob("1_*/metrics.json"):
            victim = json.loads(status.read_text()).get("pid")
        time.sleep(0.1)
    assert victim, "job 1 never started"
    os.kill(victim, signal.SIGKILL)
    proc.wait(timeout=600)
    assert proc.returncode != 0
    statuses = {
        p.parent.name.split("_")[0]: json.loads(p.read_text())["status"] for p in sweep.glob("*/metrics.json")
    }
    assert statuses["0"] == statuses["2"] == "completed"
    runs = {run["name"].split("_")[0]: run for run in collect_runs([sweep])}
    assert runs["1"]["status"] == "failed"


def test_only_secret_names_are_masked():
    """A key that names a secret is masked; one that merely contains a secret-ish word is not."""
    from hydrahead import compose
    from hydrahead.secrets import MASK, masked_config

    cfg = compose(["data=synthetic_tokens", "logger.wandb.api_key=abcdef123456"])
    masked = masked_config(cfg)
    assert masked["data"]["fields"]["tokens"] == "tokens"  # the token field's name, not a secret
    assert masked["logger"]["wandb"]["api_key"] == MASK


@pytest.mark.parametrize(
    ("backbone", "allowed"),
    [("tiny_bert", 128), ("tiny_roberta", 128)],  # RoBERTa: 130 embeddings, positions from padding_idx + 1
)
def test_max_length_beyond_the_position_embeddings_is_refused(backbone, allowed, tmp_path):
    from hydrahead.config.schema import ConfigError
    from hydrahead.config.validate import preflight

    with pytest.raises(ConfigError, match=rf"data.max_length={allowed + 1} exceeds the {allowed} positions"):
        preflight([f"backbone={backbone}", "data=synthetic_sequences", f"data.max_length={allowed + 1}"])
    preflight([f"backbone={backbone}", "data=synthetic_sequences", f"data.max_length={allowed}"])
