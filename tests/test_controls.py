"""Control tasks (task.control): labels that are a function of the word type alone, drawn from
train's label distribution; runs that record them; real and control twins sharing one pass."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest

from conftest import FAST, read_metrics, run_job
from hydrahead.config.schema import ConfigError
from hydrahead.data.control import ControlSpec, ControlTask

FROZEN = [a for a in FAST if "limit_train" not in a] + ["backbone.freeze=true", "export=false"]


def positions_examples(rng: random.Random, count: int, vocab: list[str], labels: list[str]) -> list[dict]:
    out = []
    for _ in range(count):
        tokens = [rng.choice(vocab) for _ in range(6)]
        positions = sorted(rng.sample(range(6), 2))
        out.append(
            {"tokens": tokens, "word_positions": positions, "labels": [rng.choice(labels) for _ in positions]}
        )
    return out


def test_a_type_gets_one_label_in_every_sentence_and_split():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(40)] + ["Cat", "cat", "CAT"]
    train = positions_examples(rng, 300, vocab, ["a", "b", "c"])
    other = positions_examples(rng, 100, vocab, ["a", "b", "c"])
    task = ControlTask.from_train(ControlSpec(seed=3), "positions", train)
    seen: dict[str, str] = {}
    for example in [*task.apply(train), *task.apply(other)]:
        for position, label in zip(example["word_positions"], example["labels"]):
            word = example["tokens"][position].lower()
            assert seen.setdefault(word, label) == label  # one label per type, in train and beyond
    assert len({seen[w] for w in ("cat",)}) == 1 and "Cat" not in task.mapping  # lowercased
    cased = ControlTask.from_train(ControlSpec(seed=3, lowercase=False), "positions", train)
    cased.apply(train)
    assert {"Cat", "cat", "CAT"} <= set(cased.mapping)
    # The labels themselves are a function of (seed, type): the real labels do not leak through.
    assert task.record()["mapping"] == {t: task.draw(t) for t in task.mapping}


def test_unseen_types_are_stable_across_runs_and_do_not_depend_on_order():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(30)]
    train = positions_examples(rng, 200, vocab, ["x", "y"])
    first = ControlTask.from_train(ControlSpec(seed=0), "positions", train)
    shuffled = list(reversed(train))
    second = ControlTask.from_train(ControlSpec(seed=0), "positions", shuffled)
    second.apply(shuffled)  # another order of types seen first
    unseen = [f"never-in-train-{i}" for i in range(50)]
    assert [first.label_for(t) for t in unseen] == [second.label_for(t) for t in unseen]
    other_seed = ControlTask.from_train(ControlSpec(seed=1), "positions", train)
    assert [first.label_for(t) for t in unseen] != [other_seed.label_for(t) for t in unseen]


def test_control_labels_follow_the_empirical_distribution():
    """Over many types, each label's share is its train frequency, within sampling error."""
    labels = ["rare"] * 5 + ["mid"] * 25 + ["common"] * 70
    train = [{"tokens": ["t"] * len(labels), "tags": labels}]
    task = ControlTask.from_train(ControlSpec(seed=0), "token", train)
    assert task.distribution == pytest.approx({"common": 0.7, "mid": 0.25, "rare": 0.05})
    types = 20_000
    drawn = Counter(task.draw(f"type-{i}") for i in range(types))
    chi2 = sum((drawn[k] - types * p) ** 2 / (types * p) for k, p in task.distribution.items())
    assert chi2 < 13.8  # 2 degrees of freedom: p = 0.001
    for label, p in task.distribution.items():
        assert abs(drawn[label] / types - p) < 4 * math.sqrt(p * (1 - p) / types)


def test_multilabel_items_draw_whole_label_sets():
    train = [{"tokens": ["a", "b", "c"], "tags": [["x"], ["x", "y"], []]}]
    task = ControlTask.from_train(ControlSpec(), "token", train)
    relabelled = task.apply(train)[0]["tags"]
    assert all(tags in (["x"], ["x", "y"], []) for tags in relabelled)


def test_sequence_level_needs_a_control_key(tmp_path):
    with pytest.raises(ConfigError, match="task.control_key"):
        run_job([*FROZEN, "task.control=true"], tmp_path / "run")


def test_sequence_control_keyed_on_a_field(tmp_path):
    rows = [
        {"text": f"the {w} runs", "label": lab, "lemma": w}
        for i in range(80)
        for w, lab in [(("cat", "dog", "red", "blue")[i % 4], ("animal", "animal", "color", "color")[i % 4])]
    ]
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    args = [
        *FROZEN,
        "data=local",
        f"data.train_file={tmp_path}/train.jsonl",
        f"data.validation_file={tmp_path}/validation.jsonl",
        "task.control=true",
        "task.control_key=lemma",
        f"paths.cache_dir={tmp_path}/c",
    ]
    run_job(args, tmp_path / "run")
    record = read_metrics(tmp_path / "run")
    assert record["status"] == "completed"
    assert record["control"]["types"] == 4 and record["control"]["key"] == "lemma"
    mapping = json.loads((tmp_path / "run" / "labels.json").read_text())["control"]["mapping"]
    assert set(mapping) == {"cat", "dog", "red", "blue"} and set(mapping.values()) <= {"animal", "color"}
    broken = [{"text": "a cat", "label": "animal"}, *rows[1:]]  # line 1 has no lemma
    (tmp_path / "broken.jsonl").write_text("\n".join(json.dumps(r) for r in broken))
    with pytest.raises(Exception, match=r"broken.jsonl:1.*'lemma'.*task.control_key"):
        run_job([*args, f"data.train_file={tmp_path}/broken.jsonl"], tmp_path / "broken")


