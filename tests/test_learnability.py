"""Every head preset can actually learn: a synthetic token task, label = f(token id)."""

from __future__ import annotations

import pytest
import torch

from hydrahead.build import build_model
from hydrahead.utils.paths import head_presets

NUM_LABELS = 3
STEPS = 150
BATCH, SEQ_LEN, POSITIONS = 32, 16, 4

PRESETS = head_presets()


def test_presets_are_the_shipped_ones():
    assert {"linear", "mlp", "intermediate", "scalar_mix", "mask_gather"} <= set(PRESETS)
    assert PRESETS["mask_gather"]["level"] == "positions"


def _batch(generator, vocab_size, class_of, cls_id, level):
    ids = torch.randint(5, vocab_size, (BATCH, SEQ_LEN), generator=generator)
    ids[:, 0] = cls_id
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if level == "positions":
        positions = torch.randint(1, SEQ_LEN, (BATCH, POSITIONS), generator=generator)
        batch["mask_indices"] = positions
        batch["labels"] = class_of[torch.gather(ids, 1, positions)]
    else:
        labels = class_of[ids]
        labels[:, 0] = -100
        batch["labels"] = labels
    return batch


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_learns_token_identity_task(preset):
    head = dict(PRESETS[preset])
    level = head.pop("level", None) or "token"  # build_model's head= has no 'level' key
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, head=head, level=level)
    vocab_size = len(tokenizer)
    class_of = torch.randint(0, NUM_LABELS, (vocab_size,), generator=torch.Generator().manual_seed(1))
    mix_init = model.mix.weights.detach().clone() if model.mix is not None else None

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    train = torch.Generator().manual_seed(2)
    model.train()
    for _ in range(STEPS):
        loss = model(**_batch(train, vocab_size, class_of, tokenizer.cls_token_id, level)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    held_out = torch.Generator().manual_seed(99)
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for _ in range(4):
            batch = _batch(held_out, vocab_size, class_of, tokenizer.cls_token_id, level)
            labels = batch.pop("labels")
            predictions = model(**batch).logits.argmax(-1)
            keep = labels != -100
            correct += (predictions[keep] == labels[keep]).sum().item()
            total += keep.sum().item()
    accuracy = correct / total
    assert total >= 4 * BATCH * POSITIONS
    assert accuracy > 0.9, f"{preset}: held-out accuracy {accuracy:.3f} after {STEPS} steps"
    if preset == "scalar_mix":
        assert mix_init is not None
        assert (model.mix.weights.detach() - mix_init).abs().max() > 1e-3
