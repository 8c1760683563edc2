"""LoRA backbones (backbone.adapter=lora): what trains, what a checkpoint keeps, the merged export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FAST, TEXTS, read_metrics, run_train
from hydrahead.build import build_model
from hydrahead.config import BackboneConfig, ConfigError, compose, validate

LORA = [
    *[a for a in FAST if "max_epochs" not in a and "limit_train" not in a],
    "trainer.max_epochs=2",
    "backbone.adapter=lora",
    "backbone.lora.r=4",
    "optimizer.lr=1e-2",
]

# A fresh interpreter where neither peft nor hydrahead can be imported: only the folder counts.
_RELOAD = r"""
import json, sys
sys.modules["peft"] = None
sys.modules["hydrahead"] = None
import torch
from transformers import AutoModelForSequenceClassification
job = json.loads(sys.argv[1])
model = AutoModelForSequenceClassification.from_pretrained(job["dir"], trust_remote_code=True).eval()
inputs = torch.load(job["inputs"], weights_only=True)
with torch.no_grad():
    logits = model(**inputs).logits
head = {k: v for k, v in model.state_dict().items() if k.startswith("head.")}
torch.save({"logits": logits, "head": head, "peft": "peft" in sys.modules and sys.modules["peft"] is not None},
           job["out"])
