"""hydrahead-predict: every level and input format, input order kept, probabilities equal to
``predict_proba`` on the same rows, a bad row mid-file, run and export directories, the CLI."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FAST, run_job
from hydrahead.build import build_model
from hydrahead.cli.predict import main
from hydrahead.config.schema import BackboneConfig
from hydrahead.data.encode import DataError
from hydrahead.export import export_model, export_run
from hydrahead.predict import (
    PredictError,
    iter_predictions,
    load_predictor,
    predict_file,
    resolve_device,
)

LABELS = ["animal", "color", "food", "place"]
# In the tiny vocab; "jumping", "xyz" and "catdog" split into several subwords (labels go on the first).
WORDS = "the a cat dog red blue paris apple runs big small jumping xyz catdog river".split()


def tiny_model(level: str, task: str = "multiclass"):
    model, tokenizer = build_model(
        BackboneConfig(name_or_path="tiny:bert", pretrained=False), labels=LABELS, level=level, task=task
    )
    with torch.no_grad():  # spread the probabilities: rows (and words) then differ far beyond the tolerance
        model.head.classifier.weight.mul_(40)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``(model, tokenizer, export dir)`` per (level, task), built and exported once per module."""
    made = {}

    def get(level: str, task: str = "multiclass"):
        if (level, task) not in made:
            model, tokenizer = tiny_model(level, task)
            folder = export_model(model, tmp_path_factory.mktemp(f"{level}-{task}"), tokenizer)
            made[level, task] = (model, tokenizer, folder)
        return made[level, task]

    return get


def sentences(n: int = 13, seed: int = 0) -> list[list[str]]:
    """Word lists of shuffled lengths (1 to 20 words), so length-sorted batches reorder them."""
    rng = random.Random(seed)
    lengths = [1 + (7 * i) % 20 for i in range(n)]
    rng.shuffle(lengths)
    return [[rng.choice(WORDS) for _ in range(length)] for length in lengths]


