"""Exports: a self-contained HydraHead folder (remote code) or the backbone's native HF class."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import encode
from hydrahead.build import build_model
from hydrahead.cli.selftest import AUTO_CLASS_FOR_LEVEL, logits_in_fresh_process
from hydrahead.export import export_model, native_head_kind
from hydrahead.modeling import HydraHeadModel

NUM_LABELS = 3
CODE_FILES = ("configuration_hydrahead.py", "modeling_hydrahead.py", "head_spec.py")
ALLOWED_IMPORTS = {"torch", "transformers", "__future__"}


@dataclass
class Export:
    name: str
    dir: Path
    level: str
    native: bool
    logits: torch.Tensor  # the in-memory model's eval logits on the saved inputs
    inputs: Path
    model: object
    tokenizer: object


# name: (backbone, build kwargs, native)
CASES = {
    "sequence": (
        "tiny:bert",
        dict(level="sequence", head={"layer": [2, 4], "pooling": "mean", "hidden_layers": [8]}),
        False,
    ),
    "sequence-multilabel": (
        "tiny:electra",
        dict(level="sequence", task="multilabel", head={"pooling": "max"}),
        False,
    ),
    "token": ("tiny:deberta-v2", dict(level="token", head={"layer": -2, "hidden_layers": [8]}), False),
    "token-distilbert": ("tiny:distilbert", dict(level="token", freeze=2), False),
    "positions": (
        "tiny:roberta",
        dict(level="positions", head={"layer": "all", "combine": "scalar_mix"}),
        False,
    ),
    "native-bert-token": ("tiny:bert", dict(level="token"), True),
    "native-bert-sequence": ("tiny:bert", dict(level="sequence", head={"pooling": "pooler"}), True),
    "native-roberta-sequence": (
        "tiny:roberta",
        dict(level="sequence", head={"pooling": "pooler"}, task="multilabel"),
        True,
    ),
    "native-electra-token": ("tiny:electra", dict(level="token"), True),
}


def _inputs(tokenizer, level):
    batch = encode(tokenizer)
    if level == "positions":
        batch["mask_indices"] = torch.tensor([[1, 3, 0], [2, 0, 0]])
    return batch


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Every case exported once; all reloaded in ONE fresh process where hydrahead is unimportable."""
    root = tmp_path_factory.mktemp("exports")
    made, jobs = {}, []
    for name, (backbone, kwargs, native) in CASES.items():
        model, tokenizer = build_model(backbone, labels=NUM_LABELS, seed=7, **kwargs)
        with torch.no_grad():  # make the head non-trivial (its bias starts at zero)
            model.head.classifier.bias.normal_()
            if model.mix is not None:  # and the scalar mix (it starts uniform)
                model.mix.weights.normal_()
                model.mix.gamma.fill_(1.3)
        model.eval()
        inputs = _inputs(tokenizer, model.config.level)
        with torch.no_grad():
            logits = model(**inputs).logits
        out = export_model(model, root / name, tokenizer, native=native)
        torch.save(inputs, root / f"{name}-inputs.pt")
        made[name] = Export(
            name, out, model.config.level, native, logits, root / f"{name}-inputs.pt", model, tokenizer
        )
        jobs.append(
            {
                "dir": out,
                "auto_class": AUTO_CLASS_FOR_LEVEL[model.config.level],
                "trust_remote_code": not native,
                "inputs": root / f"{name}-inputs.pt",
            }
        )
    results = logits_in_fresh_process(jobs, timeout=300)
    return {name: (made[name], result) for name, result in zip(made, results)}


HYDRAHEAD_CASES = [name for name, case in CASES.items() if not case[2]]
NATIVE_CASES = [name for name, case in CASES.items() if case[2]]


# -- folder layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HYDRAHEAD_CASES)
def test_hydrahead_export_layout(exports, name):
    export, _ = exports[name]
    files = {p.name for p in export.dir.iterdir()}
    assert "model.safetensors" in files
    assert not any(f.endswith(".bin") for f in files), files
    assert set(CODE_FILES) <= files
    assert "tokenizer.json" in files and "tokenizer_config.json" in files
    config = json.loads((export.dir / "config.json").read_text())
    assert config["model_type"] == "hydrahead"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_hydrahead.HydraHeadConfig",
        "AutoModel": "modeling_hydrahead.HydraHeadModel",
        "AutoModelForSequenceClassification": "modeling_hydrahead.HydraHeadModel",
        "AutoModelForTokenClassification": "modeling_hydrahead.HydraHeadModel",
    }
    assert config["level"] == export.level
    assert config["backbone_layers"] == 4


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


def test_exported_code_imports_only_torch_and_transformers(exports):
    export, _ = exports["token"]
    modeling = _imports(export.dir / "modeling_hydrahead.py")
    configuration = _imports(export.dir / "configuration_hydrahead.py")
    spec = _imports(export.dir / "head_spec.py")
    for found in (modeling, configuration):
        relative = {name for name in found if name.startswith(".")}
        absolute = {name.split(".")[0] for name in found - relative}
        assert absolute <= ALLOWED_IMPORTS, absolute
        assert relative <= {".configuration_hydrahead", ".head_spec"}, relative
    assert ".configuration_hydrahead" in modeling
    assert ".head_spec" in configuration
    assert spec <= {"__future__", "dataclasses", "typing"}, spec  # the head spec needs the stdlib only
    # The copies are the package's own files.
    package = Path(__import__("hydrahead.modeling").modeling.__file__).parent
    for name in CODE_FILES:
        assert (export.dir / name).read_text() == (package / name).read_text()


