"""Readers: a label that is a JSON object or a list where one label is expected is refused at its file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hydrahead.backbones import tiny_tokenizer
from hydrahead.config import DataConfig, FieldsConfig
from hydrahead.data.datamodule import HeadDataModule
from hydrahead.data.encode import DataError
from hydrahead.data.readers import iter_examples, read_examples


def data_cfg(**kw) -> DataConfig:
    return DataConfig(name="local", fields=FieldsConfig(**kw.pop("fields", {})), **kw)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


MULTICLASS = [
    ("sequence", {"text": "a", "label": {"k": 1}}, r"field 'label', got a JSON object \{'k': 1\}"),
    ("sequence", {"text": "a", "label": ["x"]}, r"field 'label', got a list \['x'\]"),
    ("token", {"tokens": ["a", "b"], "tags": ["O", {"k": 1}]}, "field 'tags', got a JSON object"),
    ("token", {"tokens": ["a", "b"], "tags": ["O", ["X"]]}, "field 'tags', got a list"),
    ("positions", {"tokens": ["a"], "word_positions": [0], "labels": [{"k": 1}]}, "field 'labels'"),
    ("positions", {"text": "ab", "spans": [[0, 1]], "labels": [["x", "y"]]}, "field 'labels', got a list"),
]


@pytest.mark.parametrize(("level", "row", "message"), MULTICLASS)
def test_multiclass_object_or_list_labels_are_refused_at_file_line(tmp_path, level, row, message):
    good = {
        "sequence": {"text": "a", "label": "x"},
        "token": {"tokens": ["a"], "tags": ["O"]},
        "positions": {"tokens": ["a"], "word_positions": [0], "labels": ["x"]},
    }[level]
    path = write_jsonl(tmp_path / "d.jsonl", [good, row, good])
    with pytest.raises(DataError, match=rf"d.jsonl:2: multiclass needs one label per item in {message}"):
        read_examples(path, data_cfg(level=level), "multiclass")


def test_object_label_in_train_is_named_there_not_in_validation(tmp_path):
    """Before, ``{"k": 1}`` became the label "{'k': 1}" and the validation file took the blame."""
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": {"k": 1}}])
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "a", "label": "x"}])
    cfg = data_cfg(train_file=str(tmp_path / "train.jsonl"), validation_file=str(tmp_path / "dev.jsonl"))
    with pytest.raises(DataError, match=r"train.jsonl:2: .*field 'label', got a JSON object") as err:
        HeadDataModule(cfg, tiny_tokenizer("bert"), "multiclass").load()
    assert "dev.jsonl" not in str(err.value)


def test_a_renamed_label_field_is_named(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "gold": {"k": 1}}])
    with pytest.raises(DataError, match="d.jsonl:1: .*field 'gold'"):
        read_examples(path, data_cfg(fields={"label": "gold"}), "multiclass")


MULTILABEL = [
    ("sequence", {"text": "a", "label": {"k": 1}}, "field 'label'"),
    ("sequence", {"text": "a", "label": [["x"], "y"]}, r"field 'label', got \['x'\] inside"),
    ("sequence", {"text": "a", "label": [{"k": 1}]}, r"field 'label', got \{'k': 1\} inside"),
    ("token", {"tokens": ["a"], "tags": [{"k": 1}]}, "field 'tags', got"),
    ("token", {"tokens": ["a"], "tags": [[["X"]]]}, r"field 'tags', got \['X'\] inside"),
    ("positions", {"tokens": ["a"], "word_positions": [0], "labels": [[{"k": 1}]]}, "field 'labels'"),
]


@pytest.mark.parametrize(("level", "row", "message"), MULTILABEL)
def test_multilabel_refuses_objects_and_nested_lists(tmp_path, level, row, message):
    path = write_jsonl(tmp_path / "d.jsonl", [row])
    with pytest.raises(DataError, match=rf"d.jsonl:1: multilabel needs a list of label names in {message}"):
        read_examples(path, data_cfg(level=level), "multilabel")


def test_multilabel_lists_of_names_and_scalar_multiclass_labels_still_read(tmp_path):
    rows = [{"text": "a", "label": ["x", "y"]}, {"text": "b", "label": "x|z"}]
    examples = read_examples(write_jsonl(tmp_path / "m.jsonl", rows), data_cfg(), "multilabel")
    assert [e["label"] for e in examples] == [["x", "y"], ["x", "z"]]
    tokens = [{"tokens": ["a", "b"], "tags": [["X", "Y"], []]}, {"tokens": ["c"], "tags": ["X|Y"]}]
    examples = read_examples(write_jsonl(tmp_path / "t.jsonl", tokens), data_cfg(level="token"), "multilabel")
    assert [e["tags"] for e in examples] == [[["X", "Y"], []], [["X", "Y"]]]
    rows = [{"text": "a", "label": 3}, {"text": "b", "label": "x"}]
    examples = read_examples(write_jsonl(tmp_path / "c.jsonl", rows), data_cfg(), "multiclass")
    assert [e["label"] for e in examples] == [3, "x"]


def test_inputs_only_mode_ignores_labels_and_reads_lazily(tmp_path):
    """Prediction's reading: labels neither needed nor checked; a bad row is a value, not the end."""
    rows = [{"text": "a", "label": {"k": 1}}, {"text": "b"}, {"label": "x"}, {"text": "c"}]
    got = list(
        iter_examples(write_jsonl(tmp_path / "d.jsonl", rows), data_cfg(), "multiclass", with_labels=False)
    )
    assert [line for line, _ in got] == [1, 2, 3, 4]
    assert [e["text"] for _, e in got if not isinstance(e, DataError)] == ["a", "b", "c"]
    assert "label" not in got[0][1]
    assert isinstance(got[2][1], DataError) and "d.jsonl:3: missing field 'text'" in str(got[2][1])
    # CoNLL without a tag column, and positions without labels
    (tmp_path / "d.conll").write_text("John\nlives\n\nin\n")
    got = list(iter_examples(tmp_path / "d.conll", data_cfg(level="token"), "multiclass", with_labels=False))
    assert [(line, e["tokens"]) for line, e in got] == [(1, ["John", "lives"]), (4, ["in"])]
    path = write_jsonl(tmp_path / "p.jsonl", [{"tokens": ["a", "b"], "word_positions": [1]}])
    ((_, example),) = iter_examples(path, data_cfg(level="positions"), "multiclass", with_labels=False)
    assert example["word_positions"] == [1] and "labels" not in example
