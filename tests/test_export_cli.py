"""hydrahead-export: a full export rebuilt from a run's checkpoint, the backbone reference it checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FAST, encode, run_job
from hydrahead.backbone_ref import backbone_reference, check_backbone_reference
from hydrahead.build import build_model
from hydrahead.cli.export import main as export_main
from hydrahead.cli.selftest import logits_in_fresh_process
from hydrahead.config.schema import BackboneConfig, ConfigError, HeadConfig
from hydrahead.training.checkpoint import read_checkpoint

FROZEN = [*FAST, "backbone.freeze=true", "export=false", "head.pooling=pooler"]


def export_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hydrahead.cli.export", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def own_model(backbone: BackboneConfig, run_dir: Path):
    """The run's model as training left it: built from its config, the best checkpoint's weights on it."""
    state = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    saved = state["hyper_parameters"]
    head = HeadConfig(**{k: v for k, v in saved["head"].items() if k != "level"}).model_spec()
    model, tokenizer = build_model(backbone, labels=saved["labels"], head=head, seed=saved["seed"])
    weights = {k[len("model.") :]: v for k, v in state["state_dict"].items()}
    model.load_state_dict(weights, strict=not state.get("frozen_backbone_dropped"))
    return model.eval(), tokenizer


def copy_run(source: Path, target: Path, **record) -> Path:
    """A copy of a run dir (no export) whose record points at its own checkpoints, not the original's."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("model"))
    saved = json.loads((target / "metrics.json").read_text())
    saved.pop("best_checkpoint", None)
    (target / "metrics.json").write_text(json.dumps({**saved, **record}))
    return target


