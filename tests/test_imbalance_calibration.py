"""Class weights, positive weights, label smoothing; calibration metrics, temperature scaling; reports."""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch

from conftest import FAST, read_metrics, run_train
from hydrahead.config.schema import ConfigError, TaskConfig
from hydrahead.modeling.modeling_hydrahead import compute_loss
from hydrahead.training.evaluation import fit_temperature
from hydrahead.training.metrics import build_metrics

FILLER = "the a and of to in on at with is was big small old new good bad happy sad".split()


def _imbalanced_files(folder, seed: int = 0):
    """Two classes, 9:1. The rare class says "cat" in 70 % of its texts, the common one in 15 %:
    P(rare | cat) is about 1/3, so the plain loss never predicts rare; weighted classes do."""
    rng = random.Random(seed)
    paths = {}
    for split, size in (("train", 1200), ("validation", 400), ("test", 400)):
        rows = []
        for _ in range(size):
            rare = rng.random() < 0.1
            words = [rng.choice(FILLER) for _ in range(4)]
            if rng.random() < (0.7 if rare else 0.15):
                words[rng.randrange(4)] = "cat"
            rows.append({"text": " ".join(words), "label": "rare" if rare else "common"})
        paths[split] = folder / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def _recall(run_dir, label: str) -> float:
    with open(run_dir / "per_class.csv", newline="") as handle:
        return next(float(row["recall"]) for row in csv.DictReader(handle) if row["label"] == label)


def test_balanced_class_weights_raise_minority_recall(tmp_path, monkeypatch):
    files = _imbalanced_files(tmp_path)
    base = [
        "backbone=tiny_bert",
        "backbone.freeze=true",
        "backbone.init_seed=0",
        "data=local",
        f"data.train_file={files['train']}",
        f"data.validation_file={files['validation']}",
        f"data.test_file={files['test']}",
        "head.pooling=mean",
        "trainer.max_epochs=8",
        "task.monitor=val/f1_macro",  # accuracy would pick the head that says "common" to all
        "logger=none",
    ]
    plain, weighted = tmp_path / "plain", tmp_path / "weighted"
    run_train(base, plain, monkeypatch)
    run_train([*base, "task.class_weights=balanced"], weighted, monkeypatch)
    record = read_metrics(weighted)
    counts = record["loss"]["train_counts"]
    assert record["loss"]["class_weights_from"] == "balanced"
    n, k = sum(counts.values()), len(counts)
    for label, weight in record["loss"]["class_weights"].items():
        assert weight == pytest.approx(n / (k * counts[label]), rel=1e-5)
    assert "loss" not in read_metrics(plain)
    assert _recall(weighted, "rare") > _recall(plain, "rare") + 0.3
    assert _recall(weighted, "rare") >= 0.35


def test_a_weight_list_of_the_wrong_length_names_both_counts_before_the_encoder_runs(
    tmp_path, monkeypatch, count_backbone_calls
):
    with pytest.raises(SystemExit):
        run_train([*FAST, "backbone.freeze=true", "task.class_weights=[1,2]"], tmp_path / "r", monkeypatch)
    record = read_metrics(tmp_path / "r")
    assert record["status"] == "failed"
    assert "task.class_weights has 2 entries but the data has 4 labels" in record["error"]
    assert count_backbone_calls == []


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"name": "multilabel", "class_weights": "balanced"}, "task.class_weights is for task=multiclass"),
        ({"pos_weight": [1.0]}, "task.pos_weight is for task=multilabel"),
        ({"class_weights": "inverse"}, "must be null, balanced or a list"),
        ({"class_weights": [1, -2]}, "non-negative numbers"),
        ({"label_smoothing": 1.0}, "task.label_smoothing=1.0 must be in [0, 1)"),
    ],
)
def test_bad_loss_options_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        TaskConfig(**overrides)


def test_compute_loss_options_match_torch():
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 1, 2, -100, 1, 0])
    weights = [0.5, 2.0, 1.0]
    expected = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(weights), ignore_index=-100, label_smoothing=0.1
    )(logits, labels)
    got = compute_loss(logits, labels, "multiclass", class_weights=weights, label_smoothing=0.1)
    assert torch.allclose(got, expected)
    # multilabel: pos_weight as BCEWithLogits; smoothing moves targets towards 1/2; -100 rows ignored
    logits = torch.randn(4, 3)
    labels = torch.tensor([[1, 0, 1], [0, 0, 1], [-100, -100, -100], [1, 1, 0]])
    kept = labels[[0, 1, 3]].float()
    targets = kept * 0.8 + 0.1
    expected = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([3.0, 1.0, 0.5]))(
        logits[[0, 1, 3]], targets
    )
    got = compute_loss(logits, labels, "multilabel", pos_weight=[3.0, 1.0, 0.5], label_smoothing=0.2)
    assert torch.allclose(got, expected)


def _miscalibrated(n: int = 4000, classes: int = 5, scale: float = 4.0):
    """Labels drawn from softmax(true logits); the model reports the true logits times ``scale``."""
    generator = torch.Generator().manual_seed(0)
    true = torch.randn(n, classes, generator=generator) * 1.5
    labels = torch.multinomial(true.softmax(-1), 1, generator=generator).squeeze(1)
    return true * scale, labels, true


