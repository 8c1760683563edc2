"""The head's stages: layer combination, pooling / gathering, MLP, output Linear."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import encode, head_input, hidden_states
from hydrahead.build import build_model
from hydrahead.modeling import ScalarMix

H = 32  # tiny hidden size


# -- combining layers ------------------------------------------------------------------------------


def test_concat_of_layers_has_width_n_times_hidden_and_equals_torch_cat():
    model, tokenizer = build_model("tiny:bert", labels=3, head={"layer": [1, 2, 4]}, level="token")
    assert model.head.classifier.in_features == 3 * H
    batch = encode(tokenizer)
    states = hidden_states(model, **batch)
    features = head_input(model, **batch)
    assert features.shape[-1] == 3 * H
    torch.testing.assert_close(features, torch.cat([states[1], states[2], states[4]], dim=-1))


def test_concat_order_follows_the_spec():
    model, tokenizer = build_model("tiny:bert", labels=3, head={"layer": [4, 1]}, level="token")
    batch = encode(tokenizer)
    states = hidden_states(model, **batch)
    torch.testing.assert_close(head_input(model, **batch), torch.cat([states[4], states[1]], dim=-1))


def test_scalar_mix_at_init_is_gamma_times_mean_of_layers():
    model, tokenizer = build_model(
        "tiny:bert", labels=3, head={"layer": "all", "combine": "scalar_mix"}, level="token"
    )
    assert isinstance(model.mix, ScalarMix)
    assert model.head.classifier.in_features == H
    assert model.mix.weights.shape == (5,)
    batch = encode(tokenizer)
    mean = torch.stack(hidden_states(model, **batch)).mean(0)
    torch.testing.assert_close(head_input(model, **batch), mean)
    with torch.no_grad():
        model.mix.gamma.fill_(2.5)
    torch.testing.assert_close(head_input(model, **batch), 2.5 * mean)


def test_scalar_mix_weights_select_layers():
    model, tokenizer = build_model(
        "tiny:bert", labels=3, head={"layer": [1, 3], "combine": "scalar_mix"}, level="token"
    )
    batch = encode(tokenizer)
    states = hidden_states(model, **batch)
    with torch.no_grad():
        model.mix.weights.copy_(torch.tensor([0.0, 50.0]))  # softmax ~ [0, 1]
    torch.testing.assert_close(head_input(model, **batch), states[3], atol=1e-5, rtol=1e-5)


def test_scalar_mix_weights_and_gamma_get_gradients():
    model, tokenizer = build_model(
        "tiny:bert", labels=3, head={"layer": "all", "combine": "scalar_mix", "pooling": "mean"}
    )
    out = model(**encode(tokenizer), labels=torch.tensor([0, 2]))
    out.loss.backward()
    assert model.mix.weights.grad is not None and model.mix.weights.grad.abs().sum() > 0
    assert model.mix.gamma.grad is not None and model.mix.gamma.grad.abs().sum() > 0


def test_scalar_mix_of_one_layer_is_just_that_layer():
    model, _ = build_model("tiny:bert", labels=3, head={"layer": 2, "combine": "scalar_mix"})
    assert model.mix is None
    assert model.head.classifier.in_features == H


# -- pooling ---------------------------------------------------------------------------------------


def _masked_reference(states, mask, pooling):
    tokens = states[-1]
    if pooling == "cls":
        return tokens[:, 0]
    m = mask.unsqueeze(-1).bool()
    if pooling == "mean":
        return (tokens * m).sum(1) / m.sum(1)
    return torch.stack([tokens[b][mask[b].bool()].max(0).values for b in range(tokens.shape[0])])


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_pooling_is_computed_correctly(pooling):
    model, tokenizer = build_model("tiny:bert", labels=3, head={"pooling": pooling})
    batch = encode(tokenizer)
    assert (batch["attention_mask"] == 0).any()
    expected = _masked_reference(hidden_states(model, **batch), batch["attention_mask"], pooling)
    torch.testing.assert_close(head_input(model, **batch), expected)


def test_pooler_pooling_uses_the_backbones_pooler():
    model, tokenizer = build_model("tiny:bert", labels=3, head={"pooling": "pooler"})
    batch = encode(tokenizer)
    model.eval()
    with torch.no_grad():
        pooled = model.backbone(**batch).pooler_output
        by_hand = torch.tanh(model.backbone.pooler.dense(hidden_states(model, **batch)[-1][:, 0]))
    torch.testing.assert_close(head_input(model, **batch), pooled)
    torch.testing.assert_close(pooled, by_hand)


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_mean_and_max_pooling_ignore_padding(family, pooling):
    model, tokenizer = build_model(f"tiny:{family}", labels=3, head={"pooling": pooling})
    short = "a dog eats"
    alone = head_input(model, **encode(tokenizer, [short]))
    long_text = " ".join(["the big cat runs to the river"] * 3)
    padded_batch = encode(tokenizer, [short, long_text])
    assert (padded_batch["attention_mask"][0] == 0).sum() >= 10
    padded = head_input(model, **padded_batch)[0]
    torch.testing.assert_close(padded, alone[0], atol=1e-5, rtol=1e-5)


def test_pooling_without_attention_mask_uses_every_token():
    model, tokenizer = build_model("tiny:bert", labels=3, head={"pooling": "mean"})
    ids = encode(tokenizer, ["the big cat"])["input_ids"]
    states = hidden_states(model, input_ids=ids)
    torch.testing.assert_close(head_input(model, input_ids=ids), states[-1].mean(1))


# -- gathering at positions ------------------------------------------------------------------------


def test_gather_at_mask_indices_equals_hidden_at_those_positions():
    model, tokenizer = build_model("tiny:bert", labels=3, level="positions")
    batch = encode(tokenizer)
    idx = torch.tensor([[1, 5, 5, 0], [3, 0, 2, 1]])
    tokens = hidden_states(model, **batch)[-1]
    features = head_input(model, **batch, mask_indices=idx)
    assert features.shape == (2, 4, H)
    for b in range(2):
        for m in range(4):
            torch.testing.assert_close(features[b, m], tokens[b, idx[b, m]])


def test_mlp_on_layer_4_gathered_at_positions():
    model, tokenizer = build_model(
        "tiny:bert", labels=3, head={"layer": 4, "hidden_layers": [16]}, level="positions"
    )
    batch = encode(tokenizer)
    idx = torch.tensor([[2, 4], [1, 1]])
    tokens = hidden_states(model, **batch)[4]
    torch.testing.assert_close(
        head_input(model, **batch, mask_indices=idx), tokens[torch.arange(2)[:, None], idx]
    )
    labels = torch.tensor([[0, 2], [1, -100]])
    out = model(**batch, mask_indices=idx, labels=labels)
    assert out.logits.shape == (2, 2, 3)
    out.loss.backward()
    assert model.head.mlp[0].weight.grad.abs().sum() > 0
    assert model.backbone.encoder.layer[3].output.dense.weight.grad.abs().sum() > 0


def test_positions_logits_depend_only_on_the_gathered_position():
    model, tokenizer = build_model("tiny:bert", labels=3, level="token", head={"dropout": 0.0})
    gather, _ = build_model("tiny:bert", labels=3, level="positions", head={"dropout": 0.0})
    gather.load_state_dict(model.state_dict())
    model.eval()
    gather.eval()
    batch = encode(tokenizer)
    idx = torch.tensor([[4, 1], [0, 2]])
    with torch.no_grad():
        per_token = model(**batch).logits
        gathered = gather(**batch, mask_indices=idx).logits
    torch.testing.assert_close(gathered, per_token[torch.arange(2)[:, None], idx])


# -- MLP and output layer --------------------------------------------------------------------------


def test_empty_hidden_layers_is_a_single_linear():
    model, tokenizer = build_model("tiny:bert", labels=3, head={"hidden_layers": ()})
    linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    assert linears == [model.head.classifier]
    assert len(model.head.mlp) == 0
    assert (model.head.classifier.in_features, model.head.classifier.out_features) == (H, 3)
    batch = encode(tokenizer)
    features = head_input(model, **batch)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, model.head.classifier(features))


@pytest.mark.parametrize("activation", ["gelu", "relu", "tanh", "silu"])
def test_mlp_blocks_have_the_given_widths_and_activation(activation):
    model, tokenizer = build_model(
        "tiny:bert", labels=3, head={"hidden_layers": [24, 8], "activation": activation, "dropout": 0.2}
    )
    linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(H, 24), (24, 8), (8, 3)]
    expected = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}[activation]
    assert sum(isinstance(m, expected) for m in model.head.mlp) == 2
    assert [m.p for m in model.head.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.2, 0.2]
    batch = encode(tokenizer)
    features = head_input(model, **batch)
    model.eval()
    act = expected()
    by_hand = linears[2](act(linears[1](act(linears[0](features)))))
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, by_hand)


def test_single_int_hidden_layers_means_one_block():
    model, _ = build_model("tiny:bert", labels=3, head={"hidden_layers": 16})
    assert model.config.head["hidden_layers"] == [16]
    assert model.head.classifier.in_features == 16


def test_head_dropout_is_active_in_train_mode_only():
    model, tokenizer = build_model("tiny:bert", labels=3, freeze=True, head={"dropout": 0.5})
    batch = encode(tokenizer)
    model.train()
    assert not torch.equal(model(**batch).logits, model(**batch).logits)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, model(**batch).logits)


def test_head_weights_are_initialised_like_the_backbone():
    model, _ = build_model("tiny:bert", labels=3, head={"hidden_layers": [256]})
    std = model.config.backbone_config.initializer_range
    weight = model.head.mlp[0].weight
    assert abs(weight.std().item() - std) < 0.2 * std
    assert torch.equal(model.head.classifier.bias, torch.zeros(3))
