"""MDL online code (task.mdl=online): the codelength arithmetic, learnable vs noise labels, determinism."""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import pytest
import torch

from conftest import read_metrics, run_job
from hydrahead.config.schema import ConfigError
from hydrahead.data.features import FeatureBatches
from hydrahead.data.synthetic import CATEGORIES
from hydrahead.training.mdl import block_ends, codelength_bits, fixed_order, online_codelength


class Uniform(torch.nn.Module):
    """A probe that predicts the uniform distribution whatever it sees."""

    def __init__(self, num_labels: int):
        super().__init__()
        self.num_labels = num_labels

    def forward(self, features):
        return SimpleNamespace(logits=torch.zeros(*features.shape[:-2], self.num_labels))


def split_of(counts: list[int], num_labels: int, task: str = "multiclass") -> dict:
    rows = sum(counts)
    if task == "multiclass":
        labels = torch.randint(num_labels, (rows,))
    else:
        labels = torch.randint(2, (rows, num_labels)).float()
    return {
        "features": torch.randn(rows, 1, 4),
        "labels": labels,
        "offsets": torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor(counts).cumsum(0)]),
    }


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_a_uniform_probe_codes_at_exactly_the_uniform_codelength(task):
    num_labels, counts = 7, [random.Random(i).randint(1, 4) for i in range(300)]
    train = split_of(counts, num_labels, task)
    order = fixed_order(len(counts), 0)
    ends = block_ends(len(counts), [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25, 50, 100])
    blocks = [order[a:b] for a, b in zip([0, *ends[:-1]], ends)]
    fits = []

    def fit(sent, index):
        fits.append(len(sent))
        return Uniform(num_labels), {}

    def bits(probe, part):
        return codelength_bits(probe, FeatureBatches(part, "positions", 16), task)

    result = online_codelength(blocks, train, num_labels, task, fit, bits)
    per_item = num_labels if task == "multilabel" else math.log2(num_labels)
    assert result["uniform_kbits"] == pytest.approx(sum(counts) * per_item / 1000, rel=1e-12)
    assert result["online_kbits"] == pytest.approx(result["uniform_kbits"], rel=1e-12)
    assert result["compression"] == pytest.approx(1.0, rel=1e-12)
    assert fits == ends[:-1]  # each probe sees exactly the inputs sent before its block
    assert sum(b["inputs"] for b in result["blocks"]) == len(counts)


def test_blocks_follow_the_fractions_and_never_are_empty():
    assert block_ends(4000, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25, 50, 100]) == [
        4,
        8,
        16,
        32,
        64,
        128,
        250,
        500,
        1000,
        2000,
        4000,
    ]
    assert block_ends(100, [0.1, 0.2, 50, 100]) == [1, 50, 100]
    assert sorted(fixed_order(50, 3)) == list(range(50)) and fixed_order(50, 3) == fixed_order(50, 3)
    assert fixed_order(50, 3) != fixed_order(50, 4)


def word_data(folder, noise: bool, train: int = 1000, validation: int = 200) -> list[str]:
    """One category word per text, labelled by its category (or, noise, by a label drawn per example)."""
    rng = random.Random(1)
    names = sorted(CATEGORIES)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("validation", validation)):
        with open(folder / f"{split}.jsonl", "w") as out:
            for _ in range(count):
                category = rng.choice(names)
                label = rng.choice(names) if noise else category
                out.write(json.dumps({"text": rng.choice(CATEGORIES[category]), "label": label}) + "\n")
    return [
        "data=local",
        f"data.train_file={folder}/train.jsonl",
        f"data.validation_file={folder}/validation.jsonl",
    ]


MDL = [
    "backbone=tiny_bert",
    "backbone.freeze=true",
    "logger=none",
    "export=false",
    "callbacks.rich_progress_bar=false",
    "task.mdl=online",
    "head.layer=0",
    "head.pooling=mean",
    "head.hidden_layers=[64]",
    "optimizer.lr=1e-2",
    "scheduler=constant",
    "trainer.max_epochs=20",
]


@pytest.fixture(scope="module")
def mdl_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mdl")
    out = {}
    for kind in ("real", "noise"):
        args = [*MDL, *word_data(root / f"data-{kind}", kind == "noise"), f"paths.cache_dir={root}/c"]
        run_job(args, root / kind)
        out[kind] = read_metrics(root / kind)
    run_job([*MDL, *word_data(root / "data-real", False), f"paths.cache_dir={root}/c"], root / "again")
    out["again"] = read_metrics(root / "again")
    return out


def test_learnable_labels_compress_and_noise_does_not(mdl_runs):
    real, noise = mdl_runs["real"]["mdl"], mdl_runs["noise"]["mdl"]
    assert real["uniform_kbits"] == pytest.approx(noise["uniform_kbits"]) == pytest.approx(2.0)
    assert real["compression"] > 2.0, real
    assert noise["compression"] <= 1.05, noise
    assert mdl_runs["real"]["metrics"]["mdl/compression"] == real["compression"]
    blocks = [mdl_runs["real"]["metrics"][f"mdl/block_{i:02d}_kbits"] for i in range(len(real["blocks"]))]
    assert sum(blocks) == pytest.approx(real["online_kbits"])
    assert mdl_runs["real"]["metrics"]["val/acc"] > 0.9  # the final probe, trained on all of train


def test_an_mdl_run_is_deterministic_for_a_seed(mdl_runs):
    first, again = dict(mdl_runs["real"]["mdl"]), dict(mdl_runs["again"]["mdl"])
    first.pop("time_s"), again.pop("time_s")
    assert first == again


def test_mdl_needs_a_frozen_backbone(tmp_path):
    with pytest.raises(ConfigError, match="task.mdl=online .*backbone.freeze=true"):
        run_job([*MDL, "backbone.freeze=false", "data=synthetic_sequences"], tmp_path / "run")
    with pytest.raises(ConfigError, match="task.mdl_fractions"):
        run_job([*MDL, "data=synthetic_sequences", "task.mdl_fractions=[10,50]"], tmp_path / "run2")


@pytest.mark.parametrize(
    ("data", "task"),
    [
        ("synthetic_tokens", "multiclass"),
        ("synthetic_positions", "multiclass"),
        ("synthetic_positions", "multilabel"),
    ],
)
def test_mdl_at_every_level(data, task, tmp_path):
    """Items are what the loss sees (labelled tokens, positions); multilabel: 1 uniform bit per label."""
    args = [*MDL[:-1], "trainer.max_epochs=2", f"data={data}", f"task={task}", "data.num_train=200"]
    run_job([*args, "head.pooling=cls", f"paths.cache_dir={tmp_path}/c"], tmp_path / "run")
    record = read_metrics(tmp_path / "run")
    mdl, labels = record["mdl"], record["labels"]
    items = sum(block["items"] for block in mdl["blocks"])
    assert sum(block["inputs"] for block in mdl["blocks"]) == 200
    per_item = len(labels) if task == "multilabel" else math.log2(len(labels))
    assert mdl["uniform_kbits"] == pytest.approx(items * per_item / 1000)
    assert mdl["online_kbits"] == pytest.approx(sum(block["kbits"] for block in mdl["blocks"]))
    assert (mdl["multilabel_code"] is not None) == (task == "multilabel")
