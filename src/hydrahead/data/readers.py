"""Read local datasets (JSONL, CSV, Parquet, CoNLL) into examples of the canonical schema.

Canonical example keys per level (the file's field names are configurable, see DataConfig):
  sequence:  text, text_pair (optional), label (str | int; multilabel: list of str)
  token:     tokens (list of words), tags (list of str; multilabel: list of lists)
  positions: text + spans ([[start, end], ...] character offsets) or tokens + word_positions,
             and labels (one per position; multilabel: a list per position)
Every example also carries ``_where`` ("file:line") so later errors can point at it. A label that
is a JSON object, or a list where one label is expected, is refused there (multilabel: lists of names).
:func:`iter_examples` reads lazily (training reads a split whole with :func:`read_examples`; prediction
streams with ``with_labels=False``, which reads the inputs alone).

CSV cells holding lists are JSON (``["a", "b"]``); tokens and tags may also be space-separated and
multilabel labels ``|``-separated. CoNLL: one token per line, tag in the last column (``|``
between several tags for multilabel), blank lines between sentences, ``-DOCSTART-`` skipped.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from hydrahead.config.schema import DataConfig

from .encode import DataError

log = logging.getLogger(__name__)

EXTENSIONS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".conll": "conll",
    ".conllu": "conll",
    ".bio": "conll",
    ".iob": "conll",
    ".txt": "conll",
}
FORMATS = ("auto", "jsonl", "csv", "parquet", "conll")


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    try:
        return EXTENSIONS[path.suffix.lower()]
    except KeyError:
        raise DataError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}; set data.format "
            f"to one of {list(FORMATS[1:])}"
        ) from None


def _rows(path: Path, fmt: str, conll_fields: tuple[str, str] = ("tokens", "tags"), tags: bool = True):
    """Yield (line, dict) per raw record; malformed records raise DataError naming file:line.

    CoNLL records hold their words and tags under ``conll_fields``; ``tags=False`` (prediction)
    also takes lines of a token alone.
    """
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as handle:
            for line, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text.rstrip("\r\n"))  # (with the newline, colno is 1 of a next line)
                except json.JSONDecodeError as err:
                    yield line, DataError(f"{path}:{line}: malformed JSON ({err.msg} at column {err.colno})")
                    continue
                if not isinstance(row, dict):
                    row = DataError(f"{path}:{line}: expected a JSON object, got {type(row).__name__}")
                yield line, row
    elif fmt == "csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            for row in reader:
                if None in row or None in row.values():
                    row = DataError(
                        f"{path}:{reader.line_num}: malformed CSV row: {len(reader.fieldnames)} columns "
                        "in the header, a different number here"
                    )
                yield reader.line_num, row
    elif fmt == "parquet":
        yield from _parquet_rows(path)
    elif fmt == "conll":
        yield from _conll_rows(path, conll_fields, tags)
    else:
        raise DataError(f"{path}: unknown data.format {fmt!r}; choose one of {list(FORMATS)}")


def _parquet_rows(path: Path, batch_rows: int = 1024):
    """Parquet rows in record batches: a large file is never held whole (line = row number, from 1)."""
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
        index = 0
        for batch in batches:
            for row in batch.to_pylist():
                index += 1
                yield index, row
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid and ArrowIOError are both
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None


def _conll_rows(path: Path, fields: tuple[str, str] = ("tokens", "tags"), need_tags: bool = True):
    tokens_key, tags_key = fields
    tokens, tags, start = [], [], None
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            parts = text.split()
            if not parts or parts[0] == "-DOCSTART-":
                if tokens:
                    yield start, {tokens_key: tokens, tags_key: tags}
                tokens, tags, start = [], [], None
                continue
            if len(parts) < 2 and need_tags:
                yield (
                    line,
                    DataError(f"{path}:{line}: a CoNLL line needs a token and a tag, got {text.strip()!r}"),
                )
                tokens, tags, start = [], [], None
                continue
            start = start or line
            tokens.append(parts[0])
            tags.append(parts[-1])
    if tokens:
        yield start, {tokens_key: tokens, tags_key: tags}


def _as_list(value, where: str, key: str, split_on: str | None = None) -> list:
    """Lists stay lists; CSV strings are JSON lists or separated values."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if hasattr(value, "tolist"):  # numpy arrays from Parquet
        return list(value.tolist())
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                return list(json.loads(stripped))
            except json.JSONDecodeError:
                raise DataError(f"{where}: field {key!r} is not a valid JSON list: {value!r}") from None
        return stripped.split(split_on) if stripped else []
    raise DataError(f"{where}: field {key!r} must be a list, got {type(value).__name__}")


