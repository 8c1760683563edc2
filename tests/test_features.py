"""The frozen-backbone feature cache: same results as the token path, one pass per (weights, data)
whatever the heads read, reused across jobs and processes, invalidated when its inputs change."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import FAST, read_metrics, run_train
from hydrahead.build import build_model
from hydrahead.data.features import POOLINGS, FeatureCache, compute_split, use_cache

FROZEN = [a for a in FAST if "limit_train" not in a] + ["backbone.freeze=true", "export=false"]
LEVELS = {"sequence": "synthetic_sequences", "token": "synthetic_tokens", "positions": "synthetic_positions"}


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_cached_and_uncached_runs_give_the_same_results(level, tmp_path, monkeypatch):
    args = [
        *FROZEN,
        f"data={LEVELS[level]}",
        "head=scalar_mix",
        "task=multilabel",
        f"paths.cache_dir={tmp_path}/c",
    ]
    if level != "sequence":  # token rows: head dropout would draw a different number of masks
        args.append("head.dropout=0")
    run_train([*args, "backbone.cache=off"], tmp_path / "off", monkeypatch)
    run_train([*args, "backbone.cache=on"], tmp_path / "on", monkeypatch)
    off, on = read_metrics(tmp_path / "off"), read_metrics(tmp_path / "on")
    assert off["feature_cache"].startswith("off") and on["feature_cache"] == "computed"
    assert on["metrics"] == pytest.approx(off["metrics"], abs=1e-5)


def test_dropout_in_the_head_keeps_sequence_runs_identical(tmp_path, monkeypatch):
    args = [
        *FROZEN,
        "head=mlp",
        "head.hidden_layers=[16]",
        "head.dropout=0.3",
        f"paths.cache_dir={tmp_path}/c",
    ]
    run_train([*args, "backbone.cache=off"], tmp_path / "off", monkeypatch)
    run_train(args, tmp_path / "auto", monkeypatch)
    auto, off = read_metrics(tmp_path / "auto"), read_metrics(tmp_path / "off")
    assert auto["feature_cache"] == "computed" and auto["engine"] == "head_trainer"
    assert off["engine"] == "lightning"
    # The same dropout masks and batches; only float rounding differs (the pass pads other batches)
    assert auto["metrics"] == pytest.approx(off["metrics"], rel=1e-6, abs=1e-6)


def test_one_backbone_pass_serves_every_job_of_a_multirun(tmp_path, monkeypatch, count_backbone_calls):
    args = [*FROZEN, "head=linear,mlp", "head.hidden_layers=[8]", f"paths.cache_dir={tmp_path}/cache"]
    run_train(args, tmp_path / "sweep", monkeypatch, multirun=True)
    jobs = [read_metrics(tmp_path / "sweep" / n) for n in ("0", "1")]
    assert [j["feature_cache"] for j in jobs] == ["computed", "memory"]
    # 64 + 32 + 32 inputs (FAST) in batches of data.batch_size=16: one pass for the whole sweep,
    # not one per job and epoch
    assert len(count_backbone_calls) == 4 + 2 + 2
    # the entry the first job computed serves the second job the features its own backbone gives
    run_train(
        [*FROZEN, "head=mlp", "head.hidden_layers=[8]", "backbone.cache=off"], tmp_path / "off", monkeypatch
    )
    assert jobs[1]["metrics"] == pytest.approx(read_metrics(tmp_path / "off")["metrics"], rel=1e-6, abs=1e-6)


def test_a_layer_by_pooling_sweep_pays_one_pass(tmp_path, monkeypatch, count_backbone_calls):
    args = [*FROZEN, "head=intermediate", "head.layer=1,4", "head.pooling=cls,mean,max,pooler"]
    run_train([*args, f"paths.cache_dir={tmp_path}/cache"], tmp_path / "sweep", monkeypatch, multirun=True)
    jobs = [read_metrics(tmp_path / "sweep" / str(n)) for n in range(8)]
    assert [j["status"] for j in jobs] == ["completed"] * 8
    assert [j["feature_cache"] for j in jobs] == ["computed"] + ["memory"] * 7
    assert len(count_backbone_calls) == 4 + 2 + 2  # one pass over 64 + 32 + 32 inputs, batch 16
    (entry,) = (tmp_path / "cache" / "features").glob("*/depth-*.pt")
    features = torch.load(entry, weights_only=True)["splits"]["train"]["features"]
    assert entry.name == "depth-4.pt" and features.shape == (len(POOLINGS), 5, 64, 32)  # [P, L, rows, H]
    # What each job read out of the shared entry is what its own backbone gives it
    for n, (layer, pooling) in enumerate([(1, "cls"), (1, "max"), (4, "mean"), (4, "pooler")]):
        index = [1, 4].index(layer) * 4 + ["cls", "mean", "max", "pooler"].index(pooling)
        alone = [*FROZEN, "head=intermediate", f"head.layer={layer}", f"head.pooling={pooling}"]
        run_train([*alone, "backbone.cache=off"], tmp_path / f"off{n}", monkeypatch)
        assert jobs[index]["metrics"] == pytest.approx(
            read_metrics(tmp_path / f"off{n}")["metrics"], rel=1e-5, abs=1e-6
        )


def test_sweep_jobs_equal_the_same_jobs_run_alone(tmp_path, monkeypatch, local_bert_dir):
    """The in-process sharing changes nothing: each job of a sweep equals the job run by itself."""
    from hydrahead import pipeline

    frozen = [*FROZEN, f"backbone.name_or_path={local_bert_dir}"]  # pretrained: seeds share the weights
    sweep = ["head=mlp", "head.hidden_layers=[8],[16,8]", "head.layer=2,-1", "seed=0,1", "head.dropout=0.2"]
    run_train(
        [*frozen, *sweep, f"paths.cache_dir={tmp_path}/c"], tmp_path / "sweep", monkeypatch, multirun=True
    )
    combos = [(h, layer, seed) for h in ("[8]", "[16,8]") for layer in ("2", "-1") for seed in ("0", "1")]
    for n in (0, 3, 5, 6):
        hidden, layer, seed = combos[n]
        pipeline._SHARED.clear()  # as a fresh process: its own backbone, data and entry
        alone = ["head=mlp", f"head.hidden_layers={hidden}", f"head.layer={layer}", f"seed={seed}"]
        args = [*frozen, *alone, "head.dropout=0.2", f"paths.cache_dir={tmp_path}/alone{n}"]
        run_train(args, tmp_path / f"alone{n}", monkeypatch)
        job, single = read_metrics(tmp_path / "sweep" / str(n)), read_metrics(tmp_path / f"alone{n}")
        assert job["feature_cache"] == ("computed" if n == 0 else "memory")
        assert single["feature_cache"] == "computed"
        assert job["metrics"] == single["metrics"]  # exact
        assert job["global_step"] == single["global_step"] and job["params_total"] == single["params_total"]


def test_unfrozen_backbone_never_uses_the_cache(tmp_path, monkeypatch):
    assert use_cache("auto", 2)[0] is False and use_cache("auto", False)[0] is False
    with pytest.raises(ValueError, match="backbone.cache=on needs the whole backbone frozen"):
        use_cache("on", 2)
    run_train([*FAST, "export=false", "backbone.freeze=2"], tmp_path, monkeypatch)
    assert read_metrics(tmp_path)["feature_cache"].startswith("off (backbone.freeze=2")


def _local_data(tmp_path, texts):
    for split in ("train", "dev"):
        rows = [{"text": t, "label": "x" if i % 2 else "y"} for i, t in enumerate(texts)]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [f"data.train_file={tmp_path}/train.jsonl", f"data.validation_file={tmp_path}/dev.jsonl"]


def test_changed_data_file_or_max_length_invalidates(tmp_path, monkeypatch):
    base = [a for a in FROZEN if not a.startswith("data.")] + [
        "data=local",
        f"paths.cache_dir={tmp_path}/cache",
    ]
    files = _local_data(tmp_path, ["the cat runs", "a red dog", "the big bird", "a small fish"])
    run_train([*base, *files], tmp_path / "r1", monkeypatch)
    run_train([*base, *files], tmp_path / "r2", monkeypatch)
    run_train([*base, *files, "data.max_length=4"], tmp_path / "r3", monkeypatch)
    _local_data(tmp_path, ["the cat runs", "a red dog", "the big bird", "a small horse"])
    run_train([*base, *files], tmp_path / "r4", monkeypatch)
    assert [read_metrics(tmp_path / r)["feature_cache"] for r in ("r1", "r2", "r3", "r4")] == [
        "computed",
        "memory",
        "computed",
        "computed",
    ]


def test_an_entry_read_deep_enough_serves_lower_layers(tmp_path, monkeypatch):
    base = [*FROZEN, "head=intermediate", f"paths.cache_dir={tmp_path}/cache", "backbone.cache_layers=read"]
    run_train([*base, "head.layer=4"], tmp_path / "top", monkeypatch)
    from hydrahead import pipeline

    pipeline._SHARED.clear()  # as a new process: the entry on disk, not the one in memory
    run_train([*base, "head.layer=2"], tmp_path / "low", monkeypatch)
    assert read_metrics(tmp_path / "low")["feature_cache"] == "hit"
    entries = list((tmp_path / "cache" / "features").glob("*/depth-*.pt"))
    assert [p.name for p in entries] == ["depth-4.pt"]
    # Layer 2 picked out of the deeper entry is what a pass truncated at layer 2 stores.
    own = [*FROZEN, "head=intermediate", "backbone.cache_layers=read", "head.layer=2"]
    run_train([*own, f"paths.cache_dir={tmp_path}/own_cache"], tmp_path / "own", monkeypatch)
    assert read_metrics(tmp_path / "own")["feature_cache"] == "computed"
    assert [p.name for p in (tmp_path / "own_cache").glob("features/*/*.pt")] == ["depth-2.pt"]
    low, alone = read_metrics(tmp_path / "low")["metrics"], read_metrics(tmp_path / "own")["metrics"]
    assert low == pytest.approx(alone, abs=1e-6)


def test_an_entry_holds_every_layer_and_pooling_by_default(tmp_path, monkeypatch):
    run_train(
        [*FROZEN, "head=intermediate", "head.layer=[1,3]", f"paths.cache_dir={tmp_path}/c"],
        tmp_path / "r",
        monkeypatch,
    )
    (entry,) = (tmp_path / "c" / "features").glob("*/depth-*.pt")
    assert entry.name == "depth-4.pt"
    payload = torch.load(entry, weights_only=True)
    assert payload["poolings"] == list(POOLINGS) and payload["layers"].tolist() == [0, 1, 2, 3, 4]
    features = payload["splits"]["train"]["features"]  # layer-major: [poolings, layers, rows, hidden]
    assert features.shape == (3, 5, 64, 32)


def test_half_precision_storage(tmp_path, monkeypatch):
    run_train(
        [*FROZEN, "backbone.cache_dtype=float16", f"paths.cache_dir={tmp_path}/c"],
        tmp_path / "r",
        monkeypatch,
    )
    (entry,) = (tmp_path / "c" / "features").glob("*/depth-*.pt")
    assert torch.load(entry, weights_only=True)["splits"]["train"]["features"].dtype == torch.float16
    assert read_metrics(tmp_path / "r")["status"] == "completed"


def test_token_features_keep_only_labelled_rows():
    model, tokenizer = build_model("tiny:bert", labels=2, level="token", freeze=True)
    words = ["the", "quickly", "cat"]  # 'quickly' is several subwords: only its first is labelled
    enc = tokenizer(words, is_split_into_words=True)
    first = {}
    for i, w in enumerate(enc.word_ids()):
        if w is not None:
            first.setdefault(w, i)
    labels = [-100] * len(enc["input_ids"])
    for w, i in first.items():
        labels[i] = w % 2
    feature = {**{k: list(v) for k, v in enc.items()}, "labels": labels}
    out = compute_split(model, [feature], "token", "multiclass", 2, tokenizer.pad_token_id, [4])
    assert out["features"].shape == (1, 3, 32) and out["offsets"].tolist() == [0, 3]  # [layers, rows, H]
    with torch.no_grad():
        full = model.backbone(**{k: torch.tensor([v]) for k, v in enc.items()}, output_hidden_states=True)
    assert torch.allclose(out["features"][0], full.hidden_states[4][0, sorted(first.values())], atol=1e-6)
    assert model.training  # the pass leaves the module's mode as it found it


def test_frozen_checkpoints_hold_the_head_only_and_still_resume(tmp_path, monkeypatch):
    from hydrahead.training.head_trainer import HeadTrainer

    args = [
        *FROZEN,
        "head=mlp",
        "head.hidden_layers=[8]",
        "trainer.max_epochs=3",
        f"paths.cache_dir={tmp_path}/c",
    ]
    real_save = HeadTrainer._save

    def killed_after_first_epoch(self, name, state):
        path = real_save(self, name, state)
        if name == "last":
            raise RuntimeError("simulated kill")
        return path

    with monkeypatch.context() as interrupted:  # the same run, killed after its first epoch
        interrupted.setattr(HeadTrainer, "_save", killed_after_first_epoch)
        with pytest.raises(SystemExit):  # the CLI reports the error and exits 1
            run_train(args, tmp_path / "part", monkeypatch)
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 0 and state["engine"] == "head_trainer"
    assert state["state_dict"] and not any(k.startswith("model.backbone.") for k in state["state_dict"])
    assert last.stat().st_size < 200_000
    run_train([*args, f"ckpt_path={last}"], tmp_path / "resumed", monkeypatch)
    run_train(args, tmp_path / "full", monkeypatch)
    resumed, full = read_metrics(tmp_path / "resumed"), read_metrics(tmp_path / "full")
    assert resumed["metrics"] == full["metrics"] and resumed["global_step"] == full["global_step"]
    # A finished frozen run keeps its best head only: what export and reproduce read
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir()) == ["best.ckpt"]
    assert not (tmp_path / "full" / "model").exists()  # export=auto: no backbone copy per frozen job
    # The same run started again in its own dir (a requeued job) resumes from its own last.ckpt
    with monkeypatch.context() as interrupted:
        interrupted.setattr(HeadTrainer, "_save", killed_after_first_epoch)
        with pytest.raises(SystemExit):
            run_train(args, tmp_path / "requeued", monkeypatch)
    run_train(args, tmp_path / "requeued", monkeypatch)
    assert read_metrics(tmp_path / "requeued")["metrics"] == full["metrics"]


def test_damaged_entry_is_recomputed(tmp_path, monkeypatch):
    args = [*FROZEN, f"paths.cache_dir={tmp_path}/c"]
    run_train(args, tmp_path / "r1", monkeypatch)
    (entry,) = (tmp_path / "c" / "features").glob("*/depth-*.pt")
    entry.write_bytes(b"garbage")
    run_train(args, tmp_path / "r2", monkeypatch)
    assert read_metrics(tmp_path / "r2")["feature_cache"] == "computed"
    assert FeatureCache(tmp_path / "c", {}).find(4) is None  # another key, another folder