def test_real_and_control_twins_share_one_encoder_pass(tmp_path, count_backbone_calls):
    """A control twin reads the real task's feature entry (same inputs, other labels): one pass."""
    from hydrahead import pipeline

    calls = count_backbone_calls
    pipeline._SHARED.clear()
    args = [*FROZEN, "data=synthetic_positions", "head=mask_gather", f"paths.cache_dir={tmp_path}/c"]
    run_job([*args, "task.control=true"], tmp_path / "control")
    passes = len(calls)
    run_job(args, tmp_path / "real")
    run_job([*args, "task.control=true", "task.control_seed=1"], tmp_path / "control1")
    assert len(calls) == passes  # the real run and the second control run: no backbone call
    control, real = read_metrics(tmp_path / "control"), read_metrics(tmp_path / "real")
    assert control["feature_cache"] == "computed" and real["feature_cache"] == "memory"
    assert "control" not in real and control["control"]["types"] > 20
    assert control["metrics"] != real["metrics"]
    # A fresh process reads the same entry from disk: the control labels come from the data.
    pipeline._SHARED.clear()
    run_job([*args, "task.control=true"], tmp_path / "again")
    again = read_metrics(tmp_path / "again")
    assert again["feature_cache"] == "hit" and again["metrics"] == control["metrics"]
    assert len(calls) == passes
    labels = json.loads((tmp_path / "control" / "labels.json").read_text())
    assert labels["control"]["types"] == len(labels["control"]["mapping"])
    assert control["baselines"]["majority"]["label"] in labels["labels"]


def test_bio_control_reports_token_accuracy_only(tmp_path):
    args = [*FROZEN, "data=synthetic_tokens", f"paths.cache_dir={tmp_path}/c"]
    rows = [
        {"tokens": ["the", w, "runs"], "tags": ["O", tag, "O"]}
        for w, tag in [("cat", "B-animal"), ("red", "B-color"), ("dog", "B-animal")] * 20
    ]
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    local = [
        *args,
        "data=local",
        "data.level=token",
        f"data.train_file={tmp_path}/train.jsonl",
        f"data.validation_file={tmp_path}/validation.jsonl",
    ]
    run_job(local, tmp_path / "real")
    assert "val/entity_f1" in read_metrics(tmp_path / "real")["metrics"]
    run_job([*local, "task.control=true"], tmp_path / "control")
    record = read_metrics(tmp_path / "control")
    assert "val/acc" in record["metrics"] and not any("entity" in k for k in record["metrics"])
    assert "entity-level metrics are not computed" in record["control"]["note"]
    with pytest.raises(ConfigError, match="entity-level metrics mean nothing"):
        run_job([*local, "task.control=true", "task.monitor=val/entity_f1"], tmp_path / "bad")


def test_a_fine_tuned_control_run_keeps_its_mapping(tmp_path):
    run_job([*FAST, "data=synthetic_positions", "head=mask_gather", "task.control=true"], tmp_path / "run")
    record = read_metrics(tmp_path / "run")
    assert record["status"] == "completed" and record["feature_cache"].startswith("off")
    labels = json.loads((tmp_path / "run" / "labels.json").read_text())
    assert record["control"]["types"] == len(labels["control"]["mapping"]) > 10


def test_init_seed_draws_one_random_encoder_for_every_seed(tmp_path):
    """backbone.init_seed: the seeds of a sweep vary the probe, not the random encoder (one pass)."""
    from hydrahead import pipeline

    pipeline._SHARED.clear()
    args = [*FROZEN, "backbone.init_seed=0", f"paths.cache_dir={tmp_path}/c"]
    run_job([*args, "seed=0"], tmp_path / "s0")
    run_job([*args, "seed=1"], tmp_path / "s1")
    first, second = read_metrics(tmp_path / "s0"), read_metrics(tmp_path / "s1")
    assert first["feature_cache"] == "computed" and second["feature_cache"] == "memory"
    assert first["backbone_ref"]["random_init_seed"] == second["backbone_ref"]["random_init_seed"] == 0
    run_job([*FROZEN, f"paths.cache_dir={tmp_path}/c", "seed=1"], tmp_path / "own")  # init_seed null
    assert read_metrics(tmp_path / "own")["feature_cache"] == "computed"  # the run's seed draws its own