def _one_label(value, where: str, key: str):
    """A multiclass label: one name or class id, never a JSON object or a list."""
    if isinstance(value, (dict, list, tuple)):
        kind = "a JSON object" if isinstance(value, dict) else "a list"
        raise DataError(
            f"{where}: multiclass needs one label per item in field {key!r}, got {kind} {value!r} "
            "(several labels per item: task=multilabel)"
        )
    return value


def _label_set(value, where: str, key: str) -> list:
    """A multilabel item's labels: a list of names (a string: ``|``-separated), never objects or lists."""
    if isinstance(value, dict):
        raise DataError(f"{where}: multilabel needs a list of label names in field {key!r}, got {value!r}")
    items = list(value) if isinstance(value, (list, tuple)) else [x for x in str(value).split("|") if x]
    nested = [x for x in items if isinstance(x, (dict, list, tuple))]
    if nested:
        raise DataError(
            f"{where}: multilabel needs a list of label names in field {key!r}, got {nested[0]!r} "
            f"inside {value!r}"
        )
    return items


def _example(
    row: dict,
    where: str,
    data_cfg,
    task: str,
    keep: tuple[str, ...] = (),
    with_labels: bool = True,
) -> dict:
    """One canonical example from a raw record; raises DataError naming ``where``.

    ``keep`` names raw fields to carry along in ``example["_fields"]`` (a control task's key).
    ``with_labels=False`` reads the inputs alone (prediction): label fields are neither needed nor read.
    """
    f = data_cfg.fields
    level = data_cfg.level
    multilabel = task == "multilabel"

    def field(key: str, config_key: str, optional: bool = False):
        if key not in row or row[key] is None or row[key] == "":
            if optional:
                return None
            raise DataError(f"{where}: missing field {key!r} (data.fields.{config_key})")
        return row[key]

    def items(key: str, config_key: str) -> list:
        """One label per word or position (multiclass) or a list of them (multilabel)."""
        values = _as_list(field(key, config_key), where, key)
        if multilabel:
            return [_label_set(value, where, key) for value in values]
        return [_one_label(value, where, key) for value in values]

    example: dict = {"_where": where}
    if keep:
        example["_fields"] = {key: row.get(key) for key in keep}
    if level == "sequence":
        text = field(f.text, "text")
        if not str(text).strip():
            raise DataError(f"{where}: empty text in field {f.text!r}")
        example["text"] = str(text)
        pair = field(f.text_pair, "text_pair", optional=True) if f.text_pair else None
        if pair is not None:
            example["text_pair"] = str(pair)
        if with_labels:
            label = field(f.label, "label")
            if multilabel:
                names = label if isinstance(label, dict) else _as_list(label, where, f.label, "|")
                example["label"] = [str(x) for x in _label_set(names, where, f.label)]
            else:
                example["label"] = _one_label(label, where, f.label)
    elif level == "token":
        tokens = [str(t) for t in _as_list(field(f.tokens, "tokens"), where, f.tokens)]
        tags = items(f.tags, "tags") if with_labels else None
        if not tokens:
            raise DataError(f"{where}: empty token list in field {f.tokens!r}")
        example["tokens"] = tokens
        if tags is not None:
            if len(tokens) != len(tags):
                raise DataError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
            example["tags"] = tags
    else:
        labels = items(f.labels, "labels") if with_labels else None
        if f.spans in row and row[f.spans] is not None:
            text = str(field(f.text, "text"))
            spans = _as_list(row[f.spans], where, f.spans)
            for span in spans:
                if (
                    not isinstance(span, (list, tuple))
                    or len(span) != 2
                    or not 0 <= int(span[0]) < int(span[1]) <= len(text)
                ):
                    raise DataError(
                        f"{where}: span {span!r} is not a [start, end) pair inside the "
                        f"{len(text)}-character text"
                    )
            example.update(text=text, spans=[[int(a), int(b)] for a, b in spans])
            count = len(spans)
        else:
            tokens = [str(t) for t in _as_list(field(f.tokens, "tokens"), where, f.tokens)]
            positions = [
                int(p) for p in _as_list(field(f.word_positions, "word_positions"), where, f.word_positions)
            ]
            bad = [p for p in positions if not 0 <= p < len(tokens)]
            if bad:
                raise DataError(f"{where}: word position(s) {bad} outside the {len(tokens)} tokens")
            example.update(tokens=tokens, word_positions=positions)
            count = len(positions)
        if labels is not None:
            if count != len(labels):
                raise DataError(f"{where}: {count} positions but {len(labels)} labels")
            example["labels"] = labels
    return example


