"""Batch inference over a data file with a trained model: the library behind ``hydrahead-predict``.

    predictor = load_predictor("outputs/runs/<run>")           # or an export directory
    predict_file(predictor, "test.jsonl", "predictions.jsonl")

The input is read with the training readers (JSONL, CSV, Parquet, CoNLL; the run's field names),
its labels, if any, ignored. Rows are read lazily in chunks; within a chunk they are sorted by
length and batched, and each chunk's predictions are written (in input order) and flushed before
the next chunk is read, so memory stays bounded on any file and a bad row leaves every row before
it written. Probabilities are the model's ``predict_proba`` of its logits (a native HF export:
softmax, or sigmoid for multilabel).

One output row per input row: ``line`` (the input's line; Parquet: row number), ``id`` (when the
input has the id field), then per level and task:

  sequence   multiclass: label, score (+ top_k: [{label, score}, ...] unless top_k=1; 0: all)
             multilabel: labels (those scoring above the threshold), scores ({label: p})
  token      tokens, tags (one per word, from its first subword), scores (+ top_k)
  positions  word_positions or spans, labels (one per position), scores (+ top_k)

At token and positions level each entry is as at sequence level (multilabel: a list of labels and
a {label: p} per word or position); words and positions truncated away by ``max_length`` get null.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hydrahead.config.schema import DataConfig, FieldsConfig
from hydrahead.data.encode import DataError, encode_inputs
from hydrahead.data.readers import FORMATS, iter_examples

log = logging.getLogger("hydrahead.predict")

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
_PRECISION_ALIASES = {
    "fp32": "32",
    "32-true": "32",
    "float32": "32",
    "bf16-mixed": "bf16",
    "bfloat16": "bf16",
    "16-mixed": "16",
    "fp16": "16",
    "float16": "16",
}
FIELD_KEYS = tuple(f.name for f in dataclasses.fields(FieldsConfig))


class PredictError(ValueError):
    """A model or option that cannot predict; the message (one line) names the path or option and why."""


@dataclass
class Predictor:
    """A loaded model and everything needed to read, encode and score a data file for it."""

    model: torch.nn.Module
    tokenizer: object
    data: DataConfig
    """Level, field names and max_length the input is read and encoded with."""
    task: str
    labels: list[str]
    """Label names in the model's order (``id2label``)."""
    threshold: float = 0.5
    """Multilabel: a label is predicted when its probability is above this."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "32"
    native: bool = False
    """A native HF ``*For{Sequence,Token}Classification`` export (no ``predict_proba``)."""
    source: str = ""

    @property
    def level(self) -> str:
        return self.data.level

    def encode(self, example: dict) -> tuple[dict, list[int | None] | None]:
        """One canonical example's model inputs and its slots (first subword per word, token per
        position, None where truncated), with the training code's tokenization and alignment."""
        feature, slots, _ = encode_inputs(
            example,
            self.tokenizer,
            level=self.level,
            max_length=self.data.max_length,
            where=example.get("_where", "input"),
        )
        return feature, slots

    def _pad(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """A batch padded as training's Collator pads it (without labels, and without importing Lightning)."""
        longest = max(len(f["input_ids"]) for f in features)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        pads = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0}
        batch = {
            key: torch.tensor([f[key] + [pad] * (longest - len(f[key])) for f in features])
            for key, pad in pads.items()
            if key in features[0]
        }
        if self.level == "positions":  # pad positions with 0, an in-bounds index; their scores are dropped
            most = max(1, max(len(f["mask_indices"]) for f in features))
            batch["mask_indices"] = torch.tensor(
                [f["mask_indices"] + [0] * (most - len(f["mask_indices"])) for f in features]
            )
        return batch

    def probabilities(self, features: list[dict], slots: list) -> list[torch.Tensor]:
        """Per example, float32 probabilities on the CPU: [labels] (sequence), [kept words, labels]
        (token) or [kept positions, labels] (positions)."""
        batch = self._pad(features)
        batch = {key: value.to(self.device) for key, value in batch.items()}
        dtype = PRECISIONS[self.precision]
        autocast = (
            torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        )
        with torch.inference_mode():
            with autocast:
                logits = self.model(**batch).logits
            logits = logits.float()
            if not self.native:
                probs = self.model.predict_proba(logits)
            elif self.task == "multilabel":
                probs = torch.sigmoid(logits)
            else:
                probs = torch.softmax(logits, dim=-1)
            probs = probs.cpu()
        if self.level == "sequence":
            return list(probs)
        if self.level == "token":
            return [probs[i, [s for s in row if s is not None]] for i, row in enumerate(slots)]
        return [probs[i, : len(f["mask_indices"])] for i, f in enumerate(features)]


