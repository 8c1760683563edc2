"""Drop-in compatibility with Hugging Face: same numbers as the native heads, trains under Trainer."""

from __future__ import annotations

import pytest
import torch

from conftest import encode
from hydrahead.build import build_model
from hydrahead.export import to_native

NUM_LABELS = 3
FAMILY_CLASS = {"bert": "Bert", "roberta": "Roberta"}


def _same_outputs(model, native, batch, labels):
    model.eval()
    native.eval()
    with torch.no_grad():
        ours = model(**batch, labels=labels)
        theirs = native(**batch, labels=labels)
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_linear_token_head_matches_for_token_classification(family):
    model, tokenizer = build_model(f"tiny:{family}", labels=NUM_LABELS, level="token")
    native = to_native(model)
    assert type(native).__name__ == f"{FAMILY_CLASS[family]}ForTokenClassification"
    batch = encode(tokenizer)
    labels = torch.randint(0, NUM_LABELS, batch["input_ids"].shape)
    labels[batch["attention_mask"] == 0] = -100
    _same_outputs(model, native, batch, labels)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_pooled_head_matches_for_sequence_classification_multiclass(family):
    model, tokenizer = build_model(f"tiny:{family}", labels=NUM_LABELS, head={"pooling": "pooler"})
    native = to_native(model)
    assert type(native).__name__ == f"{FAMILY_CLASS[family]}ForSequenceClassification"
    assert native.config.problem_type == "single_label_classification"
    _same_outputs(model, native, encode(tokenizer), torch.tensor([2, 0]))


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_pooled_head_matches_for_sequence_classification_multilabel(family):
    model, tokenizer = build_model(
        f"tiny:{family}", labels=NUM_LABELS, head={"pooling": "pooler"}, task="multilabel"
    )
    native = to_native(model)
    assert type(native).__name__ == f"{FAMILY_CLASS[family]}ForSequenceClassification"
    assert native.config.problem_type == "multi_label_classification"
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    _same_outputs(model, native, encode(tokenizer), labels)


def test_parity_is_not_vacuous():
    """A head on another layer, or with other weights, does not match the native model."""
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, level="token")
    native = to_native(model)
    with torch.no_grad():
        native.classifier.weight.add_(0.1)
    batch = encode(tokenizer)
    model.eval()
    native.eval()
    with torch.no_grad():
        assert not torch.allclose(model(**batch).logits, native(**batch).logits)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"head": {"hidden_layers": [8]}, "level": "token"},
        {"head": {"layer": -2}, "level": "token"},
        {"head": {"pooling": "cls"}},
        {"level": "positions"},
        {"level": "token", "task": "multilabel"},
    ],
)
def test_non_standard_heads_have_no_native_equivalent(kwargs):
    model, _ = build_model("tiny:bert", labels=NUM_LABELS, **kwargs)
    with pytest.raises(ValueError, match="export it as hydrahead"):
        to_native(model)


# -- transformers.Trainer ---------------------------------------------------------------------------


def _token_dataset(tokenizer, n=16, seq_len=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids = torch.randint(5, len(tokenizer), (seq_len,), generator=generator)
        labels = ids % NUM_LABELS
        mask = torch.ones(seq_len, dtype=torch.long)
        mask[-2:] = 0
        labels[-2:] = -100
        rows.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return rows


def _args(tmp_path, **overrides):
    from transformers import TrainingArguments

    settings = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=6,
        learning_rate=5e-3,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def test_trains_under_hf_trainer(tmp_path):
    pytest.importorskip("accelerate")
    from transformers import Trainer

    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, level="token")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = _token_dataset(tokenizer)
    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=data, eval_dataset=data[:8])
    result = trainer.train()
    assert result.global_step == 6
    assert torch.isfinite(torch.tensor(result.training_loss))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert any(n.startswith("head.") for n in changed)
    assert any(n.startswith("backbone.") for n in changed)
    metrics = trainer.evaluate()
    assert torch.isfinite(torch.tensor(metrics["eval_loss"]))


def test_hf_trainer_keeps_mask_indices_for_positions_level(tmp_path):
    pytest.importorskip("accelerate")
    from transformers import Trainer

    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, level="positions")
    rows = []
    for row in _token_dataset(tokenizer, n=8):
        positions = torch.tensor([1, 4, 0])
        labels = row["labels"][positions].clone()
        labels[2] = -100  # a padded detection
        rows.append(
            {
                "input_ids": row["input_ids"],
                "attention_mask": row["attention_mask"],
                "mask_indices": positions,
                "labels": labels,
            }
        )
    trainer = Trainer(model=model, args=_args(tmp_path, max_steps=2), train_dataset=rows)
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))


def test_hf_trainer_gradient_accumulation_matches_one_big_batch(tmp_path):
    """Two accumulated half batches give the same update as one batch (sequence level, equal halves)."""
    pytest.importorskip("accelerate")
    from transformers import Trainer

    def one_update(batch_size, accumulation):
        model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, freeze=True, head={"dropout": 0.0})
        generator = torch.Generator().manual_seed(0)
        rows = [
            {
                "input_ids": torch.randint(5, len(tokenizer), (8,), generator=generator),
                "attention_mask": torch.ones(8, dtype=torch.long),
                "labels": torch.tensor(i % NUM_LABELS),
            }
            for i in range(4)
        ]
        before = model.head.classifier.weight.detach().clone()
        args = _args(
            tmp_path,
            max_steps=1,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            optim="sgd",
            learning_rate=0.1,
            max_grad_norm=0.0,
            lr_scheduler_type="constant",
            weight_decay=0.0,
        )
        Trainer(model=model, args=args, train_dataset=rows).train()
        return model.head.classifier.weight.detach() - before

    full = one_update(4, 1)
    accumulated = one_update(2, 2)
    assert full.abs().max() > 1e-3
    torch.testing.assert_close(accumulated, full, atol=1e-6, rtol=1e-4)