def make_rows(level: str, spans: bool = False) -> list[dict]:
    rows = []
    for i, words in enumerate(sentences()):
        row = {"id": f"r{i}"}
        if level == "sequence":
            row.update(text=" ".join(words), label="animal")
        elif level == "token":
            row.update(tokens=words, tags=["O"] * len(words))
        elif spans:
            text = " ".join(words)
            starts = [sum(len(w) + 1 for w in words[:k]) for k in range(len(words))]
            picked = sorted({0, len(words) - 1, len(words) // 2})
            row.update(text=text, spans=[[starts[k], starts[k] + len(words[k])] for k in picked])
        else:
            row.update(tokens=words, word_positions=sorted({len(words) - 1, 0, len(words) // 2}))
        rows.append(row)
    return rows


def write(path: Path, rows: list[dict]) -> Path:
    """``rows`` as JSONL, CSV (lists as JSON), Parquet or CoNLL (by the suffix); returns ``path``."""
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        blocks = ["".join(f"{w} {t}\n" for w, t in zip(row["tokens"], row["tags"])) for row in rows]
        path.write_text("\n".join(blocks))
    return path


def expected_lines(rows: list[dict], fmt: str) -> list[int]:
    if fmt == "csv":
        return [i + 2 for i in range(len(rows))]  # line 1 is the header
    if fmt == "conll":  # a sentence's first line: each sentence and a blank line before the next
        starts, line = [], 1
        for row in rows:
            starts.append(line)
            line += len(row["tokens"]) + 1
        return starts
    return [i + 1 for i in range(len(rows))]


def reference(model, tokenizer, row: dict, level: str, max_length: int = 10_000) -> torch.Tensor:
    """``predict_proba`` of the model's logits for one row alone: [labels], or per word / position."""
    if level == "sequence":
        inputs = dict(tokenizer(row["text"], return_tensors="pt"))
        pick = None
    elif "spans" in row:
        enc = tokenizer(row["text"], return_tensors="pt")
        inputs = {**enc, "mask_indices": torch.tensor([[enc.char_to_token(s) for s, _ in row["spans"]]])}
        pick = None
    else:
        enc = tokenizer(
            row["tokens"],
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        word_ids = enc.word_ids()
        first = [word_ids.index(w) for w in range(len(row["tokens"])) if w in word_ids]
        inputs, pick = dict(enc), first
        if level == "positions":
            inputs["mask_indices"] = torch.tensor([[first[p] for p in row["word_positions"]]])
            pick = None
    with torch.no_grad():
        probs = model.predict_proba(model(**inputs).logits)[0]
    return probs[pick] if pick is not None else probs


def ranked_vector(ranked: list[dict], labels: list[str] = LABELS) -> torch.Tensor:
    """A ``top_k`` list (all labels) back as a probability vector in label order."""
    scores = {entry["label"]: entry["score"] for entry in ranked}
    assert list(scores) == sorted(scores, key=lambda name: -scores[name])  # best first
    return torch.tensor([scores[name] for name in labels])


def read_output(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            return [
                {k: json.loads(v) if v and v[0] in "[{" else v for k, v in row.items()}
                for row in csv.DictReader(handle)
            ]
    return [json.loads(line) for line in path.read_text().splitlines()]


CASES = [
    ("sequence", "jsonl"),
    ("sequence", "csv"),
    ("sequence", "parquet"),
    ("token", "jsonl"),
    ("token", "csv"),
    ("token", "parquet"),
    ("token", "conll"),
    ("positions", "jsonl"),
    ("positions", "csv"),
    ("positions", "parquet"),
]


@pytest.mark.parametrize(("level", "fmt"), CASES)
def test_each_level_and_format_keeps_order_and_equals_predict_proba(exported, tmp_path, level, fmt):
    model, tokenizer, folder = exported(level)
    rows = make_rows(level)
    source = write(tmp_path / f"in.{fmt}", rows)
    predictor = load_predictor(folder, device="cpu")
    assert (predictor.level, predictor.task, predictor.labels) == (level, "multiclass", LABELS)
    out = tmp_path / "out.jsonl"
    # Chunks of 5 and batches of 2 rows: length sorting reorders within every chunk.
    summary = predict_file(predictor, source, out, batch_size=2, chunk_size=5, top_k=0)
    got = read_output(out)
    assert summary.rows == len(got) == len(rows)
    assert [r["line"] for r in got] == expected_lines(rows, fmt)
    if fmt != "conll":
        assert [r["id"] for r in got] == [row["id"] for row in rows]
    for row, pred in zip(rows, got):
        expected = reference(model, tokenizer, row, level)
        if level == "sequence":
            torch.testing.assert_close(ranked_vector(pred["top_k"]), expected, rtol=0, atol=1e-5)
            assert pred["label"] == LABELS[int(expected.argmax())] == pred["top_k"][0]["label"]
            assert pred["score"] == pred["top_k"][0]["score"]
            continue
        per_item = torch.stack([ranked_vector(ranked) for ranked in pred["top_k"]])
        torch.testing.assert_close(per_item, expected, rtol=0, atol=1e-5)
        assert pred["scores"] == [ranked[0]["score"] for ranked in pred["top_k"]]
        if level == "token":
            assert pred["tokens"] == row["tokens"] and len(pred["tags"]) == len(row["tokens"])
            assert pred["tags"] == [LABELS[i] for i in expected.argmax(-1).tolist()]
        else:
            assert pred["word_positions"] == row["word_positions"]
            assert pred["labels"] == [LABELS[i] for i in expected.argmax(-1).tolist()]


def test_positions_as_character_spans_and_csv_output(exported, tmp_path):
    model, tokenizer, folder = exported("positions")
    rows = make_rows("positions", spans=True)
    out = tmp_path / "out.csv"
    predict_file(load_predictor(folder), write(tmp_path / "in.jsonl", rows), out, chunk_size=4, top_k=0)
    got = read_output(out)
    assert [int(r["line"]) for r in got] == list(range(1, len(rows) + 1))
    for row, pred in zip(rows, got):
        assert pred["spans"] == row["spans"] and pred["word_positions"] == ""
        per_item = torch.stack([ranked_vector(ranked) for ranked in pred["top_k"]])
        torch.testing.assert_close(per_item, reference(model, tokenizer, row, "positions"), rtol=0, atol=1e-5)


@pytest.mark.parametrize("level", ["sequence", "token"])
def test_multilabel_scores_and_threshold(exported, tmp_path, level):
    model, tokenizer, folder = exported(level, "multilabel")
    rows = make_rows(level)
    out = tmp_path / "out.jsonl"
    predictor = load_predictor(folder, threshold=0.3)
    predict_file(predictor, write(tmp_path / "in.jsonl", rows), out, batch_size=3, chunk_size=4)
    for row, pred in zip(rows, read_output(out)):
        expected = reference(model, tokenizer, row, level)
        items = (
            [(pred["labels"], pred["scores"])] if level == "sequence" else zip(pred["tags"], pred["scores"])
        )
        vectors = expected.reshape(-1, len(LABELS))
        for (names, scores), probs in zip(items, vectors):
            assert list(scores) == LABELS
            torch.testing.assert_close(torch.tensor(list(scores.values())), probs, rtol=0, atol=1e-5)
            assert names == [name for name, p in zip(LABELS, probs.tolist()) if p > 0.3]
        assert "top_k" not in pred and "label" not in pred


def test_truncated_words_are_null(exported, tmp_path, caplog):
    model, tokenizer, folder = exported("token")
    row = {"tokens": "the big cat runs to the river with a small dog".split()}
    out = tmp_path / "out.jsonl"
    summary = predict_file(load_predictor(folder, max_length=6), write(tmp_path / "in.jsonl", [row]), out)
    (pred,) = read_output(out)
    kept = reference(model, tokenizer, row, "token", max_length=6)  # [CLS] + 4 words + [SEP]
    assert len(kept) == 4 and pred["tags"][4:] == [None] * 7 and pred["scores"][4:] == [None] * 7
    torch.testing.assert_close(torch.tensor(pred["scores"][:4]), kept.max(-1).values, rtol=0, atol=1e-5)
    assert (summary.truncated, summary.items) == (7, 11)
    assert "7 of 11 words fall outside max_length=6" in caplog.text


def test_a_bad_row_mid_file_stops_after_the_rows_before_it_are_written(exported, tmp_path):
    _, _, folder = exported("sequence")
    rows = [json.dumps({"id": i, "text": " ".join(words)}) for i, words in enumerate(sentences(10))]
    rows[6] = '{"id": 6, "text": "a cat"'  # line 7
    source = tmp_path / "d.jsonl"
    source.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out.jsonl"
    predictor = load_predictor(folder)
    with pytest.raises(DataError, match=rf"^{source}:7: malformed JSON"):
        predict_file(predictor, source, out, chunk_size=4, batch_size=3)
    assert [r["line"] for r in read_output(out)] == [1, 2, 3, 4, 5, 6]

    summary = predict_file(predictor, source, out, chunk_size=4, on_error="skip")
    assert [r["id"] for r in read_output(out)] == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    assert summary.skipped == 1 and f"{source}:7" in summary.first_skipped


def test_rows_are_read_lazily_one_chunk_at_a_time(exported, tmp_path, monkeypatch):
    """Memory stays bounded: the first chunk comes out before the rest of the file is read."""
    import hydrahead.data.readers as readers

    _, _, folder = exported("sequence")
    rows = [{"text": " ".join(words)} for words in sentences(300)]
    pulled = []
    real = readers._rows

    def counting(*args, **kwargs):
        for item in real(*args, **kwargs):
            pulled.append(item[0])
            yield item

    monkeypatch.setattr(readers, "_rows", counting)
    chunks = iter_predictions(load_predictor(folder), write(tmp_path / "d.parquet", rows), chunk_size=16)
    first = next(chunks)
    assert [r["line"] for r in first] == list(range(1, 17)) and len(pulled) <= 17
    assert sum(len(chunk) for chunk in chunks) == 300 - 16 and pulled == list(range(1, 301))


def test_run_dir_reads_its_field_names_and_equals_its_export(tmp_path):
    """A run trained on renamed fields: predicting from the run (model rebuilt from its checkpoint),
    from its export, and from the export folder alone give the same rows."""
    train = [
        {"sentence": " ".join(w), "gold": ["animal", "color"][i % 2]} for i, w in enumerate(sentences(24))
    ]
    for name in ("train", "dev"):
        write(tmp_path / f"{name}.jsonl", train)
    run_dir = tmp_path / "run"
    args = [
        *FAST,
        "data=local",
        f"data.train_file={tmp_path / 'train.jsonl'}",
        f"data.validation_file={tmp_path / 'dev.jsonl'}",
        "data.fields.text=sentence",
        "data.fields.label=gold",
        "data.max_length=24",
        "export=false",
    ]
    assert run_job(args, run_dir).status == "completed"
    source = write(tmp_path / "in.jsonl", [{"sentence": r["sentence"], "id": i} for i, r in enumerate(train)])

    rebuilt = load_predictor(run_dir)
    assert "best checkpoint" in rebuilt.source and not (run_dir / "model").exists()
    assert (rebuilt.data.fields.text, rebuilt.data.max_length, rebuilt.labels) == (
        "sentence",
        24,
        ["animal", "color"],
    )
    predict_file(rebuilt, source, tmp_path / "rebuilt.jsonl", top_k=0)
    export_run(run_dir)  # export_run and rebuild_from_run share the rebuild
    from_export = load_predictor(run_dir)
    assert from_export.source == str(run_dir.resolve() / "model")
    predict_file(from_export, source, tmp_path / "export.jsonl", top_k=0)
    alone = load_predictor(run_dir / "model")  # a run's model/: the run's field names still apply
    assert alone.data.fields.text == "sentence"
    predict_file(alone, source, tmp_path / "alone.jsonl", top_k=0)
    runs = [read_output(tmp_path / f"{name}.jsonl") for name in ("rebuilt", "export", "alone")]
    assert [r["id"] for r in runs[0]] == list(range(len(train)))
    for a, b, c in zip(*runs):
        two = ["animal", "color"]
        torch.testing.assert_close(
            ranked_vector(a["top_k"], two), ranked_vector(b["top_k"], two), rtol=0, atol=1e-6
        )
        assert b == c
    with pytest.raises(DataError, match=r"in.jsonl:1: missing field 'text'"):
        predict_file(load_predictor(run_dir / "model", fields={"text": "text"}), source, tmp_path / "x.jsonl")


def test_native_export_predicts_like_the_model(tmp_path):
    model, tokenizer = tiny_model("token")  # a linear head on the last layer: BertForTokenClassification
    folder = export_model(model, tmp_path / "native", tokenizer, native=True)
    predictor = load_predictor(folder)
    assert predictor.native and (predictor.level, predictor.task) == ("token", "multiclass")
    rows = make_rows("token")
    predict_file(predictor, write(tmp_path / "in.conll", rows), tmp_path / "out.jsonl", top_k=0, chunk_size=3)
    for row, pred in zip(rows, read_output(tmp_path / "out.jsonl")):
        per_item = torch.stack([ranked_vector(ranked) for ranked in pred["top_k"]])
        torch.testing.assert_close(per_item, reference(model, tokenizer, row, "token"), rtol=0, atol=1e-5)


def test_bf16_autocast_still_gives_distributions(exported, tmp_path):
    _, _, folder = exported("sequence")
    out = tmp_path / "out.jsonl"
    predict_file(
        load_predictor(folder, precision="bf16"),
        write(tmp_path / "in.jsonl", make_rows("sequence")),
        out,
        top_k=0,
    )
    for pred in read_output(out):
        assert sum(entry["score"] for entry in pred["top_k"]) == pytest.approx(1.0, abs=1e-5)


def test_refusals_name_the_path_or_option(exported, tmp_path):
    _, _, folder = exported("sequence")
    with pytest.raises(PredictError, match="neither a run directory"):
        load_predictor(tmp_path)
    with pytest.raises(PredictError, match="no such run or export directory"):
        load_predictor(tmp_path / "nope")
    with pytest.raises(PredictError, match="--field label2=...: no such field"):
        load_predictor(folder, fields={"label2": "x"})
    with pytest.raises(PredictError, match="--precision 8: choose one of"):
        load_predictor(folder, precision="8")
    source = write(tmp_path / "in.jsonl", make_rows("sequence"))
    with pytest.raises(PredictError, match="is the input file"):
        predict_file(load_predictor(folder), source, source)
    with pytest.raises(DataError, match="CoNLL files hold token-level data"):
        predict_file(
            load_predictor(folder), write(tmp_path / "in.conll", make_rows("token")), tmp_path / "o.jsonl"
        )
    assert not (tmp_path / "o.jsonl").exists()  # refused before any output is made
    if not torch.cuda.is_available():
        with pytest.raises(PredictError, match="CUDA is not available"):
            resolve_device("cuda")


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_csv_output_with_renamed_field(exported, tmp_path, capsys):
    _, _, folder = exported("sequence")
    rows = [{"sentence": row["text"], "id": row["id"]} for row in make_rows("sequence")]
    source = write(tmp_path / "in.csv", rows)
    out = tmp_path / "out.csv"
    args = [str(folder), "-i", str(source), "-o", str(out), "--field", "text=sentence", "--top-k", "2"]
    assert main(args) == 0
    got = read_output(out)
    assert [r["id"] for r in got] == [r["id"] for r in rows] and all(len(r["top_k"]) == 2 for r in got)
    err = capsys.readouterr().err
    assert f"predicted {len(rows)} row(s)" in err and str(out) in err
    assert main([str(folder), "-i", str(source)]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"hydrahead-predict: error: {source}:2: missing field 'text' (data.fields.text)"
    )
    assert main([str(tmp_path), "-i", str(source)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cli_bad_row_mid_file_exits_2_with_file_line_and_keeps_rows(exported, tmp_path):
    """End to end in a fresh process (the installed entry point's module)."""
    _, _, folder = exported("token")
    rows = make_rows("token")[:8]
    rows[4] = {"id": "bad", "tokens": []}  # line 5: an empty token list
    source = write(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    small = ["--chunk-size", "3", "--batch-size", "2"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hydrahead.cli.predict",
            str(folder),
            "-i",
            str(source),
            "-o",
            str(out),
            *small,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"hydrahead-predict: error: {source}:5: empty token list in field 'tokens'"
    )
    assert [r["id"] for r in read_output(out)] == ["r0", "r1", "r2", "r3"]