def _single_labels(example: dict, level: str) -> bool:
    items = [example["label"]] if level == "sequence" else example["tags" if level == "token" else "labels"]
    return all(len(item) == 1 for item in items)


def iter_examples(
    path: str | Path,
    data_cfg: DataConfig,
    task: str,
    *,
    with_labels: bool = True,
    keep: tuple[str, ...] = (),
) -> Iterator[tuple[int, dict | DataError]]:
    """Each record of ``path`` as ``(line, example)``, lazily, or as ``(line, DataError)`` when it is bad.

    One record is in memory at a time (Parquet: one record batch), so this serves files of any size.
    ``line`` is the file's line (JSONL, CSV; CoNLL: a sentence's first line) or row number (Parquet);
    errors name ``file:line``. A missing file, an unknown format, or CoNLL data outside level=token
    raise DataError here, before the first record. ``with_labels=False``: inputs only (prediction).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    fmt = detect_format(path, data_cfg.format)
    if fmt == "conll" and data_cfg.level != "token":
        raise DataError(f"{path}: CoNLL files hold token-level data, but data.level={data_cfg.level!r}")
    if fmt not in FORMATS[1:]:
        raise DataError(f"{path}: unknown data.format {fmt!r}; choose one of {list(FORMATS)}")

    def examples():
        fields = (data_cfg.fields.tokens, data_cfg.fields.tags)
        for line, row in _rows(path, fmt, fields, tags=with_labels):
            if isinstance(row, DataError):
                yield line, row
                continue
            try:
                yield line, _example(row, f"{path}:{line}", data_cfg, task, keep, with_labels)
            except DataError as err:
                yield line, err

    return examples()


def read_examples(
    path: str | Path,
    data_cfg: DataConfig,
    task: str,
    limit: int | None = None,
    names: set | None = None,
    keep: tuple[str, ...] = (),
) -> list[dict]:
    """Read one split file into canonical examples, checking every row (errors name file:line).

    ``limit`` keeps only the first N examples, yet every row is still read and checked, and its
    label names go into ``names`` (so a label vocabulary covers the whole file at little memory).
    """
    from .encode import label_names

    path = Path(path)
    examples, skipped, count, all_single = [], [], 0, True
    for _, example in iter_examples(path, data_cfg, task, keep=keep):
        if isinstance(example, DataError):
            if data_cfg.on_error != "skip":
                raise example
            skipped.append(str(example))
            continue
        count += 1
        if names is not None:
            names.update(label_names(example, data_cfg.level, task))
        if task == "multilabel":
            all_single = all_single and _single_labels(example, data_cfg.level)
        if limit is None or len(examples) < limit:
            examples.append(example)
        elif names is None:
            break  # not the vocabulary's file: the rows past the limit are not needed
    if task == "multilabel" and count and all_single:
        key = {"sequence": "label", "token": "tags", "positions": "labels"}[data_cfg.level]
        raise DataError(
            f"{path}: task=multilabel, but every row has exactly one label per item in "
            f"'{getattr(data_cfg.fields, key)}' (single-label data); use task=multiclass"
        )
    if skipped:
        log.warning(
            "%s: skipped %d bad row(s) (data.on_error=skip); first: %s", path, len(skipped), skipped[0]
        )
    if not count:
        raise DataError(f"{path}: no examples (the file is empty)")
    return examples
