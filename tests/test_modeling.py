"""HydraHeadModel: freezing, layer selection and truncation, tasks x levels, losses, input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

from conftest import FAMILIES, encode, head_input
from hydrahead.backbones import tiny_config
from hydrahead.build import build_model
from hydrahead.modeling import HydraHeadConfig, HydraHeadModel, compute_loss, find_layer_list, resolve_layers

NUM_LABELS = 3


def _batch(tokenizer, level: str) -> dict:
    batch = encode(tokenizer)
    if level == "positions":
        batch["mask_indices"] = torch.tensor([[1, 3, 5], [2, 0, 1]])
    return batch


def _label_prefix(batch: dict, level: str) -> tuple:
    """The leading label dims for ``level``: [B], [B, T] or [B, M] (M = 3 positions in ``_batch``)."""
    B, T = batch["input_ids"].shape
    return {"sequence": (B,), "token": (B, T), "positions": (B, 3)}[level]


# -- freeze -----------------------------------------------------------------------------------------


def test_freeze_true_freezes_whole_backbone_and_keeps_it_in_eval():
    model, _ = build_model("tiny:bert", labels=NUM_LABELS, freeze=True)
    model.train()
    assert model.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(not m.training for m in model.backbone.modules())
    assert all(p.requires_grad for p in model.head.parameters())
    assert all(m.training for m in model.head.modules())


@pytest.mark.parametrize("family", ["bert", "distilbert", "electra", "deberta-v2"])
def test_freeze_int_freezes_embeddings_and_bottom_layers(family):
    model, tokenizer = build_model(f"tiny:{family}", labels=NUM_LABELS, freeze=2, level="token")
    model.train()
    blocks = find_layer_list(model.backbone)
    assert len(blocks) == 4
    for i, block in enumerate(blocks):
        frozen = i < 2
        assert all(p.requires_grad is not frozen for p in block.parameters()), f"block {i}"
        assert all(m.training is not frozen for m in block.modules()), f"block {i}"
    embedding_params = [n for n, _ in model.backbone.named_parameters() if "embed" in n]
    assert embedding_params
    for name, param in model.backbone.named_parameters():
        if "embed" in name:
            assert not param.requires_grad, name
    embeddings = [m for n, m in model.backbone.named_modules() if n.split(".")[-1] == "embeddings"]
    assert embeddings and all(not m.training for m in embeddings)
    # Gradients flow into the upper blocks only.
    batch = encode(tokenizer)
    model(**batch, labels=torch.zeros_like(batch["input_ids"])).loss.backward()
    assert all(p.grad is None for p in blocks[1].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in blocks[3].parameters())


def test_freeze_false_leaves_everything_trainable():
    model, _ = build_model("tiny:bert", labels=NUM_LABELS, freeze=False)
    model.train()
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())


def test_frozen_model_without_head_dropout_is_deterministic_in_train_mode():
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, freeze=True, head={"dropout": 0.0})
    model.train()
    batch = encode(tokenizer)
    assert torch.equal(model(**batch).logits, model(**batch).logits)
    # Control: an unfrozen backbone has dropout noise in train mode, so the check above can fail.
    unfrozen, _ = build_model("tiny:bert", labels=NUM_LABELS, freeze=False, head={"dropout": 0.0})
    unfrozen.train()
    assert not torch.equal(unfrozen(**batch).logits, unfrozen(**batch).logits)


@pytest.mark.parametrize("freeze", [True, 2])
def test_freeze_survives_save_and_reload(tmp_path, freeze):
    model, _ = build_model("tiny:bert", labels=NUM_LABELS, freeze=freeze)
    model.save_pretrained(tmp_path)
    reloaded = HydraHeadModel.from_pretrained(tmp_path)
    reloaded.train()
    assert reloaded.config.freeze == freeze
    # Loading must not unfreeze anything (it swaps in fresh parameters).
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen
    assert {n for n, p in reloaded.named_parameters() if not p.requires_grad} == frozen
    assert not reloaded.backbone.embeddings.training
    assert find_layer_list(reloaded.backbone)[3].training is (freeze is not True)


def test_freeze_backbone_can_be_changed_later():
    model, _ = build_model("tiny:bert", labels=NUM_LABELS)
    model.freeze_backbone(True)
    model.train()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not model.backbone.training
    model.freeze_backbone(False)
    model.train()
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert model.backbone.training


def test_gradient_checkpointing_gives_the_same_gradients_with_partial_freeze():
    grads, calls = [], []
    for checkpointing in (False, True):
        model, tokenizer = build_model(
            "tiny:bert", labels=NUM_LABELS, level="token", freeze=2, head={"layer": [3, 4], "dropout": 0.0}
        )
        if checkpointing:
            model.activation_checkpointing_enable()
        top = find_layer_list(model.backbone)[3].intermediate
        count = []
        top.register_forward_hook(lambda *args, count=count: count.append(1))
        model.train()  # checkpointing only acts in train mode
        batch = encode(tokenizer)
        torch.manual_seed(1)  # the same dropout masks in both runs
        model(**batch, labels=torch.zeros_like(batch["input_ids"])).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
        calls.append(len(count))
    assert calls == [1, 2]  # checkpointed: the block ran again during backward
    assert grads[0].keys() == grads[1].keys()
    assert grads[1]["backbone.encoder.layer.2.output.dense.weight"].abs().sum() > 0
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_freeze_rejects_too_many_layers_and_negative_values():
    with pytest.raises(ValueError, match="freeze=5 exceeds"):
        build_model("tiny:bert", freeze=5)
    with pytest.raises(ValueError, match="freeze"):
        build_model("tiny:bert", freeze=-1)


# -- layer selection ------------------------------------------------------------------------------


def test_hidden_state_zero_is_the_embedding_output():
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, head={"layer": 0}, level="token")
    batch = encode(tokenizer)
    model.eval()
    with torch.no_grad():
        embedded = model.backbone.embeddings(
            input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"]
        )
    torch.testing.assert_close(head_input(model, **batch), embedded)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (0, [0]),
        (4, [4]),
        (-1, [4]),
        (-5, [0]),
        ([1, -1], [1, 4]),
        ("all", [0, 1, 2, 3, 4]),
        ("1:3", [1, 2]),
        (":2", [0, 1]),
        ("-2:", [3, 4]),
        ("2", [2]),
    ],
)
def test_resolve_layers(spec, expected):
    assert resolve_layers(spec, 4) == expected
    model, _ = build_model("tiny:bert", labels=NUM_LABELS, head={"layer": spec})
    assert model.layer_indices == expected
    assert model.config.layers == expected


@pytest.mark.parametrize("spec", [5, -6, [1, 7], "9:12"])
def test_out_of_range_layer_names_the_valid_range(spec):
    with pytest.raises(ValueError, match=r"0\.\.4") as err:
        build_model("tiny:bert", head={"layer": spec})
    assert "-5..-1" in str(err.value)
    assert "head.layer" in str(err.value)


@pytest.mark.parametrize("spec", ["last", [1.5], [], True])
def test_malformed_layer_spec(spec):
    with pytest.raises(ValueError, match=r"head\.layer"):
        build_model("tiny:bert", head={"layer": spec})


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layer", [0, 1, 2, -2, [1, 3]])
def test_truncated_backbone_matches_full_model_hidden_states(family, layer):
    model, tokenizer = build_model(f"tiny:{family}", labels=NUM_LABELS, head={"layer": layer}, level="token")
    top = max(model.layer_indices)
    # Only the blocks up to the highest layer read exist (at least one: see HydraHeadConfig).
    assert len(find_layer_list(model.backbone)) == max(top, 1)
    assert model.config.backbone_layers == 4

    full = AutoModel.from_config(tiny_config(family, tokenizer)).eval()
    result = full.load_state_dict(model.backbone.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert len(find_layer_list(full)) == 4
    batch = encode(tokenizer)
    with torch.no_grad():
        reference = full(**batch, output_hidden_states=True).hidden_states
    assert len(reference) == 5
    expected = torch.cat([reference[i] for i in model.layer_indices], dim=-1)
    got = head_input(model, **batch)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_random_weights_do_not_depend_on_the_layer_read(family):
    shallow, _ = build_model(f"tiny:{family}", labels=NUM_LABELS, head={"layer": 1}, seed=5)
    deep, _ = build_model(f"tiny:{family}", labels=NUM_LABELS, head={"layer": -1}, seed=5)
    low, high = shallow.backbone.state_dict(), deep.backbone.state_dict()
    assert len(low) < len(high)
    assert all(torch.equal(low[k], high[k]) for k in low)  # layers 0..1 are the same network
    other, _ = build_model(f"tiny:{family}", labels=NUM_LABELS, head={"layer": 1}, seed=6)
    assert not all(torch.equal(low[k], v) for k, v in other.backbone.state_dict().items())


# -- tasks, levels, label shapes -----------------------------------------------------------------


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
@pytest.mark.parametrize("level", ["sequence", "token", "positions"])
def test_output_and_label_shapes(task, level):
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, task=task, level=level)
    batch = _batch(tokenizer, level)
    prefix = _label_prefix(batch, level)
    if task == "multiclass":
        labels = torch.randint(0, NUM_LABELS, prefix)
    else:
        labels = torch.randint(0, 2, (*prefix, NUM_LABELS)).float()
    out = model(**batch, labels=labels)
    assert out.logits.shape == (*prefix, NUM_LABELS)
    assert isinstance(out, SequenceClassifierOutput if level == "sequence" else TokenClassifierOutput)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.head.classifier.weight.grad.abs().sum() > 0


def test_multiclass_cross_entropy_ignores_minus_100():
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, level="token")
    model.eval()
    batch = encode(tokenizer)
    labels = torch.randint(0, NUM_LABELS, batch["input_ids"].shape)
    labels[batch["attention_mask"] == 0] = -100
    labels[0, 0] = -100
    out = model(**batch, labels=labels)
    keep = labels != -100
    expected = F.cross_entropy(out.logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)
    # -100 really removes the element: its label value would otherwise change the loss.
    changed = labels.clone()
    changed[0, 0] = 1
    assert not torch.allclose(model(**batch, labels=changed).loss, expected)


def test_multilabel_bce_is_masked_per_element():
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, task="multilabel", level="token")
    model.eval()
    batch = encode(tokenizer)
    B, T = batch["input_ids"].shape
    labels = torch.randint(0, 2, (B, T, NUM_LABELS)).float()
    labels[0, 1, 2] = -100  # one element of one token
    labels[1, 0, 1] = -100
    out = model(**batch, labels=labels)
    keep = labels != -100
    expected = F.binary_cross_entropy_with_logits(out.logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)


def test_positions_multilabel_ignores_whole_detection_when_first_label_is_minus_100():
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, task="multilabel", level="positions")
    model.eval()
    batch = _batch(tokenizer, "positions")
    labels = torch.randint(0, 2, (2, 3, NUM_LABELS)).float()
    labels[1, 2] = torch.tensor([-100.0, 1.0, 0.0])  # padded detection, other entries 0/1
    out = model(**batch, labels=labels)
    kept = torch.ones(2, 3, dtype=torch.bool)
    kept[1, 2] = False
    expected = F.binary_cross_entropy_with_logits(out.logits[kept], labels[kept])
    torch.testing.assert_close(out.loss, expected)
    # The ignored detection's other entries do not matter.
    labels[1, 2, 1:] = 1 - labels[1, 2, 1:]
    torch.testing.assert_close(model(**batch, labels=labels).loss, expected)


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
@pytest.mark.parametrize("level", ["sequence", "token", "positions"])
def test_all_ignored_batch_gives_zero_loss_and_finite_grads(task, level):
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, task=task, level=level)
    batch = _batch(tokenizer, level)
    prefix = _label_prefix(batch, level)
    shape = prefix if task == "multiclass" else (*prefix, NUM_LABELS)
    labels = torch.full(shape, -100)
    if task == "multilabel":
        labels = labels.float()
    out = model(**batch, labels=labels)
    assert out.loss.item() == 0.0
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads, "the loss is not connected to the parameters"
    assert all(torch.isfinite(g).all() for g in grads)


def test_compute_loss_directly():
    logits = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([0, -100, 2, 1])
    torch.testing.assert_close(
        compute_loss(logits, labels, "multiclass"), F.cross_entropy(logits[[0, 2, 3]], labels[[0, 2, 3]])
    )
    loss = compute_loss(logits, torch.full((4,), -100), "multiclass")
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_predict_proba():
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, level="token")
    logits = model(**encode(tokenizer)).logits * 10
    probs = model.predict_proba(logits)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    assert (probs >= 0).all()
    multi, _ = build_model("tiny:bert", labels=NUM_LABELS, task="multilabel")
    logits = torch.randn(5, NUM_LABELS)
    probs = multi.predict_proba(logits)
    assert ((probs > 0) & (probs < 1)).all()
    torch.testing.assert_close(probs, torch.sigmoid(logits))


def test_problem_type_follows_task():
    assert build_model("tiny:bert", task="multilabel")[0].config.problem_type == "multi_label_classification"
    assert build_model("tiny:bert")[0].config.problem_type == "single_label_classification"


# -- validation of inputs and config --------------------------------------------------------------


@pytest.fixture(scope="module")
def positions_model():
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, level="positions")
    return model, encode(tokenizer)


def test_mask_indices_must_be_long(positions_model):
    model, batch = positions_model
    with pytest.raises(ValueError, match="mask_indices must be a long"):
        model(**batch, mask_indices=torch.tensor([[1.0, 2.0], [0.0, 1.0]]))


@pytest.mark.parametrize("where", ["seq_len", "negative"])
def test_mask_indices_out_of_range(positions_model, where):
    model, batch = positions_model
    T = batch["input_ids"].shape[1]
    bad = T if where == "seq_len" else -1
    with pytest.raises(ValueError, match=rf"mask_indices must lie in \[0, {T - 1}\]"):
        model(**batch, mask_indices=torch.tensor([[1, bad], [0, 1]]))
    model(**batch, mask_indices=torch.tensor([[1, T - 1], [0, 1]]))  # the last position is fine


def test_mask_indices_wrong_shape(positions_model):
    model, batch = positions_model
    with pytest.raises(ValueError, match="mask_indices must have shape"):
        model(**batch, mask_indices=torch.tensor([1, 2]))


def test_mask_indices_missing_at_positions_level(positions_model):
    model, batch = positions_model
    with pytest.raises(ValueError, match="needs mask_indices"):
        model(**batch)


@pytest.mark.parametrize("level", ["sequence", "token"])
def test_mask_indices_given_at_other_levels(level):
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, level=level)
    with pytest.raises(ValueError, match="mask_indices was given"):
        model(**encode(tokenizer), mask_indices=torch.tensor([[1], [1]]))


@pytest.mark.parametrize(
    ("task", "level", "shape", "expected"),
    [
        ("multiclass", "sequence", (2, 1), r"\[batch\] = \[2\]"),
        ("multiclass", "token", (2,), r"\[batch, seq_len\]"),
        ("multiclass", "positions", (2,), r"\[batch, num_positions\] = \[2, 3\]"),
        ("multilabel", "sequence", (2,), r"\[batch, num_labels\] = \[2, 3\]"),
        ("multilabel", "token", (2, 9), r"\[batch, seq_len, num_labels\]"),
        ("multilabel", "positions", (2, 3), r"\[batch, num_positions, num_labels\] = \[2, 3, 3\]"),
    ],
)
def test_labels_with_wrong_shape_say_what_was_expected(task, level, shape, expected):
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, task=task, level=level)
    batch = _batch(tokenizer, level)
    with pytest.raises(ValueError, match=f"labels must have shape {expected}"):
        model(**batch, labels=torch.zeros(shape, dtype=torch.long))


def test_float_labels_rejected_for_multiclass():
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS)
    with pytest.raises(ValueError, match="integer class ids"):
        model(**encode(tokenizer), labels=torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("bad", [3, -1])
def test_class_id_out_of_range(bad):
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS)
    with pytest.raises(ValueError, match=rf"multiclass label {bad} is outside \[0, 2\]"):
        model(**encode(tokenizer), labels=torch.tensor([0, bad]))


@pytest.mark.parametrize(
    ("head", "match"),
    [
        ({"dropout": 1.0}, "head.dropout"),
        ({"dropout": -0.1}, "head.dropout"),
        ({"hidden_layers": [0]}, "head.hidden_layers"),
        ({"hidden_layers": [16, -2]}, "head.hidden_layers"),
        ({"pooling": "attention"}, "head.pooling"),
        ({"combine": "sum"}, "head.combine"),
        ({"activation": "swish"}, "head.activation"),
        ({"poolling": "cls"}, "poolling"),
    ],
)
def test_bad_head_config_names_the_key(head, match):
    with pytest.raises(ValueError, match=match):
        build_model("tiny:bert", head=head)


@pytest.mark.parametrize("family", ["distilbert", "electra", "deberta-v2"])
def test_pooler_pooling_needs_a_pooler(family):
    with pytest.raises(ValueError, match="pooling='pooler'"):
        build_model(f"tiny:{family}", head={"pooling": "pooler"})


def test_bad_task_and_level():
    with pytest.raises(ValueError, match="task="):
        build_model("tiny:bert", task="regression")
    with pytest.raises(ValueError, match="level="):
        build_model("tiny:bert", level="span")


def test_forward_needs_inputs():
    model, _ = build_model("tiny:bert")
    with pytest.raises(ValueError, match="input_ids"):
        model()


def test_inputs_embeds_path_matches_input_ids():
    model, tokenizer = build_model("tiny:bert", labels=NUM_LABELS, level="token")
    model.eval()
    batch = encode(tokenizer)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(batch["input_ids"])
        by_ids = model(**batch).logits
        by_embeds = model(
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        ).logits
    torch.testing.assert_close(by_embeds, by_ids)


def test_config_without_backbone_cannot_build_a_model():
    with pytest.raises(ValueError, match="backbone_config"):
        HydraHeadModel(HydraHeadConfig())


def test_config_round_trips_through_dict():
    model, _ = build_model("tiny:deberta-v2", labels=NUM_LABELS, head={"layer": [1, 3], "hidden_layers": [8]})
    config = HydraHeadConfig.from_dict(model.config.to_dict())
    assert config.layers == [1, 3]
    assert config.backbone_layers == 4
    assert config.backbone_config.num_hidden_layers == 3
    assert config.backbone_config.model_type == "deberta-v2"
    assert config.head == model.config.head
