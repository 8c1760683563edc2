"""LightningModule pieces: optimizer groups, scheduler, metric masking."""

from __future__ import annotations

import pytest
import torch

from hydrahead.build import build_model
from hydrahead.training.metrics import build_metrics, flatten_for_metrics
from hydrahead.training.module import parameter_groups


def test_parameter_groups_split_lr_and_decay():
    model, _ = build_model("tiny:bert", labels=3, head={"hidden_layers": [8]})
    groups = {g["name"]: g for g in parameter_groups(model, lr=1e-3, backbone_lr=1e-5, weight_decay=0.1)}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert groups["head"]["lr"] == groups["head_no_decay"]["lr"] == 1e-3
    assert groups["backbone"]["lr"] == groups["backbone_no_decay"]["lr"] == 1e-5
    assert groups["head"]["weight_decay"] == 0.1 and groups["head_no_decay"]["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = [names[id(p)] for g in groups.values() if g["weight_decay"] == 0.0 for p in g["params"]]
    decay = [names[id(p)] for g in groups.values() if g["weight_decay"] > 0 for p in g["params"]]
    assert all(n.endswith("bias") or "LayerNorm" in n for n in no_decay)
    assert not any(n.endswith("bias") or "LayerNorm" in n for n in decay)
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_frozen_backbone_gets_no_optimizer_group():
    model, _ = build_model("tiny:bert", labels=3, freeze=True)
    groups = parameter_groups(model, lr=1e-3, backbone_lr=None, weight_decay=0.0)
    assert {g["name"] for g in groups} == {"head", "head_no_decay"}


def test_multiclass_metrics_skip_ignored_labels_like_the_loss():
    logits = torch.tensor([[[5.0, 0.0], [0.0, 5.0], [5.0, 0.0]]])  # [B=1, T=3, C=2]
    labels = torch.tensor([[0, -100, 1]])
    probs, kept = flatten_for_metrics(logits, labels, "multiclass")
    assert probs.shape == (2, 2) and kept.tolist() == [0, 1]
    metrics = build_metrics("multiclass", 2)
    metrics.update(probs, kept)
    assert metrics.compute()["acc"].item() == pytest.approx(0.5)


def test_multilabel_metrics_drop_ignored_detections():
    logits = torch.tensor([[[9.0, -9.0], [-9.0, 9.0]]])  # [B=1, M=2, C=2]
    labels = torch.tensor([[[1, 0], [-100, 1]]])  # second detection ignored entirely
    probs, kept = flatten_for_metrics(logits, labels, "multilabel")
    assert probs.shape == (1, 2) and kept.tolist() == [[1, 0]]
    metrics = build_metrics("multilabel", 2)
    metrics.update(probs, kept)
    assert metrics.compute()["f1_micro"].item() == pytest.approx(1.0)
