"""Save a trained model as a HydraHead folder or, for a standard head, as the backbone's own HF class.

HydraHead folder: safetensors, a config with ``auto_map`` and the two self-contained code files,
plus the tokenizer and a model card (``README.md``, :mod:`hydrahead.model_card`). Loads with
``AutoModelFor...from_pretrained(dir, trust_remote_code=True)``
anywhere, and with no remote code at all once ``hydrahead.modeling`` is imported.

Native: a linear head on the last layer, per token (``*ForTokenClassification``) or on the
backbone's pooler (``*ForSequenceClassification``), becomes the plain HF class with the same weights
and logits, loadable without ``trust_remote_code``.

From a run directory: :func:`export_run` (``hydrahead-export RUN_DIR``) rebuilds the model from a
checkpoint and its saved config. A frozen run's checkpoint holds only the head; its backbone is
rebuilt from the source its ``backbone_ref`` names, after checking that source still holds the
weights the head was trained on.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path

import torch

log = logging.getLogger("hydrahead.export")


def native_head_kind(config) -> str | None:
    """``"token"`` or ``"sequence"`` when the head has a native HF equivalent, else None."""
    head = config.head
    standard = (
        config.layers == [config.backbone_layers]
        and not head["hidden_layers"]
        and config.backbone_config.num_hidden_layers == config.backbone_layers
        # HF's own heads have no temperature: a calibrated model's logits would differ
        and getattr(config, "calibration_temperature", 1.0) == 1.0
    )
    if not standard:
        return None
    if config.level == "token" and config.task == "multiclass":
        return "token"
    if config.level == "sequence" and head["pooling"] == "pooler":
        return "sequence"
    return None


def _native_config(config):
    native = config.backbone_config.__class__.from_dict(config.backbone_config.to_dict())
    native.id2label = dict(config.id2label)
    native.label2id = dict(config.label2id)
    native.problem_type = config.problem_type
    native.classifier_dropout = config.head["dropout"]
    native.architectures = None
    return native


def to_native(model):
    """The same network as the backbone's native ``*ForTokenClassification`` / ``*ForSequenceClassification``.

    Raises ValueError when the head is not standard or the native class lays its head out differently.
    """
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    config = model.config
    kind = native_head_kind(config)
    if kind is None:
        raise ValueError(
            "only a standard head exports as a native HF class: an uncalibrated linear head "
            "(hidden_layers=[], no calibration temperature) on the "
            "last layer, per token with task=multiclass, or at sequence level with pooling=pooler. "
            f"This head is level={config.level}, task={config.task}, {config.head}; export it as hydrahead"
        )
    auto = AutoModelForTokenClassification if kind == "token" else AutoModelForSequenceClassification
    native = auto.from_config(_native_config(config))
    wanted = native.state_dict()
    prefix = native.base_model_prefix
    source = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbone."):
            source[f"{prefix}.{key[len('backbone.') :]}"] = value
        elif key.startswith("head.classifier."):
            source[key[len("head.") :]] = value
    # RoBERTa-style sequence heads keep the pooler's dense layer inside the classifier.
    renames = {
        "classifier.weight": "classifier.out_proj.weight",
        "classifier.bias": "classifier.out_proj.bias",
        f"{prefix}.pooler.dense.weight": "classifier.dense.weight",
        f"{prefix}.pooler.dense.bias": "classifier.dense.bias",
    }
    for old, new in renames.items():
        if old in source and old not in wanted and new in wanted:
            source[new] = source.pop(old)
    missing = sorted(set(wanted) - set(source))
    if missing:
        raise ValueError(
            f"cannot export as {type(native).__name__}: its weights {missing[:4]} have no counterpart "
            "in this model; export it as hydrahead instead"
        )
    native.load_state_dict({key: source[key] for key in wanted}, strict=True)
    native.to(next(model.parameters()).dtype)
    return native


def _check_same_logits(model, native) -> float:
    ids = torch.arange(5, 13).remainder(model.config.backbone_config.vocab_size).unsqueeze(0)
    ids = ids.to(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    native.eval()
    with torch.no_grad():
        diff = (model(input_ids=ids).logits - native(input_ids=ids).logits).abs().max().item()
    model.train(was_training)
    if diff > 1e-4:
        raise RuntimeError(f"native export differs from the model: max |logit diff| = {diff:.3g}")
    return diff


def _merged(model, copy: bool = True):
    """``model`` with a LoRA adapter merged into its backbone's weights (a copy unless ``copy=False``):
    the export is then a plain network that loads without peft; ``model`` itself when it has none."""
    from hydrahead.adapters import merged

    return merged(model, copy=copy)


def export_model(
    model, out_dir: str | Path, tokenizer=None, native: bool = False, card: dict | None = None
) -> Path:
    """Write ``model`` (and ``tokenizer``) to ``out_dir``; ``native=True`` uses the backbone's HF class.

    The folder's ``README.md`` is its model card, written last: from the model's config, and with
    ``card`` (a run's record as in ``metrics.json``, its config under ``config``) the run's metrics,
    command and data too (see :mod:`hydrahead.model_card`).
    """
    model = _merged(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if native:
        target = to_native(model)
        _check_same_logits(model, target.to(next(model.parameters()).device))
    else:
        target = model
    target.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    from hydrahead.model_card import write_model_card

    write_model_card(out_dir, model.config, card, native=type(target).__name__ if native else None)
    return out_dir


# ------------------------------------------------------------------------------------ from a run dir


class ExportError(ValueError):
    """A run that cannot be exported; the message (one line) names the directory or file and why."""


def export_run(
    run_dir: str | Path, out: str | Path | None = None, native: bool = False, checkpoint: str = "best"
) -> Path:
    """Rebuild a run's model from a checkpoint and write a full export; returns the export's directory.

    ``checkpoint``: ``best``, ``last`` or a checkpoint file's path. ``out`` defaults to
    ``<run>/model``; an existing export there is replaced, any other non-empty directory is refused.
    A run that did not complete (failed, killed, still running) is exported with a warning: its
    checkpoint is what it trained so far. Raises ExportError (or ConfigError, for a checkpoint or a
    backbone whose weights changed) with one line.
    """
    run = _load_run_dir(run_dir)
    ckpt = _checkpoint_file(run, checkpoint)
    out = Path(out).expanduser() if out else run.dir / "model"
    _check_out(out)
    if run.status != "completed":
        detail = f" ({run.error})" if run.error else ""
        log.warning(
            "the run's status is %r%s: exporting %s as it is, what the run had trained so far",
            run.status,
            detail,
            ckpt.name,
        )
    model, tokenizer = rebuild_from_run(run.dir, str(ckpt))
    return _write_export(model, tokenizer, out, native, card=_run_card(run, ckpt))


def _load_run_dir(run_dir: str | Path):
    from hydrahead.rundir import is_run_dir, load_run

    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise ExportError(f"{run_dir}: no such directory")
    if not is_run_dir(path):
        raise ExportError(f"{path} is not a run directory (it has neither .hydra/ nor metrics.json)")
    return load_run(path)


def rebuild_from_run(run_dir: str | Path, checkpoint: str = "best"):
    """A run's model (in eval mode) and tokenizer, rebuilt in memory from a checkpoint and its saved config.

    ``checkpoint``: ``best``, ``last`` or a checkpoint file's path. A frozen run's backbone is rebuilt
    from the source its ``backbone_ref`` names, refused if its weights changed; so are a LoRA run's
    base weights, and its adapter comes back merged into them (no peft in the model returned).
    Raises ExportError (or ConfigError) with one line.
    """
    from hydrahead.backbone_ref import check_backbone_reference
    from hydrahead.backbones import load_tokenizer
    from hydrahead.build import build_model
    from hydrahead.config.schema import ConfigError
    from hydrahead.training.checkpoint import read_checkpoint

    run = _load_run_dir(run_dir)
    ckpt = _checkpoint_file(run, checkpoint)
    state = read_checkpoint(ckpt)
    config = state.get("hyper_parameters") or {}
    if not all(isinstance(config.get(group), dict) for group in ("backbone", "head", "task", "data")):
        raise ExportError(f"{ckpt}: not a hydrahead checkpoint (it holds no saved run config)")
    labels = config.get("labels") or run.labels
    if not labels:
        raise ExportError(f"{ckpt}: no label vocabulary in the checkpoint or {run.dir / 'labels.json'}")
    bb, head, seed = _typed_config(config, ckpt)
    head_only = bool(state.get("frozen_backbone_dropped"))
    adapter_only = bool(state.get("adapter_only"))  # LoRA: the adapter and the head, no base weight
    if head_only or adapter_only:
        ref = state.get("backbone_ref")
        if ref is None:
            log.warning(
                "%s carries no backbone reference (written before hydrahead recorded one): rebuilding "
                "backbone %r from its source unverified",
                ckpt.name,
                bb.name_or_path,
            )
        else:
            check_backbone_reference(ref)
            # Rebuild from exactly what was checked: the resolved directory, the recorded commit.
            if ref.get("path"):
                bb = dataclasses.replace(bb, name_or_path=ref["path"])
            if ref.get("commit"):
                bb = dataclasses.replace(bb, revision=ref["commit"])
            elif "commit" in ref:
                log.warning(
                    "backbone %r: the commit it resolved to in training is unknown; loading revision %s "
                    "as it is now",
                    bb.name_or_path,
                    bb.revision or "main",
                )
            seed = ref.get("random_init_seed", seed)
    else:  # every backbone weight is in the checkpoint: load none from the source
        bb = dataclasses.replace(bb, pretrained=False)
    bb = dataclasses.replace(bb, name_or_path=_backbone_source(bb.name_or_path, run))
    level = config["data"].get("level", "sequence")
    try:
        tokenizer = load_tokenizer(
            bb.name_or_path,
            revision=bb.revision,
            trust_remote_code=bb.trust_remote_code,
            words=level != "sequence",
        )
        model, _ = build_model(
            bb,
            labels=labels,
            head=head,
            task=config["task"].get("name", "multiclass"),
            level=level,
            seed=seed,
            tokenizer=tokenizer,
        )
    except ConfigError:
        raise
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"backbone {bb.name_or_path!r}: cannot rebuild it ({reason})") from None
    _load_weights(model, state["state_dict"], head_only, ckpt, adapter_only)
    _apply_run_record(model, run.record)
    return _merged(model, copy=False).eval(), tokenizer


def _apply_run_record(model, record: dict) -> None:
    """What the run fitted after its checkpoint was written: the calibration temperature; and the
    resolved loss options (``balanced`` weights from train's counts), so the model's loss is the run's."""
    calibration = record.get("calibration") or {}
    if calibration.get("temperature"):
        model.config.calibration_temperature = float(calibration["temperature"])
    loss = record.get("loss") or {}
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    options = {}
    for key in ("class_weights", "pos_weight"):
        if isinstance(loss.get(key), dict) and all(name in loss[key] for name in names):
            options[key] = [float(loss[key][name]) for name in names]
    if loss.get("label_smoothing"):
        options["label_smoothing"] = float(loss["label_smoothing"])
    model.config.loss = options


def _checkpoint_file(run, checkpoint: str) -> Path:
    if checkpoint not in ("best", "last"):
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ExportError(f"--checkpoint {checkpoint}: no such checkpoint file")
        return path
    found = run.checkpoints
    if checkpoint not in found:
        others = f"; there is {sorted(found)[0]}.ckpt (--checkpoint {sorted(found)[0]})" if found else ""
        raise ExportError(f"{run.dir}: no {checkpoint} checkpoint in checkpoints/{others}")
    return found[checkpoint]


def _typed_config(config: dict, ckpt: Path):
    """The saved config's backbone (BackboneConfig), head spec (a dict) and seed, checked."""
    from hydrahead.backbone_ref import backbone_config_of
    from hydrahead.config.schema import ConfigError, HeadConfig
    from hydrahead.modeling.head_spec import HEAD_KEYS, normalize_head

    try:
        bb = backbone_config_of(config)
        head = HeadConfig(**{k: v for k, v in config["head"].items() if k in HEAD_KEYS}).model_spec()
        normalize_head(head)
    except (ConfigError, TypeError, ValueError) as err:
        raise ExportError(f"{ckpt}: its saved config does not describe a model ({err})") from None
    return bb, head, int(config.get("seed", 0))


def _backbone_source(name: str, run) -> str:
    """A relative local backbone dir means what it meant where the run started (Hydra's runtime cwd)."""
    local = Path(name).expanduser()
    if str(name).startswith("tiny:") or local.is_absolute() or local.is_dir():
        return name
    cwd = (run.hydra.get("runtime") or {}).get("cwd")
    if cwd and (Path(cwd) / local).is_dir():
        return str(Path(cwd) / local)
    return name


def _load_weights(model, saved: dict, head_only: bool, ckpt: Path, adapter_only: bool = False) -> None:
    """The checkpoint's weights into ``model``: every key must fit (head-only: every non-backbone key;
    adapter-only: every key but the backbone's own weights)."""
    from hydrahead.adapters import is_base_weight

    weights = {k[len("model.") :]: v for k, v in saved.items() if k.startswith("model.")}
    wanted = model.state_dict()
    from_source = (lambda k: k.startswith("backbone.")) if head_only else is_base_weight
    missing = [k for k in wanted if k not in weights and not ((head_only or adapter_only) and from_source(k))]
    unexpected = [k for k in weights if k not in wanted]
    if missing or unexpected:
        raise ExportError(
            f"{ckpt} does not fit the model its saved config describes: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}"
        )
    try:  # assign: the weights keep the dtype they were trained in
        model.load_state_dict(weights, strict=not (head_only or adapter_only), assign=True)
    except RuntimeError as err:
        raise ExportError(f"{ckpt}: {str(err).strip().splitlines()[-1].strip()}") from None


def _check_out(out: Path) -> None:
    """``out`` is new, empty or an export (which is replaced): never another directory's content."""
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / "config.json").is_file())):
        raise ExportError(f"--out {out}: exists and is not an export; give a new or empty directory")


def _run_card(run, ckpt: Path) -> dict:
    """What the model card says of the run: its ``metrics.json`` record and saved config. Its metrics
    are its best checkpoint's: an export of another checkpoint lists none."""
    card = {**run.record, "config": run.config}
    best = run.checkpoints.get("best")
    if "metrics" in card and (best is None or best.resolve() != ckpt.resolve()):
        card.pop("metrics")
        card["metrics_note"] = (
            f"these weights are {ckpt.name}'s, and the run's metrics are of its best checkpoint: none listed."
        )
    return card


def _write_export(model, tokenizer, out: Path, native: bool, card: dict | None = None) -> Path:
    """Export into a temporary sibling, then swap it in: a failed export leaves ``out`` as it was."""
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        try:
            export_model(model, tmp, tokenizer, native=native, card=card)
        except ValueError as err:  # no native class for this head
            raise ExportError(f"--native: {err}") from None
        if out.exists():
            old = out.with_name(f".{out.name}.replaced-{tmp.name}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