def logits(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


@pytest.fixture(scope="module")
def frozen(tmp_path_factory, local_bert_dir):
    """A frozen run (head only in its checkpoints, no export) on its own copy of the local BERT."""
    root = tmp_path_factory.mktemp("frozen")
    shutil.copytree(local_bert_dir, root / "bert")
    run_job([*FROZEN, f"backbone.name_or_path={root / 'bert'}"], root / "run")
    return root / "bert", root / "run"


def test_frozen_checkpoint_keeps_head_and_backbone_reference(frozen):
    bert, run_dir = frozen
    state = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    assert state["frozen_backbone_dropped"] is True
    assert not any(k.startswith("model.backbone.") for k in state["state_dict"])
    ref = state["backbone_ref"]
    assert ref["path"] == str(bert.resolve()) and ref["revision"] is None
    assert set(ref["files"]) == {"model.safetensors"}
    assert not (run_dir / "model").exists()


def test_frozen_run_exports_and_loads_without_hydrahead(frozen, tmp_path):
    """hydrahead and --native exports, reloaded where hydrahead cannot be imported: the run's own logits."""
    bert, run_dir = frozen
    done = export_cli(run_dir)
    assert done.returncode == 0, done.stderr
    native_dir = tmp_path / "native"
    assert export_main([str(run_dir), "--native", "--out", str(native_dir)]) == 0
    model, tokenizer = own_model(BackboneConfig(name_or_path=str(bert), freeze=True), run_dir)
    inputs = encode(tokenizer)
    torch.save(inputs, tmp_path / "inputs.pt")
    jobs = [
        {
            "dir": run_dir / "model",
            "auto_class": "AutoModelForSequenceClassification",
            "trust_remote_code": True,
        },
        {"dir": native_dir, "auto_class": "AutoModelForSequenceClassification", "trust_remote_code": False},
    ]
    for job in jobs:
        job["inputs"] = tmp_path / "inputs.pt"
    hydra, native = logits_in_fresh_process(jobs, timeout=120)
    expected = logits(model, inputs)
    assert hydra["class"].endswith("HydraHeadModel")
    assert native["class"] == "transformers.models.bert.modeling_bert.BertForSequenceClassification"
    torch.testing.assert_close(hydra["logits"], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(native["logits"], expected, rtol=0, atol=1e-5)


def test_changed_backbone_weights_are_refused(tmp_path, local_bert_dir, capsys):
    shutil.copytree(local_bert_dir, tmp_path / "bert")
    run_job([*FROZEN, f"backbone.name_or_path={tmp_path / 'bert'}"], tmp_path / "run")
    weights = tmp_path / "bert" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # the last byte of the last tensor
    weights.write_bytes(bytes(data))
    assert export_main([str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(weights.resolve()) in err and "changed since training" in err
    assert not (tmp_path / "run" / "model").exists()
    weights.unlink()
    assert export_main([str(tmp_path / "run")]) == 2
    assert "model.safetensors is missing" in capsys.readouterr().err


def test_fine_tuned_run_exports_from_its_checkpoint_alone(tmp_path, local_bert_dir):
    """Its checkpoint holds every weight: the source's weight files are not needed, and the export is
    the one the run wrote itself."""
    shutil.copytree(local_bert_dir, tmp_path / "bert")
    run_job([*FAST, f"backbone.name_or_path={tmp_path / 'bert'}", "export=true"], tmp_path / "run")
    (tmp_path / "bert" / "model.safetensors").unlink()
    assert export_main([str(tmp_path / "run"), "--out", str(tmp_path / "again")]) == 0
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "again")
    inputs = encode(tokenizer)
    ours = AutoModelForSequenceClassification.from_pretrained(tmp_path / "again").eval()
    runs = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model").eval()
    torch.testing.assert_close(logits(ours, inputs), logits(runs, inputs), rtol=0, atol=0)


def test_not_a_run_dir_and_missing_checkpoints_are_refused(frozen, tmp_path, capsys):
    assert export_main([str(tmp_path)]) == 2
    assert f"{tmp_path} is not a run directory" in capsys.readouterr().err
    assert export_main([str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
    run_dir = copy_run(frozen[1], tmp_path / "run")
    (run_dir / "checkpoints" / "best.ckpt").replace(run_dir / "checkpoints" / "last.ckpt")
    assert export_main([str(run_dir)]) == 2
    assert (
        "no best checkpoint in checkpoints/; there is last.ckpt (--checkpoint last)"
        in capsys.readouterr().err
    )
    shutil.rmtree(run_dir / "checkpoints")
    assert export_main([str(run_dir), "--checkpoint", "last"]) == 2
    assert "no last checkpoint" in capsys.readouterr().err


def test_incomplete_run_exports_with_a_warning(frozen, tmp_path, capsys):
    run_dir = copy_run(frozen[1], tmp_path / "run", status="failed", error="boom")
    (run_dir / "other").mkdir()
    (run_dir / "other" / "notes.txt").write_text("keep me")
    assert export_main([str(run_dir), "--out", str(run_dir / "other")]) == 2
    assert "exists and is not an export" in capsys.readouterr().err
    best = run_dir / "checkpoints" / "best.ckpt"
    assert export_main([str(run_dir), "--checkpoint", str(best)]) == 0
    captured = capsys.readouterr()
    assert "WARNING: the run's status is 'failed' (boom): exporting best.ckpt" in captured.err
    assert (run_dir / "model" / "config.json").is_file()
    assert export_main([str(run_dir)]) == 0  # an existing export is replaced
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".model")) == []


def test_native_is_refused_for_a_non_standard_head(frozen, tmp_path, capsys):
    run_dir = copy_run(frozen[1], tmp_path / "run")
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    state = dict(read_checkpoint(ckpt))
    state["hyper_parameters"] = {
        **state["hyper_parameters"],
        "head": {**state["hyper_parameters"]["head"], "pooling": "mean"},
    }
    torch.save(state, ckpt.with_suffix(".tmp"))  # then renamed: the loaded state maps the old file
    ckpt.with_suffix(".tmp").replace(ckpt)
    assert export_main([str(run_dir), "--native"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hydrahead-export: --native: only a standard head") and len(err.splitlines()) == 1
    assert not (run_dir / "model").exists()


# -- the reference -------------------------------------------------------------------------------


def test_reference_of_random_hub_and_embedded_backbones():
    assert backbone_reference(BackboneConfig(name_or_path="tiny:roberta"), seed=3) == {
        "name_or_path": "tiny:roberta",
        "revision": None,
        "random_init_seed": 3,
    }
    unloaded = BackboneConfig(name_or_path="minilm", pretrained=False)
    assert backbone_reference(unloaded, seed=1)["random_init_seed"] == 1
    hub = backbone_reference(BackboneConfig(name_or_path="nobody-here/no-such-model"), seed=0)
    assert hub == {"name_or_path": "nobody-here/no-such-model", "revision": None, "commit": None}
    check_backbone_reference(hub)  # a hub commit cannot change under it
    embedded = backbone_reference(BackboneConfig(name_or_path="minilm"), seed=0)
    assert Path(embedded["path"]).is_dir() and "model.safetensors" in embedded["files"]


def test_reference_check_names_an_added_weight_file(tmp_path, local_bert_dir):
    shutil.copytree(local_bert_dir, tmp_path / "bert")
    ref = backbone_reference(BackboneConfig(name_or_path=str(tmp_path / "bert")), seed=0)
    check_backbone_reference(ref)
    (tmp_path / "bert" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"pytorch_model\.bin was added since training"):
        check_backbone_reference(ref)


def test_lightning_module_puts_the_reference_in_frozen_checkpoints(local_bert_dir):
    from hydrahead.config.schema import OptimizerConfig, SchedulerConfig, TaskConfig
    from hydrahead.training.module import HeadModule

    hparams = {"backbone": {"name_or_path": str(local_bert_dir), "freeze": True}, "seed": 5}
    for freeze, expected in ((True, backbone_reference(BackboneConfig(str(local_bert_dir)), 5)), (2, None)):
        model, _ = build_model(str(local_bert_dir), freeze=freeze)
        module = HeadModule(model, OptimizerConfig(), SchedulerConfig(), TaskConfig(), hparams=hparams)
        checkpoint = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}
        module.on_save_checkpoint(checkpoint)
        assert checkpoint.get("backbone_ref") == expected