"""


def _inputs(tokenizer) -> dict:
    return dict(tokenizer(list(TEXTS), padding=True, return_tensors="pt"))


def _logits(model, inputs) -> torch.Tensor:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(**inputs).logits
    model.train(was_training)
    return logits


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """One LoRA run (tiny BERT, 2 epochs, exported); the trained in-memory model as export_model got it."""
    import hydrahead.export

    root = tmp_path_factory.mktemp("lora")
    seen = {}
    real_export = hydrahead.export.export_model

    def capturing(model, out_dir, tokenizer=None, native=False, **kwargs):
        seen.update(model=model, tokenizer=tokenizer, inputs=_inputs(tokenizer))
        seen["logits"] = _logits(model, seen["inputs"])
        out = real_export(model, out_dir, tokenizer, native=native, **kwargs)
        seen["logits_after"] = _logits(model, seen["inputs"])
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hydrahead.export, "export_model", capturing)
        run_train([*LORA, "export=true"], root / "run", mp)
    seen["dir"] = root / "run"
    return seen


def test_only_the_adapter_and_the_head_train(lora_run):
    from hydrahead.adapters import has_adapter

    model = lora_run["model"]
    assert has_adapter(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n or not n.startswith("backbone.") for n in trainable)
    assert any(n.startswith("head.") for n in trainable) and any(".lora_" in n for n in trainable)
    # The base weights are those the run started from; the adapter and the head moved.
    fresh, _ = build_model(
        BackboneConfig(name_or_path="tiny:bert", adapter="lora", lora={"r": 4}),
        labels=model.config.num_labels,
        head=dict(model.config.head),
        seed=0,
    )
    trained, start = model.state_dict(), fresh.state_dict()
    assert trained.keys() == start.keys()
    base = [k for k in trained if k.startswith("backbone.") and ".lora_" not in k]
    assert base and all(torch.equal(trained[k], start[k]) for k in base)
    assert not all(torch.equal(trained[k], start[k]) for k in trained if ".lora_B" in k)
    assert not torch.equal(trained["head.classifier.weight"], start["head.classifier.weight"])
    record = read_metrics(lora_run["dir"])
    adapter_params = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    head_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))
    assert record["adapter"]["name"] == "lora" and record["adapter"]["r"] == 4
    assert record["adapter"]["target_modules"] == ["query", "value"] and record["adapter"]["modules"] == 8
    assert record["adapter"]["trainable_params"] == adapter_params
    assert record["params_trainable"] == adapter_params + head_params
    assert record["feature_cache"].startswith("off")


def test_checkpoints_hold_the_adapter_and_the_head_only(lora_run):
    total = sum(p.numel() for p in lora_run["model"].parameters())
    for name in ("best", "last"):
        state = torch.load(lora_run["dir"] / "checkpoints" / f"{name}.ckpt", weights_only=True)
        keys = list(state["state_dict"])
        assert state["adapter_only"] is True and "frozen_backbone_dropped" not in state
        assert all(".lora_" in k or not k.startswith("model.backbone.") for k in keys)
        assert any(".lora_A" in k for k in keys) and "model.head.classifier.weight" in keys
        assert sum(v.numel() for v in state["state_dict"].values()) < total / 5
        assert state["backbone_ref"]["random_init_seed"] == 0  # what export rebuilds the base from


def test_export_is_merged_and_loads_without_peft_with_identical_logits(lora_run, tmp_path):
    from safetensors import safe_open

    export = lora_run["dir"] / "model"
    with safe_open(str(export / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora_" in k for k in keys) and "head.classifier.weight" in keys
    assert not any("base_layer" in k or "base_model" in k for k in keys)
    # The trained model itself is untouched by the export (it merged a copy).
    assert torch.equal(lora_run["logits_after"], lora_run["logits"])
    inputs = tmp_path / "inputs.pt"
    torch.save(lora_run["inputs"], inputs)
    job = {"dir": str(export), "inputs": str(inputs), "out": str(tmp_path / "out.pt")}
    proc = subprocess.run(
        [sys.executable, "-c", _RELOAD, json.dumps(job)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(job["out"], weights_only=True)
    assert got["peft"] is False
    torch.testing.assert_close(got["logits"], lora_run["logits"], atol=1e-5, rtol=0)
    model_head = {k: v for k, v in lora_run["model"].state_dict().items() if k.startswith("head.")}
    assert got["head"].keys() == model_head.keys() and model_head
    assert all(torch.equal(got["head"][k], model_head[k]) for k in model_head)


def test_export_from_the_run_dir_rebuilds_and_merges_the_adapter(lora_run, tmp_path):
    from hydrahead.export import export_run
    from hydrahead.modeling import HydraHeadModel

    out = export_run(lora_run["dir"], out=tmp_path / "again")
    again = HydraHeadModel.from_pretrained(out)
    assert not any(".lora_" in k for k in again.state_dict())
    torch.testing.assert_close(_logits(again, lora_run["inputs"]), lora_run["logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (
            ["backbone.freeze=true"],
            ["backbone.freeze=true", "backbone.adapter=lora", "backbone.freeze=false"],
        ),
        (["backbone.cache=on"], ["backbone.cache=on", "backbone.adapter=lora"]),
        (["backbone.freeze=4"], ["backbone.freeze=4", "backbone.adapter=lora", "no layer"]),
        (["backbone.lora.r=0"], ["backbone.lora.r"]),
        (["backbone.lora.dropout=1.0"], ["backbone.lora.dropout"]),
        (["backbone.adapter=prefix"], ["backbone.adapter", "lora"]),
    ],
)
def test_bad_adapter_settings_fail_validation_naming_the_keys(overrides, needles, tmp_path):
    cfg = compose([*LORA, *overrides, f"paths.root_dir={tmp_path}"], output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert all(n in str(err.value) for n in needles), str(err.value)


@pytest.mark.parametrize("name", ["tiny:bert", "tiny:roberta", "tiny:distilbert", "tiny:deberta-v2"])
def test_freeze_n_puts_no_adapter_in_the_embeddings_or_bottom_layers(name):
    from hydrahead.modeling import find_layer_list

    model, _ = build_model(BackboneConfig(name_or_path=name, adapter="lora", freeze=2), labels=2)
    stack = find_layer_list(model.backbone)
    adapted = [sum(".lora_" in n for n, _ in block.named_parameters()) for block in stack]
    assert adapted[:2] == [0, 0] and all(adapted[2:])
    embedding_names = [n for n, _ in model.backbone.named_parameters() if "embed" in n]
    assert embedding_names and not any(".lora_" in n for n in embedding_names)
    model.train()
    assert not any(m.training for m in stack[1].modules()) and all(m.training for m in stack[2].modules())
    # freeze=false: every query and value projection
    model, _ = build_model(BackboneConfig(name_or_path=name, adapter="lora"), labels=2)
    assert all(sum(".lora_" in n for n, _ in b.named_parameters()) for b in find_layer_list(model.backbone))


def test_unknown_target_modules_name_the_key_and_the_modules_there_are():
    bb = BackboneConfig(name_or_path="tiny:bert", adapter="lora", lora={"target_modules": ["qkv"]})
    with pytest.raises(ConfigError, match=r"target_modules=\['qkv'\]: no module.* key, .*query, .*value"):
        build_model(bb)


def test_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    from hydrahead.training.module import HeadModule

    args = [*LORA, "export=false"]
    run_train(args, tmp_path / "full", monkeypatch)
    with monkeypatch.context() as interrupted:  # the same run, stopped after its first epoch
        interrupted.setattr(
            HeadModule, "on_train_epoch_end", lambda self: setattr(self.trainer, "should_stop", True)
        )
        run_train(args, tmp_path / "part", monkeypatch)
    assert read_metrics(tmp_path / "part")["epochs"] == 1
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    run_train([*args, f"ckpt_path={last}"], tmp_path / "resumed", monkeypatch)
    full, resumed = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "resumed")
    assert resumed["global_step"] == full["global_step"]
    assert resumed["metrics"] == pytest.approx(full["metrics"], abs=1e-6)
    weights = [
        torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for run in ("full", "resumed")
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_resuming_without_the_adapter_is_refused_naming_the_key(lora_run, tmp_path):
    last = lora_run["dir"] / "checkpoints" / "last.ckpt"
    args = [*LORA, "backbone.adapter=null", f"ckpt_path={last}", f"paths.root_dir={tmp_path}"]
    with pytest.raises(ConfigError, match="backbone.adapter: checkpoint 'lora', config None"):
        validate(compose(args, output_dir=tmp_path))


def test_a_lora_run_reproduces(lora_run, tmp_path, monkeypatch):
    from hydrahead.cli.reproduce import main

    monkeypatch.chdir(tmp_path)
    assert main([str(lora_run["dir"]), "--out", str(tmp_path / "again")]) == 0
    assert read_metrics(Path(tmp_path / "again"))["adapter"] == read_metrics(lora_run["dir"])["adapter"]