def test_temperature_scaling_lowers_ece_of_an_overconfident_model():
    logits, labels, _ = _miscalibrated()
    temperature = fit_temperature(logits, labels, "multiclass")
    assert temperature == pytest.approx(4.0, rel=0.1)  # the scale it was made overconfident by

    def ece(scale):
        metrics = build_metrics("multiclass", 5)
        metrics.update((logits / scale).softmax(-1), labels)
        return float(metrics.compute()["ece"])

    assert ece(temperature) < ece(1.0) / 3
    # multilabel: one temperature over every label's sigmoid
    ml_logits = torch.randn(3000, 4, generator=torch.Generator().manual_seed(1))
    ml_labels = torch.bernoulli(ml_logits.sigmoid(), generator=torch.Generator().manual_seed(2)).long()
    assert fit_temperature(ml_logits * 3, ml_labels, "multilabel") == pytest.approx(3.0, rel=0.15)


def test_calibrated_run_exports_its_temperature_and_reports_ece_before_and_after(tmp_path, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    run_dir = tmp_path / "run"
    run_train(
        [
            *FAST,
            "calibrate=temperature",
            "export=true",
            "trainer.max_epochs=2",
            "++trainer.limit_train_batches=4",
        ],
        run_dir,
        monkeypatch,
    )
    record = read_metrics(run_dir)
    calibration = record["calibration"]
    temperature = calibration["temperature"]
    assert temperature > 0 and temperature != 1.0
    for key in ("val/ece", "val/brier", "val/nll", "test/ece", "test/nll"):
        assert key in calibration["before"] and key in calibration["after"]
    assert calibration["after"]["val/nll"] <= calibration["before"]["val/nll"] + 1e-9  # fitted on it
    assert calibration["before"]["val/ece"] == pytest.approx(record["metrics"]["val/ece"], abs=1e-6)
    assert record["metrics"]["test/ece_calibrated"] == pytest.approx(calibration["after"]["test/ece"])
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["calibration_temperature"] == pytest.approx(temperature)
    model = AutoModelForSequenceClassification.from_pretrained(
        run_dir / "model", trust_remote_code=True
    ).eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        scaled = model(input_ids=ids).logits
        model.config.calibration_temperature = 1.0
        raw = model(input_ids=ids).logits
    assert torch.allclose(scaled, raw / temperature, atol=1e-6)


@pytest.mark.parametrize("level", ["token", "positions"])
@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_every_level_measures_ece_and_brier_and_writes_reports(level, task, tmp_path, monkeypatch):
    data = {"token": "synthetic_tokens", "positions": "synthetic_positions"}[level]
    run_dir = tmp_path / "run"
    run_train([*FAST, f"data={data}", f"task={task}", "backbone.freeze=true"], run_dir, monkeypatch)
    record = read_metrics(run_dir)
    for stage in ("val", "test"):
        assert 0 <= record["metrics"][f"{stage}/ece"] <= 1
        assert record["metrics"][f"{stage}/brier"] >= 0
    assert record["reports"]["split"] == "test"
    for name in ("per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "reliability.png"):
        assert (run_dir / name).stat().st_size > 0


def test_reports_agree_with_the_metrics(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_train([*FAST, "trainer.max_epochs=2"], run_dir, monkeypatch)  # the Lightning path (fine-tuned)
    record = read_metrics(run_dir)
    with open(run_dir / "per_class.csv", newline="") as handle:
        per_class = list(csv.DictReader(handle))
    with open(run_dir / "confusion_matrix.csv", newline="") as handle:
        cells = list(csv.DictReader(handle))
    items = sum(int(c["count"]) for c in cells)
    assert items == sum(int(r["support"]) for r in per_class) == 32  # data.num_test
    correct = sum(int(c["count"]) for c in cells if c["true"] == c["predicted"])
    assert correct / items == pytest.approx(record["metrics"]["test/acc"])
    assert [r["label"] for r in per_class] == json.loads((run_dir / "labels.json").read_text())["labels"]
    f1 = sum(float(r["f1"]) for r in per_class) / len(per_class)
    assert f1 == pytest.approx(record["metrics"]["test/f1_macro"], abs=1e-5)


def test_predict_on_a_calibrated_frozen_run_uses_its_temperature(tmp_path, monkeypatch):
    from hydrahead.data.synthetic import generate
    from hydrahead.export import rebuild_from_run
    from hydrahead.predict import iter_predictions, load_predictor

    run_dir = tmp_path / "run"
    run_train([*FAST, "backbone.freeze=true", "calibrate=temperature"], run_dir, monkeypatch)
    temperature = read_metrics(run_dir)["calibration"]["temperature"]
    assert not (run_dir / "model").exists()  # a frozen run: rebuilt from its head checkpoint
    model, tokenizer = rebuild_from_run(run_dir)
    assert model.config.calibration_temperature == pytest.approx(temperature)
    examples = generate("sequence", "multiclass", "test", 6, seed=3)
    file = tmp_path / "in.jsonl"
    file.write_text("".join(json.dumps({"text": e["text"]}) + "\n" for e in examples))
    rows = [row for chunk in iter_predictions(load_predictor(run_dir), file, top_k=0) for row in chunk]
    model.config.calibration_temperature = 1.0
    for example, row in zip(examples, rows):
        with torch.no_grad():
            raw = model(**tokenizer(example["text"], return_tensors="pt")).logits[0]
        expected = (raw / temperature).softmax(-1)
        scores = {entry["label"]: entry["score"] for entry in row["top_k"]}
        for i, p in enumerate(expected.tolist()):
            assert scores[model.config.id2label[i]] == pytest.approx(p, abs=1e-5)
