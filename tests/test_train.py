"""The runner end to end: in-process hydrahead-train runs on tiny backbones."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import DATA_FOR_LEVEL, FAST, read_metrics, run_job, run_train, train_cli
from hydrahead.utils.paths import head_presets

COMBOS = [
    (preset, task, level)
    for preset, spec in head_presets().items()
    for task in ("multiclass", "multilabel")
    for level in ("sequence", "token", "positions")
    if spec.get("level") in (None, level)
]


@pytest.mark.parametrize(("preset", "task", "level"), COMBOS, ids=["-".join(c) for c in COMBOS])
def test_short_fit_for_each_preset_task_level(preset, task, level, tmp_path):
    args = [*FAST, f"head={preset}", f"task={task}", f"data={DATA_FOR_LEVEL[level]}", "export=false"]
    result = run_job(args, tmp_path)
    metrics = read_metrics(tmp_path)
    assert result.record == metrics and result.best == metrics["best"]  # run() returns what it wrote
    assert metrics["status"] == "completed"
    assert metrics["best"] == metrics["metrics"][metrics["monitor"]]
    expected = (
        ["acc", "f1_macro", "f1_micro"]
        if task == "multiclass"
        else ["f1_micro", "f1_macro", "auroc_macro", "map_macro"]
    )
    for stage in ("val", "test"):
        for name in [*expected, "loss"]:
            assert f"{stage}/{name}" in metrics["metrics"], (stage, name)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / ".hydra" / "config.yaml").is_file()


def test_run_directory_contract(tmp_path, monkeypatch):
    args = [*FAST, "backbone.freeze=true", "head=mlp", "head.hidden_layers=[16]", "export=true"]
    run_train(args, tmp_path, monkeypatch)
    metrics = read_metrics(tmp_path)
    assert metrics["status"] == "completed"
    for key in ("metrics", "monitor", "best", "epochs", "wall_s", "params_trainable", "params_total"):
        assert key in metrics
    assert metrics["monitor"] == "val/acc"
    assert metrics["epochs"] == 1
    assert 0 < metrics["params_trainable"] < metrics["params_total"]  # frozen backbone
    # A finished frozen-head run keeps its best head; last.ckpt (optimizer state) served resuming only
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == {"best.ckpt"}
    assert metrics["engine"] == "head_trainer" and metrics["backbone_ref"]["random_init_seed"] == 0
    model_dir = tmp_path / "model"  # export=true: the full export all the same
    for name in ("config.json", "model.safetensors", "modeling_hydrahead.py", "tokenizer_config.json"):
        assert (model_dir / name).is_file(), name
    config = json.loads((model_dir / "config.json").read_text())
    assert sorted(config["id2label"].values()) == metrics["labels"]
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml"} <= {
        str(p.relative_to(tmp_path)) for p in (tmp_path / ".hydra").iterdir()
    }


def test_learning_happens_on_synthetic_topics(tmp_path):
    args = [
        "backbone=tiny_bert",
        "data=synthetic_sequences",
        "trainer.max_epochs=6",
        "logger=none",
        "callbacks.rich_progress_bar=false",
        "optimizer.lr=3e-3",
        "optimizer.backbone_lr=3e-3",
        "data.num_train=256",
        "export=false",
        "head.pooling=mean",
    ]
    run_job(args, tmp_path)
    metrics = read_metrics(tmp_path)["metrics"]
    assert metrics["test/acc"] > 0.8  # 4 balanced topics: chance is 0.25


def test_adamw_uses_fused_kernels_unless_told_not_to(tmp_path, monkeypatch):
    def fused(run_dir):
        state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        return {group.get("fused") for group in state["optimizer_states"][0]["param_groups"]}

    run_train([*FAST, "export=false"], tmp_path / "auto", monkeypatch)
    run_train([*FAST, "export=false", "optimizer.fused=false"], tmp_path / "off", monkeypatch)
    assert fused(tmp_path / "auto") == {True}  # CPU has fused AdamW kernels (torch >= 2.4)
    assert fused(tmp_path / "off") == {None}
    # Fused or not, it is the same optimizer: the same metrics within float tolerance.
    auto, off = read_metrics(tmp_path / "auto")["metrics"], read_metrics(tmp_path / "off")["metrics"]
    assert auto == pytest.approx(off, abs=1e-4)


def test_same_seed_same_metrics(tmp_path, monkeypatch):
    args = [*FAST, "seed=3", "export=false"]
    run_train(args, tmp_path / "a", monkeypatch)
    run_train(args, tmp_path / "b", monkeypatch)
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert a["metrics"] == b["metrics"]
    run_train([*FAST, "seed=4", "export=false"], tmp_path / "c", monkeypatch)
    assert read_metrics(tmp_path / "c")["metrics"] != a["metrics"]


def test_resume_from_last_ckpt_ends_where_uninterrupted_run_ends(tmp_path, monkeypatch):
    from hydrahead.training.module import HeadModule

    args = [a for a in FAST if "max_epochs" not in a and "limit_train" not in a]
    args += ["export=false", "trainer.max_epochs=3", "backbone=tiny_roberta"]  # RoBERTa: dropout in use
    run_train(args, tmp_path / "full", monkeypatch)
    with monkeypatch.context() as interrupted:  # same config, stopped after its first epoch
        interrupted.setattr(
            HeadModule, "on_train_epoch_end", lambda self: setattr(self.trainer, "should_stop", True)
        )
        run_train(args, tmp_path / "part", monkeypatch)
    assert read_metrics(tmp_path / "part")["epochs"] == 1
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    run_train([*args, f"ckpt_path={last}"], tmp_path / "resumed", monkeypatch)
    full, resumed = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "resumed")
    assert resumed["epochs"] == full["epochs"] == 3
    assert resumed["global_step"] == full["global_step"]
    assert resumed["metrics"] == pytest.approx(full["metrics"], abs=1e-6)
    # The final weights, not only the best checkpoint's metrics, are those of the uninterrupted run.
    weights = [
        torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for run in ("full", "resumed", "part")
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_multirun_with_wandb_gives_separate_offline_runs(tmp_path, monkeypatch):
    from wandb_records import read_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    args = [a for a in FAST if a != "logger=none"] + ["logger=wandb", "head=linear,mlp", "export=false"]
    run_train(args, tmp_path, monkeypatch, multirun=True)
    files = sorted(tmp_path.glob("*/wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2
    runs = [read_run(f) for f in files]
    assert runs[0]["id"] != runs[1]["id"]
    assert runs[0]["group"] == runs[1]["group"] == tmp_path.name  # the sweep's id
    for job, run in zip(("0", "1"), runs):
        metrics = read_metrics(tmp_path / job)
        assert run["config"]["head"]["hidden_layers"] == ([] if job == "0" else [512, 256])
        assert run["config"]["params_total"] == metrics["params_total"]
        assert run["summary"]["test/acc"] == pytest.approx(metrics["metrics"]["test/acc"])
        assert f"head={'linear' if job == '0' else 'mlp'}" in run["name"]


def test_failed_run_records_status_and_error(tmp_path, monkeypatch):
    rows = ['{"text": "a b", "label": "x"}', '{"text": "c d", "label": "y"}']
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "dev.jsonl").write_text('{"text": "a", "label": "zebra"}\n')
    args = [a for a in FAST if not a.startswith("data")] + [
        "data=local",
        f"data.train_file={tmp_path}/train.jsonl",
        f"data.validation_file={tmp_path}/dev.jsonl",
    ]
    with pytest.raises(SystemExit) as stop:  # the data error surfaces inside the run: one line, exit 2
        run_train(args, tmp_path / "run", monkeypatch)
    assert stop.value.code == 2
    metrics = read_metrics(tmp_path / "run")
    assert metrics["status"] == "failed"
    assert "dev.jsonl:1: label 'zebra'" in metrics["error"]


def test_typo_override_fails_at_compose_time_naming_the_key(tmp_path):
    proc = train_cli("head.hiden_layers=[8]", f"paths.root_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode != 0
    assert "hiden_layers" in proc.stderr + proc.stdout
    assert not list(tmp_path.rglob("metrics.json"))  # nothing ran


def test_wrong_type_fails_naming_the_key(tmp_path):
    proc = train_cli("trainer.max_epochs=lots", f"paths.root_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode != 0
    assert "trainer.max_epochs" in proc.stderr + proc.stdout


def test_cfg_job_stays_light(tmp_path):
    """Printing the config imports neither torch nor transformers (that is what keeps it ~2 s)."""
    code = (
        "import sys; from hydrahead.cli.train import main; sys.argv=['hydrahead-train','--cfg','job']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'lightning') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert "head:" in proc.stdout and "backbone:" in proc.stdout
    assert "HEAVY []" in proc.stdout


def test_local_conll_bio_data_gets_entity_metrics(tmp_path, monkeypatch):
    from hydrahead.data.synthetic import CATEGORY_OF, generate

    for split, size in (("train", 64), ("dev", 32)):
        lines = []
        for example in generate("token", "multiclass", "train" if split == "train" else "validation", size):
            for word in example["tokens"]:
                lines.append(f"{word} {'B-' + CATEGORY_OF[word] if word in CATEGORY_OF else 'O'}")
            lines.append("")
        (tmp_path / f"{split}.conll").write_text("\n".join(lines))
    args = [a for a in FAST if not a.startswith("data.")] + [
        "data=local",
        "data.level=token",
        f"data.train_file={tmp_path}/train.conll",
        f"data.validation_file={tmp_path}/dev.conll",
        "export=false",
    ]
    run_train(args, tmp_path / "run", monkeypatch)
    metrics = read_metrics(tmp_path / "run")
    assert metrics["status"] == "completed"
    assert {"val/acc", "val/entity_f1", "val/entity_precision", "val/entity_recall"} <= set(
        metrics["metrics"]
    )
    assert (
        "test/acc" not in metrics["metrics"]
    )  # no test split: the best checkpoint is evaluated on validation
    assert json.loads((tmp_path / "run" / "labels.json").read_text())["labels"] == metrics["labels"]
    assert all(label == "O" or label.startswith("B-") for label in metrics["labels"])