# ------------------------------------------------------------------------------------------ loading


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` (or None): CUDA when available, else the CPU; otherwise the torch device named."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise PredictError(f"--device {device}: not a device ({err})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise PredictError(f"--device {device}: CUDA is not available here; use --device cpu")
    return resolved


def resolve_precision(precision: str | int | None) -> str:
    """``32`` (default), ``bf16`` or ``16`` (autocast); Lightning's spellings are accepted too."""
    name = "32" if precision is None else str(precision).lower()
    name = _PRECISION_ALIASES.get(name, name)
    if name not in PRECISIONS:
        raise PredictError(f"--precision {precision}: choose one of {list(PRECISIONS)}")
    return name


def load_predictor(
    path: str | Path,
    device: str | torch.device | None = None,
    precision: str | int | None = None,
    *,
    fields: dict[str, str] | None = None,
    fmt: str = "auto",
    max_length: int | None = None,
    threshold: float | None = None,
    checkpoint: str | None = None,
) -> Predictor:
    """A :class:`Predictor` for a run directory or an export directory.

    A run directory (``.hydra/`` or ``metrics.json``) predicts with its export (``model/``), or, with
    none (or with ``checkpoint``: best, last or a path), with its model rebuilt in memory from that
    checkpoint; the input's field names, ``max_length`` and the multilabel threshold come from its
    saved config. An export directory (``config.json``) is a hydrahead export or a native HF
    ``*ForSequenceClassification`` / ``*ForTokenClassification``; level and task come from its config,
    field names are the defaults (or its run's, for a run's ``model/``). ``fields`` (``{"text":
    "sentence"}``), ``fmt``, ``max_length`` and ``threshold`` override. Raises PredictError.
    """
    from hydrahead.rundir import is_run_dir, load_run

    where = Path(path).expanduser()
    if not where.is_dir():
        raise PredictError(f"{path}: no such run or export directory")
    run = None
    if is_run_dir(where):
        run = load_run(where)
        if checkpoint is None and run.model_dir is not None:
            model, tokenizer, native = _load_export(run.model_dir)
            source = str(run.model_dir)
        else:
            model, tokenizer, native = _rebuild(run, checkpoint or "best")
            source = f"{run.dir} ({checkpoint or 'best'} checkpoint)"
    elif (where / "config.json").is_file():
        if checkpoint is not None:
            raise PredictError(f"--checkpoint {checkpoint}: {where} is an export, not a run directory")
        model, tokenizer, native = _load_export(where)
        source = str(where)
        if is_run_dir(where.parent):  # a run's model/: read the input as the run read its data
            run = load_run(where.parent)
    else:
        raise PredictError(
            f"{where}: neither a run directory (no .hydra/ or metrics.json) nor an export (no config.json)"
        )
    config = model.config
    if native:
        level = "token" if type(model).__name__.endswith("ForTokenClassification") else "sequence"
        task = "multilabel" if config.problem_type == "multi_label_classification" else "multiclass"
    else:
        level, task = config.level, config.task
    labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    saved = (run.config if run is not None else {}) or {}
    data = _data_config(saved.get("data"), level, fields or {}, fmt, max_length, model, tokenizer, native)
    saved_task = saved.get("task") if isinstance(saved.get("task"), dict) else {}
    if threshold is None:
        threshold = saved_task.get("threshold")
        threshold = threshold if isinstance(threshold, (int, float)) else 0.5
    if not 0 < float(threshold) < 1:
        raise PredictError(f"--threshold {threshold}: must be in (0, 1)")
    resolved = resolve_device(device)
    model.to(resolved).eval()
    return Predictor(
        model=model,
        tokenizer=tokenizer,
        data=data,
        task=task,
        labels=labels,
        threshold=float(threshold),
        device=resolved,
        precision=resolve_precision(precision),
        native=native,
        source=source,
    )


def _rebuild(run, checkpoint: str):
    from hydrahead.config.schema import ConfigError
    from hydrahead.export import ExportError, rebuild_from_run

    if run.status != "completed":
        detail = f" ({run.error})" if run.error else ""
        log.warning(
            "the run's status is %r%s: predicting with what it had trained so far", run.status, detail
        )
    try:
        model, tokenizer = rebuild_from_run(run.dir, checkpoint)
    except (ExportError, ConfigError) as err:
        raise PredictError(str(err)) from None
    return model, tokenizer, False


def _load_export(folder: Path):
    """(model, tokenizer, native) from an export folder: hydrahead's format or a native HF class."""
    from transformers import (
        AutoModel,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    from hydrahead.backbones import load_tokenizer

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise PredictError(f"{folder / 'config.json'}: not a readable model config ({err})") from None
    native = config.get("model_type") != "hydrahead"
    if native:
        architectures = config.get("architectures") or []
        if any(a.endswith("ForTokenClassification") for a in architectures):
            auto, level = AutoModelForTokenClassification, "token"
        elif any(a.endswith("ForSequenceClassification") for a in architectures):
            auto, level = AutoModelForSequenceClassification, "sequence"
        else:
            raise PredictError(
                f"{folder}: architectures {architectures} is neither a hydrahead model nor a "
                "*ForSequenceClassification / *ForTokenClassification"
            )
    else:
        from hydrahead.modeling import register_auto_classes

        register_auto_classes()  # the local classes: no remote code
        auto, level = AutoModel, config.get("level", "sequence")
    try:
        model = auto.from_pretrained(folder)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PredictError(f"{folder}: cannot load the model ({reason})") from None
    try:
        tokenizer = load_tokenizer(str(folder), words=level != "sequence")
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PredictError(f"{folder}: cannot load its tokenizer ({reason})") from None
    return model, tokenizer, native


def _plain(value) -> bool:
    """A saved config value that is a value, not an unresolved ``${...}`` interpolation."""
    return value is not None and not (isinstance(value, str) and "${" in value)


def _data_config(saved, level, fields, fmt, max_length, model, tokenizer, native) -> DataConfig:
    saved = saved if isinstance(saved, dict) else {}
    saved_fields = saved.get("fields") if isinstance(saved.get("fields"), dict) else {}
    names = {
        k: v
        for k, v in saved_fields.items()
        if k in FIELD_KEYS and (_plain(v) or (k, v) == ("text_pair", None))
    }
    unknown = sorted(set(fields) - set(FIELD_KEYS))
    if unknown:
        raise PredictError(f"--field {unknown[0]}=...: no such field; choose from {list(FIELD_KEYS)}")
    names.update(fields)
    if max_length is None:
        max_length = saved.get("max_length") if isinstance(saved.get("max_length"), int) else None
    if max_length is None:
        max_length = _default_max_length(model, tokenizer, native)
    if max_length < 1:
        raise PredictError(f"--max-length {max_length}: must be >= 1")
    if fmt not in FORMATS:
        raise PredictError(f"--format {fmt}: choose one of {list(FORMATS)}")
    return DataConfig(
        name="predict", level=level, format=fmt, fields=FieldsConfig(**names), max_length=int(max_length)
    )


def _default_max_length(model, tokenizer, native) -> int:
    """What the backbone's position embeddings allow (and the tokenizer, if it says less); else 512."""
    from hydrahead.config.validate import max_positions

    backbone = model.config if native else model.config.backbone_config
    limits = [max_positions(backbone) or 512]
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < 100_000:
        limits.append(declared)
    return min(limits)


# --------------------------------------------------------------------------------------- predicting


@dataclass
class PredictSummary:
    """What :func:`predict_file` did."""

    rows: int = 0
    """Rows predicted and written."""
    skipped: int = 0
    """Bad rows skipped (``on_error="skip"``)."""
    first_skipped: str | None = None
    truncated: int = 0
    """Words or positions past ``max_length`` (written as null)."""
    items: int = 0
    """Words or positions in the rows written."""
    output: str = "-"


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    """Lists of up to ``size`` items; at a DataError, the items before it first, then the error."""
    chunk: list = []
    try:
        for item in items:
            chunk.append(item)
            if len(chunk) == size:
                yield chunk
                chunk = []
    except DataError:
        if chunk:
            yield chunk
        raise
    if chunk:
        yield chunk


def _entry(probs: torch.Tensor, labels: list[str], task: str, top_k: int, threshold: float):
    """One prediction from one probability vector: (label, score, top_k list) or (labels, scores)."""
    values = probs.tolist()
    if task == "multilabel":
        return [name for name, p in zip(labels, values) if p > threshold], dict(zip(labels, values))
    best = max(range(len(values)), key=values.__getitem__)
    ranked = None
    if top_k != 1:
        order = sorted(range(len(values)), key=lambda i: -values[i])[: top_k or None]
        ranked = [{"label": labels[i], "score": values[i]} for i in order]
    return labels[best], values[best], ranked


def _output_row(line: int, example: dict, probs: torch.Tensor, slots, predictor: Predictor, top_k, id_field):
    task, labels, threshold = predictor.task, predictor.labels, predictor.threshold
    row: dict = {"line": line}
    ident = (example.get("_fields") or {}).get(id_field)
    if ident is not None:
        row["id"] = ident
    if predictor.level == "sequence":
        entry = _entry(probs, labels, task, top_k, threshold)
        if task == "multilabel":
            row["labels"], row["scores"] = entry
        else:
            row["label"], row["score"] = entry[:2]
            if entry[2] is not None:
                row["top_k"] = entry[2]
        return row
    kept = iter(probs)
    entries = [None if slot is None else _entry(next(kept), labels, task, top_k, threshold) for slot in slots]
    if predictor.level == "token":
        row["tokens"], key = example["tokens"], "tags"
    else:
        key = "labels"
        if "spans" in example:
            row["spans"] = example["spans"]
        else:
            row["word_positions"] = example["word_positions"]
    row[key] = [None if e is None else e[0] for e in entries]
    row["scores"] = [None if e is None else e[1] for e in entries]
    if task == "multiclass" and top_k != 1:
        row["top_k"] = [None if e is None else e[2] for e in entries]
    return row


def iter_predictions(
    predictor: Predictor,
    path: str | Path,
    *,
    batch_size: int = 64,
    chunk_size: int = 2048,
    top_k: int = 1,
    on_error: str = "raise",
    id_field: str = "id",
    summary: PredictSummary | None = None,
    on_batch: Callable[[int], object] | None = None,
) -> Iterator[list[dict]]:
    """The output rows of ``path``, one list per chunk of ``chunk_size`` input rows, in input order.

    ``top_k``: multiclass, how many ranked labels to list (1: the best only; 0: all). A bad row
    (``file:line`` in the DataError) raises once the rows before it are yielded; ``on_error="skip"``
    skips it instead and counts it in ``summary``.
    """
    if batch_size < 1 or chunk_size < 1:
        raise PredictError(f"--batch-size {batch_size} and --chunk-size {chunk_size} must be >= 1")
    if top_k < 0:
        raise PredictError(f"--top-k {top_k}: must be >= 0 (0: every label)")
    if on_error not in ("raise", "skip"):
        raise PredictError(f"--on-error {on_error}: choose raise or skip")
    summary = summary if summary is not None else PredictSummary()
    # Checked here, before the first row: a missing file or a wrong format raises at the call.
    rows = iter_examples(path, predictor.data, predictor.task, with_labels=False, keep=(id_field,))
    return _predictions(predictor, rows, batch_size, chunk_size, top_k, on_error, id_field, summary, on_batch)


def _predictions(predictor, rows, batch_size, chunk_size, top_k, on_error, id_field, summary, on_batch):
    def encoded():
        for line, example in rows:
            if not isinstance(example, DataError):
                try:
                    feature, slots = predictor.encode(example)
                except DataError as err:
                    example = err
                else:
                    yield line, example, feature, slots
                    continue
            if on_error == "raise":
                raise example
            summary.skipped += 1
            summary.first_skipped = summary.first_skipped or str(example)

    for chunk in _chunks(encoded(), chunk_size):
        # Longest first: similar lengths share a batch (little padding), and an out-of-memory shows at once.
        order = sorted(range(len(chunk)), key=lambda i: -len(chunk[i][2]["input_ids"]))
        probs: list = [None] * len(chunk)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            scored = predictor.probabilities([chunk[i][2] for i in batch], [chunk[i][3] for i in batch])
            for i, p in zip(batch, scored):
                probs[i] = p
            if on_batch is not None:
                on_batch(len(batch))
        out = []
        for (line, example, _, slots), p in zip(chunk, probs):
            out.append(_output_row(line, example, p, slots, predictor, top_k, id_field))
            if slots is not None:
                summary.items += len(slots)
                summary.truncated += slots.count(None)
        summary.rows += len(out)
        yield out


class _Writer:
    """JSON lines, or CSV (nested values as JSON), to a file or stdout; flushed per chunk."""

    def __init__(self, output: str | Path, columns: list[str]):
        self.stdout = str(output) == "-"
        self.csv = not self.stdout and Path(output).suffix.lower() == ".csv"
        if self.stdout:
            self.handle = sys.stdout
        else:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(output, "w", encoding="utf-8", newline="" if self.csv else None)  # noqa: SIM115
        self.writer = None
        if self.csv:
            self.writer = csv.DictWriter(self.handle, fieldnames=columns, extrasaction="ignore")
            self.writer.writeheader()

    def write(self, rows: list[dict]) -> None:
        if self.writer is not None:
            for row in rows:
                self.writer.writerow(
                    {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()}
                )
        else:
            self.handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        self.handle.flush()

    def close(self) -> None:
        if not self.stdout:
            self.handle.close()


def output_columns(predictor: Predictor, top_k: int = 1) -> list[str]:
    """The CSV columns of this predictor's output rows."""
    multiclass = predictor.task == "multiclass"
    columns = {
        "sequence": ["label", "score"] if multiclass else ["labels", "scores"],
        "token": ["tokens", "tags", "scores"],
        "positions": ["word_positions", "spans", "labels", "scores"],
    }[predictor.level]
    return ["line", "id", *columns, *(["top_k"] if multiclass and top_k != 1 else [])]


def predict_file(
    predictor: Predictor,
    input: str | Path,
    output: str | Path = "-",
    *,
    batch_size: int = 64,
    chunk_size: int = 2048,
    top_k: int = 1,
    on_error: str = "raise",
    id_field: str = "id",
    progress: bool = False,
) -> PredictSummary:
    """Predict every row of ``input`` into ``output`` (``-``: stdout; ``.csv``: CSV, else JSON lines).

    Streams: ``chunk_size`` rows are read, predicted in length-sorted batches of ``batch_size``,
    written in input order and flushed before the next chunk is read. A bad row raises DataError
    (``file:line: reason``) after the rows before it are written; ``output`` keeps them.
    ``on_error="skip"`` skips bad rows (counted in the summary). ``progress``: a bar on stderr.
    """
    if str(output) != "-" and Path(output).expanduser().resolve() == Path(input).expanduser().resolve():
        raise PredictError(f"--output {output}: is the input file; give another path")
    summary = PredictSummary(output=str(output))
    with _progress(progress, _row_count(Path(input))) as bar:
        chunks = iter_predictions(
            predictor,
            input,
            batch_size=batch_size,
            chunk_size=chunk_size,
            top_k=top_k,
            on_error=on_error,
            id_field=id_field,
            summary=summary,
            on_batch=bar,
        )
        # Opened once the input is known to be readable; written to in place, so rows stay on failure.
        writer = _Writer(
            Path(output).expanduser() if str(output) != "-" else "-", output_columns(predictor, top_k)
        )
        try:
            for rows in chunks:
                writer.write(rows)
        finally:
            writer.close()
    if summary.skipped:
        log.warning(
            "skipped %d bad row(s) (--on-error skip); first: %s", summary.skipped, summary.first_skipped
        )
    if summary.truncated:
        what = "words" if predictor.level == "token" else "positions"
        log.warning(
            "%d of %d %s fall outside max_length=%d: written as null",
            summary.truncated,
            summary.items,
            what,
            predictor.data.max_length,
        )
    return summary


def _row_count(path: Path) -> int | None:
    """Parquet's row count from its footer (for the progress bar); None for the other formats."""
    if path.suffix.lower() not in (".parquet", ".pq"):
        return None
    try:
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    except Exception:
        return None


@contextlib.contextmanager
def _progress(enabled: bool, total: int | None):
    if not enabled:
        yield lambda n: None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit=" rows", file=sys.stderr, dynamic_ncols=True, desc="predict") as bar:
        yield bar.update