def test_exported_tokenizer_round_trips(exports):
    from transformers import AutoTokenizer

    for name in ("token", "positions", "native-bert-token"):
        export, _ = exports[name]
        reloaded = AutoTokenizer.from_pretrained(export.dir)
        assert encode(reloaded)["input_ids"].tolist() == encode(export.tokenizer)["input_ids"].tolist()


@pytest.mark.parametrize("name", NATIVE_CASES)
def test_native_export_layout(exports, name):
    export, _ = exports[name]
    files = {p.name for p in export.dir.iterdir()}
    assert "model.safetensors" in files
    assert not any(f.endswith((".py", ".bin")) for f in files), files
    config = json.loads((export.dir / "config.json").read_text())
    assert "auto_map" not in config
    assert config["model_type"] == export.model.config.backbone_config.model_type
    assert config["id2label"] == {str(k): v for k, v in export.model.config.id2label.items()}


# -- reload in a fresh process ----------------------------------------------------------------------


@pytest.mark.parametrize("name", HYDRAHEAD_CASES)
def test_remote_code_reload_without_hydrahead_gives_equal_logits(exports, name):
    export, result = exports[name]
    # Loaded from the folder's own code (transformers_modules...), not from an installed hydrahead.
    assert result["class"].startswith("transformers_modules."), result["class"]
    assert result["class"].endswith(".modeling_hydrahead.HydraHeadModel")
    assert torch.equal(result["logits"], export.logits)


@pytest.mark.parametrize("name", NATIVE_CASES)
def test_native_reload_without_remote_code_gives_equal_logits(exports, name):
    export, result = exports[name]
    family = {"bert": "Bert", "roberta": "Roberta", "electra": "Electra"}[
        export.model.config.backbone_config.model_type
    ]
    kind = native_head_kind(export.model.config)
    expected = f"{family}ForTokenClassification" if kind == "token" else f"{family}ForSequenceClassification"
    assert result["class"].startswith("transformers.models.")
    assert result["class"].endswith("." + expected)
    assert torch.equal(result["logits"], export.logits)


def test_fresh_process_really_cannot_import_hydrahead(tmp_path):
    """The reload helper's guarantee, checked: a folder whose code imports hydrahead fails there."""
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS)
    out = export_model(model, tmp_path / "export")
    modeling = out / "modeling_hydrahead.py"
    modeling.write_text("import hydrahead\n" + modeling.read_text())
    torch.save(encode(tokenizer), tmp_path / "inputs.pt")
    job = {
        "dir": out,
        "auto_class": "AutoModelForSequenceClassification",
        "trust_remote_code": True,
        "inputs": tmp_path / "inputs.pt",
    }
    with pytest.raises(RuntimeError, match="import of hydrahead halted"):
        logits_in_fresh_process([job], timeout=300)


# -- native=True on a non-standard head -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"head": {"hidden_layers": [8]}, "level": "token"},
        {"head": {"pooling": "mean"}},
        {"level": "positions"},
    ],
)
def test_native_export_of_non_standard_head_raises(tmp_path, kwargs):
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, **kwargs)
    with pytest.raises(ValueError, match="native HF class"):
        export_model(model, tmp_path / "out", tokenizer, native=True)
    assert not (tmp_path / "out" / "model.safetensors").exists()


# -- in-process loading ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", HYDRAHEAD_CASES)
def test_auto_classes_load_hydrahead_without_trust_remote_code_in_process(exports, name):
    import transformers

    import hydrahead.modeling  # noqa: F401  (registers with the Auto classes)

    export, _ = exports[name]
    auto = getattr(transformers, AUTO_CLASS_FOR_LEVEL[export.level])
    model = auto.from_pretrained(export.dir).eval()
    assert type(model).__module__.startswith("hydrahead"), type(model).__module__
    assert isinstance(model, HydraHeadModel)
    with torch.no_grad():
        logits = model(**torch.load(export.inputs, weights_only=True)).logits
    assert torch.equal(logits, export.logits)


def test_every_auto_class_loads_the_same_hydrahead_model(exports):
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification

    export, _ = exports["token"]
    for auto in (AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification):
        assert type(auto.from_pretrained(export.dir)) is HydraHeadModel


def test_reloaded_model_keeps_config_and_truncation(exports):
    export, _ = exports["token"]
    model = HydraHeadModel.from_pretrained(export.dir)
    assert model.config.head == export.model.config.head
    assert model.config.level == "token"
    assert model.config.backbone_layers == 4
    assert model.config.backbone_config.num_hidden_layers == 3  # layer -2 of 4
    assert model.layer_indices == [3]


def test_reloaded_model_keeps_training(exports):
    export, _ = exports["token-distilbert"]
    model = HydraHeadModel.from_pretrained(export.dir)
    assert model.config.freeze == 2
    batch = encode(export.tokenizer)
    labels = torch.randint(0, NUM_LABELS, batch["input_ids"].shape)
    labels[batch["attention_mask"] == 0] = -100
    model.eval()
    with torch.no_grad():
        first = model(**batch, labels=labels).loss.item()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert any(p.requires_grad for p in model.backbone.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    for _ in range(10):
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        last = model(**batch, labels=labels).loss.item()
    assert last < first - 0.1, (first, last)


def test_export_without_tokenizer_writes_only_the_model(tmp_path):
    model, _ = build_model("tiny:bert", labels=NUM_LABELS)
    out = export_model(model, tmp_path / "bare")
    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and "config.json" in files
    assert "tokenizer.json" not in files
