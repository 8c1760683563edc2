"""Data layer: readers, alignment, label vocabularies, errors with file:line, the tokenization cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hydrahead.backbones import tiny_tokenizer
from hydrahead.config import DataConfig
from hydrahead.data.datamodule import Collator, HeadDataModule
from hydrahead.data.encode import DataError, build_label_vocab, encode
from hydrahead.data.readers import read_examples
from hydrahead.modeling import IGNORE_INDEX as IGNORE
from hydrahead.training.metrics import EntityMetrics, is_bio


@pytest.fixture(scope="module")
def bert_tok():
    return tiny_tokenizer("bert")


@pytest.fixture(scope="module")
def roberta_tok():
    return tiny_tokenizer("roberta")


def data_cfg(fields=None, **kw):
    from hydrahead.config import FieldsConfig

    return DataConfig(name="local", fields=FieldsConfig(**(fields or {})), **kw)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# -- alignment -------------------------------------------------------------------------------
def test_word_labels_go_on_the_first_subword(bert_tok):
    tokens = ["the", "cat", "quickly", "runs"]
    enc = encode(
        [{"tokens": tokens, "tags": ["O", "B", "X", "O"]}],
        bert_tok,
        level="token",
        task="multiclass",
        labels=["B", "O", "X"],
        max_length=32,
    )
    feature = enc.features[0]
    pieces = bert_tok.convert_ids_to_tokens(feature["input_ids"])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert pieces[3:5] == ["q", "##u"]  # 'quickly' splits into subwords
    labels = feature["labels"]
    assert labels[0] == IGNORE and labels[-1] == IGNORE  # special tokens
    assert labels[1:4] == [1, 0, 2]  # the, cat, first piece of quickly
    assert all(label == IGNORE for label in labels[4 : pieces.index("runs")])  # the other pieces
    assert labels[pieces.index("runs")] == 1


def test_label_all_subwords(bert_tok):
    enc = encode(
        [{"tokens": ["quickly"], "tags": ["X"]}],
        bert_tok,
        level="token",
        task="multiclass",
        labels=["X"],
        max_length=32,
        label_all_subwords=True,
    )
    labels = enc.features[0]["labels"]
    assert labels[0] == labels[-1] == IGNORE
    assert all(label == 0 for label in labels[1:-1]) and len(labels) > 3


def test_roberta_word_alignment(roberta_tok):
    enc = encode(
        [{"tokens": ["the", "cat", "zzq"], "tags": ["O", "B", "O"]}],
        roberta_tok,
        level="token",
        task="multiclass",
        labels=["B", "O"],
        max_length=32,
    )
    pieces = roberta_tok.convert_ids_to_tokens(enc.features[0]["input_ids"])
    assert pieces[:3] == ["<s>", "Ġthe", "Ġcat"]
    assert enc.features[0]["labels"][:5] == [IGNORE, 1, 0, 1, IGNORE]  # 'Ġz' 'z' 'q' : first piece only


def test_positions_map_to_the_first_subword_and_truncation_drops_them(bert_tok):
    words = ["the", "quickly", "cat", "runs", "to", "the", "river"]
    example = {"tokens": words, "word_positions": [1, 6], "labels": ["a", "b"]}
    full = encode([example], bert_tok, level="positions", task="multiclass", labels=["a", "b"], max_length=64)
    pieces = bert_tok.convert_ids_to_tokens(full.features[0]["input_ids"])
    assert [pieces[i] for i in full.features[0]["mask_indices"]] == ["q", "river"]
    assert full.dropped_positions == 0
    cut = encode([example], bert_tok, level="positions", task="multiclass", labels=["a", "b"], max_length=8)
    assert cut.features[0]["mask_indices"] == [2] and cut.features[0]["labels"] == [0]
    assert (cut.dropped_positions, cut.total_positions) == (1, 2)


def test_character_spans_map_to_the_first_subword_of_the_span(bert_tok):
    text = "the cat quickly runs"
    example = {"text": text, "spans": [[4, 7], [8, 15], [3, 7]], "labels": ["a", "b", "a"]}
    enc = encode([example], bert_tok, level="positions", task="multiclass", labels=["a", "b"], max_length=32)
    pieces = bert_tok.convert_ids_to_tokens(enc.features[0]["input_ids"])
    # a span starting on the space before 'cat' still lands on 'cat'
    assert [pieces[i] for i in enc.features[0]["mask_indices"]] == ["cat", "q", "cat"]


def test_text_pair_gets_both_segments(bert_tok):
    enc = encode(
        [{"text": "the cat", "text_pair": "a dog", "label": "x"}],
        bert_tok,
        level="sequence",
        task="multiclass",
        labels=["x"],
        max_length=32,
    )
    feature = enc.features[0]
    pieces = bert_tok.convert_ids_to_tokens(feature["input_ids"])
    assert pieces == ["[CLS]", "the", "cat", "[SEP]", "a", "dog", "[SEP]"]
    assert feature["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]


def test_multilabel_targets_are_multi_hot(bert_tok):
    enc = encode(
        [{"text": "a", "label": ["y", "x"]}],
        bert_tok,
        level="sequence",
        task="multilabel",
        labels=["x", "y", "z"],
        max_length=8,
    )
    assert enc.features[0]["labels"] == [1.0, 1.0, 0.0]


def test_collator_pads_with_ignore(bert_tok):
    enc = encode(
        [
            {"tokens": ["the", "cat"], "word_positions": [1], "labels": ["a"]},
            {"tokens": ["a", "big", "red", "dog"], "word_positions": [0, 3], "labels": ["a", "b"]},
        ],
        bert_tok,
        level="positions",
        task="multiclass",
        labels=["a", "b"],
        max_length=16,
    )
    batch = Collator(bert_tok.pad_token_id, "positions", "multiclass", 2)(enc.features)
    assert batch["input_ids"].shape == (2, 6) and batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0]
    assert batch["mask_indices"].tolist() == [[2, 0], [1, 4]]
    assert batch["labels"].tolist() == [[0, IGNORE], [0, 1]]


def test_label_vocab_sorts_integer_ids_numerically():
    examples = [{"label": 10}, {"label": 2}, {"label": 1}]
    assert build_label_vocab(examples, "sequence", "multiclass") == ["1", "2", "10"]


# -- readers -----------------------------------------------------------------------------------
def test_jsonl_csv_and_parquet_read_the_same(tmp_path, bert_tok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"sentence": "the cat", "gold": "animal"}, {"sentence": "red", "gold": "color"}]
    write_jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "d.csv").write_text("sentence,gold\nthe cat,animal\nred,color\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    cfg = data_cfg(fields={"text": "sentence", "label": "gold"})
    read = [
        [
            {k: v for k, v in e.items() if k != "_where"}
            for e in read_examples(tmp_path / f"d.{ext}", cfg, "multiclass")
        ]
        for ext in ("jsonl", "csv", "parquet")
    ]
    assert (
        read[0]
        == read[1]
        == read[2]
        == [{"text": "the cat", "label": "animal"}, {"text": "red", "label": "color"}]
    )


def test_conll_reader(tmp_path):
    (tmp_path / "d.conll").write_text(
        "-DOCSTART- -X- O\n\nJohn NNP B-PER\nlives VBZ O\n\n\nin IN O\nParis NNP B-LOC\n"
    )
    examples = read_examples(tmp_path / "d.conll", data_cfg(level="token"), "multiclass")
    assert [(e["tokens"], e["tags"]) for e in examples] == [
        (["John", "lives"], ["B-PER", "O"]),
        (["in", "Paris"], ["O", "B-LOC"]),
    ]
    assert examples[1]["_where"].endswith("d.conll:7")


def test_conll_multilabel_tags(tmp_path):
    (tmp_path / "d.conll").write_text("a X|Y\nb O\n")
    examples = read_examples(tmp_path / "d.conll", data_cfg(level="token"), "multilabel")
    assert examples[0]["tags"] == [["X", "Y"], ["O"]]


def test_csv_lists_and_positions(tmp_path):
    (tmp_path / "d.csv").write_text(
        'tokens,word_positions,labels\n"the cat runs","[1, 2]","[""a"", ""b""]"\n'
    )
    example = read_examples(tmp_path / "d.csv", data_cfg(level="positions"), "multiclass")[0]
    assert example["tokens"] == ["the", "cat", "runs"]
    assert example["word_positions"] == [1, 2] and example["labels"] == ["a", "b"]


BAD_ROWS = [
    ("sequence", '{"text": "a", "label": "x"', "d.jsonl:2: malformed JSON"),
    ("sequence", '{"label": "x"}', "d.jsonl:2: missing field 'text'"),
    ("sequence", '{"text": "  ", "label": "x"}', "d.jsonl:2: empty text"),
    ("sequence", '["text", "label"]', "d.jsonl:2: expected a JSON object"),
    ("token", '{"tokens": ["a", "b"], "tags": ["O"]}', "d.jsonl:2: 2 tokens but 1 tags"),
    ("token", '{"tokens": [], "tags": []}', "d.jsonl:2: .*token"),
    ("positions", '{"tokens": ["a"], "word_positions": [3], "labels": ["x"]}', "d.jsonl:2: word position"),
    ("positions", '{"text": "ab", "spans": [[0, 9]], "labels": ["x"]}', "d.jsonl:2: span"),
    ("positions", '{"tokens": ["a"], "word_positions": [0], "labels": []}', "d.jsonl:2: 1 positions but 0"),
]


@pytest.mark.parametrize(("level", "row", "message"), BAD_ROWS)
def test_bad_rows_name_file_and_line(tmp_path, level, row, message):
    good = {
        "sequence": {"text": "a", "label": "x"},
        "token": {"tokens": ["a"], "tags": ["O"]},
        "positions": {"tokens": ["a"], "word_positions": [0], "labels": ["x"]},
    }[level]
    path = write_jsonl(tmp_path / "d.jsonl", [good, row, good])
    with pytest.raises(DataError, match=message):
        read_examples(path, data_cfg(level=level), "multiclass")


def test_on_error_skip_counts_the_skipped_rows(tmp_path, caplog):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [{"text": "a", "label": "x"}, "{broken", {"label": "y"}, {"text": "b", "label": "y"}],
    )
    examples = read_examples(path, data_cfg(on_error="skip"), "multiclass")
    assert [e["text"] for e in examples] == ["a", "b"]
    assert "skipped 2 bad row(s)" in caplog.text


def test_empty_file_and_missing_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl: no examples"):
        read_examples(tmp_path / "empty.jsonl", data_cfg(), "multiclass")
    with pytest.raises(DataError, match="nope.jsonl: no such data file"):
        read_examples(tmp_path / "nope.jsonl", data_cfg(), "multiclass")


def test_unknown_validation_label_names_file_line_and_label(tmp_path, bert_tok):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "a", "label": "x"}, {"text": "c", "label": "zebra"}])
    cfg = data_cfg(train_file=str(tmp_path / "train.jsonl"), validation_file=str(tmp_path / "dev.jsonl"))
    with pytest.raises(DataError, match=r"dev.jsonl:2: label 'zebra' is not in the label vocabulary"):
        HeadDataModule(cfg, bert_tok, "multiclass").load()


def test_multiclass_rows_with_lists_are_refused(tmp_path, bert_tok):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": ["x", "y"]}])
    cfg = data_cfg(train_file=str(tmp_path / "train.jsonl"), validation_file=str(tmp_path / "train.jsonl"))
    with pytest.raises(DataError, match="train.jsonl:1: multiclass needs one label"):
        HeadDataModule(cfg, bert_tok, "multiclass").load()


# -- datamodule and cache ----------------------------------------------------------------------
def test_limits_keep_the_vocabulary_of_the_whole_train_file(tmp_path, bert_tok):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "b", "label": "y"}])
    cfg = data_cfg(
        train_file=str(tmp_path / "train.jsonl"), validation_file=str(tmp_path / "dev.jsonl"), limit_train=1
    )
    dm = HeadDataModule(cfg, bert_tok, "multiclass").load()
    assert dm.labels == ["x", "y"] and len(dm.splits["train"].features) == 1


def test_tokenization_is_cached_and_invalidated(tmp_path, bert_tok, monkeypatch):
    import hydrahead.data.datamodule as dm_module

    calls = []
    real_encode = dm_module.encode
    monkeypatch.setattr(dm_module, "encode", lambda *a, **k: calls.append(1) or real_encode(*a, **k))
    train = write_jsonl(
        tmp_path / "train.jsonl", [{"text": "the cat", "label": "x"}, {"text": "a dog", "label": "y"}]
    )
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "red", "label": "y"}])
    files = {"train_file": str(train), "validation_file": str(tmp_path / "dev.jsonl")}

    def load(**kw):
        dm = HeadDataModule(data_cfg(**files, **kw), bert_tok, "multiclass", cache_dir=tmp_path / "cache")
        return dm.load()

    first = load()
    assert first.cache_hit is False and len(calls) == 2
    second = load()
    assert second.cache_hit is True and len(calls) == 2  # nothing tokenized again
    assert second.splits["train"].features == first.splits["train"].features
    assert load(max_length=8).cache_hit is False  # another max_length
    write_jsonl(train, [{"text": "the cat", "label": "x"}, {"text": "a red dog", "label": "y"}])
    assert load().cache_hit is False  # the file changed
    assert len(list((tmp_path / "cache" / "tokenized").glob("*.pt"))) == 3


def test_dataloaders_batch_with_dynamic_padding(tmp_path, bert_tok):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "the " * n, "label": "x"} for n in range(1, 9)])
    cfg = data_cfg(
        train_file=str(tmp_path / "train.jsonl"),
        validation_file=str(tmp_path / "train.jsonl"),
        batch_size=4,
        group_by_length=True,
    )
    dm = HeadDataModule(cfg, bert_tok, "multiclass").load()
    widths = sorted(batch["input_ids"].shape[1] for batch in dm.train_dataloader())
    assert widths == [6, 10]  # grouped by length: 4 short, then 4 long (plus [CLS]/[SEP])
    val = [batch["input_ids"].shape[1] for batch in dm.val_dataloader()]
    assert val == [6, 10]


# -- entity metrics ------------------------------------------------------------------------------
def test_is_bio():
    assert is_bio(["B-PER", "I-PER", "O"])
    assert not is_bio(["animal", "O"]) and not is_bio(["O"])


def test_entity_metrics_match_seqeval():
    from seqeval.metrics import f1_score

    names = ["B-PER", "I-PER", "O"]
    gold = [["B-PER", "I-PER", "O"], ["O", "B-PER"]]
    pred = [["B-PER", "O", "O"], ["O", "B-PER"]]
    metric = EntityMetrics(names)
    for g, p in zip(gold, pred):
        labels = torch.tensor([[IGNORE] + [names.index(t) for t in g] + [IGNORE]])
        logits = torch.full((1, labels.shape[1], 3), -5.0)
        for i, tag in enumerate(p, start=1):
            logits[0, i, names.index(tag)] = 5.0
        metric.update(logits, labels)
    result = metric.compute()
    assert result["entity_f1"].item() == pytest.approx(f1_score(gold, pred))
    assert result["entity_precision"].item() == pytest.approx(0.5)


def test_tokenizer_fingerprint_survives_use(bert_tok):
    from hydrahead.backbones import tiny_tokenizer
    from hydrahead.data.cache import tokenizer_fingerprint

    fresh = tiny_tokenizer("bert")
    before = tokenizer_fingerprint(fresh)
    fresh("the cat", truncation=True, max_length=4)
    assert tokenizer_fingerprint(fresh) == before
    assert tokenizer_fingerprint(tiny_tokenizer("roberta")) != before
