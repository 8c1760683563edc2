"""Every check that needs no weights, and the wording of config errors: one line naming the key."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from .schema import ConfigError, TrainConfig


def validate(cfg, deep: bool = True) -> TrainConfig:
    """The composed config as a :class:`TrainConfig`, checked; ConfigError names the key (or file).

    ``deep`` also reads the backbone's config (for layer ranges) and the checkpoint to resume from.
    """
    import dataclasses

    from hydrahead.modeling.head_spec import normalize_head

    known = {f.name for f in dataclasses.fields(TrainConfig)} | {"hydra"}
    stray = sorted(set(cfg.keys()) - known)
    if stray:  # e.g. +w1=linear for a group that is not on the search path: it would train the defaults
        raise ConfigError(
            f"unknown top-level key {stray[0]} (added with +{stray[0]}=...?): it is neither a config "
            "group on the search path nor a key of the run config; top-level keys: "
            + ", ".join(sorted(known - {"hydra"}))
        )
    try:
        typed: TrainConfig = OmegaConf.to_object(cfg)
        normalize_head(typed.head.model_spec())
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from None
    head_level = typed.head.level
    if head_level is not None and head_level != typed.data.level:
        raise ConfigError(
            f"head needs data at level {head_level!r} (head.level) but data={typed.data.name} is "
            f"level {typed.data.level!r}; pick a {head_level}-level data config"
        )
    data = typed.data
    _check_controls(typed)
    if not data.prepare and not data.hf_name and not data.name.startswith("synthetic"):
        for key in ("train_file", "validation_file", "test_file"):
            path = getattr(data, key)
            if path is None and key != "test_file":
                raise ConfigError(f"data.{key} is not set: data={data.name} reads local files")
            if path is not None and not Path(path).expanduser().is_file():
                raise ConfigError(f"data.{key}={path}: no such file")
    if deep:
        _check_backbone(typed)
        if typed.ckpt_path:
            from hydrahead.training.checkpoint import check_checkpoint

            check_checkpoint(typed.ckpt_path, typed)
    return typed


def _check_controls(typed: TrainConfig) -> None:
    """Control tasks and MDL: what they need of the data level and the backbone."""
    task, data = typed.task, typed.data
    if task.control and data.level == "sequence" and not task.control_key:
        raise ConfigError(
            f"task.control=true at sequence level (data={data.name}) needs task.control_key=<field>: a "
            "control task gives each type one random label, and a whole sequence has no word type; name "
            "the field whose value is the type (e.g. a lemma or id column)"
        )
    if task.control and task.monitor.split("/")[-1].startswith("entity_"):
        raise ConfigError(
            f"task.monitor={task.monitor} with task.control=true: a control task's tags are random per "
            "word type, so entity-level metrics mean nothing; monitor val/acc (token accuracy)"
        )
    if task.mdl and (typed.backbone.freeze is not True or typed.backbone.cache == "off"):
        raise ConfigError(
            f"task.mdl={task.mdl} measures the codelength of labels given frozen features: it needs "
            f"backbone.freeze=true and the feature cache (got backbone.freeze={typed.backbone.freeze}, "
            f"backbone.cache={typed.backbone.cache})"
        )


# Encoders whose position ids start after the padding index (HF's create_position_ids_from_input_ids).
PADDING_OFFSET_POSITIONS = {
    "roberta",
    "xlm-roberta",
    "xlm-roberta-xl",
    "camembert",
    "data2vec-text",
    "longformer",
}


def max_positions(config) -> int | None:
    """The longest input, in tokens, a backbone's absolute position embeddings allow (None: no such
    limit, e.g. DeBERTa's relative positions)."""
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return None
    if getattr(config, "position_biased_input", True) is False:
        return None
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        return None
    if getattr(config, "model_type", None) in PADDING_OFFSET_POSITIONS:
        limit -= (getattr(config, "pad_token_id", None) or 0) + 1
    return limit


def _check_backbone(typed: TrainConfig) -> None:
    """The backbone exists and the head's layers are in its range (reads config.json, no weights)."""
    from hydrahead.backbones import load_backbone_config
    from hydrahead.modeling.head_spec import resolve_layers

    bb = typed.backbone
    try:
        config = load_backbone_config(
            bb.name_or_path, revision=bb.revision, trust_remote_code=bb.trust_remote_code
        )
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from None
    except OSError as err:
        raise ConfigError(
            f"backbone.name_or_path={bb.name_or_path!r}: cannot load its config ({err})"
        ) from None
    layers = config.num_hidden_layers
    try:
        read = resolve_layers(typed.head.layer, layers)
    except ValueError as err:
        raise ConfigError(f"{err} [backbone {bb.name_or_path}]") from None
    if bb.adapter and not isinstance(bb.freeze, bool) and bb.freeze >= max(read):
        raise ConfigError(
            f"backbone.freeze={bb.freeze} with backbone.adapter={bb.adapter} leaves no layer for the "
            f"adapter: adapters go above layer {bb.freeze} only, and the head reads up to layer "
            f"{max(read)} (head.layer={typed.head.layer}); set backbone.freeze below {max(read)}"
        )
    limit = max_positions(config)
    if limit is not None and typed.data.max_length > limit:
        raise ConfigError(
            f"data.max_length={typed.data.max_length} exceeds the {limit} positions backbone "
            f"{bb.name_or_path} has (max_position_embeddings={config.max_position_embeddings}); "
            f"set data.max_length={limit} or less"
        )
    if not isinstance(bb.freeze, bool) and bb.freeze > layers:
        raise ConfigError(f"backbone.freeze={bb.freeze} exceeds the backbone's {layers} layers (0..{layers})")


def preflight(overrides: list[str]) -> TrainConfig:
    """Compose and validate the single run ``overrides`` describe, before Hydra creates its directory.

    So a bad override, value, path or checkpoint never leaves a run dir behind. Raises ConfigError
    with one line naming the key (or file) and what is allowed; also when the run dir's place
    cannot be written.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .compose import compose

    try:
        cfg = compose(overrides)
        typed = validate(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(describe_config_error(err)) from None
    run_dir = Path(typed.paths.output_dir)
    probe = next((p for p in [run_dir, *run_dir.parents] if p.exists()), None)
    try:  # try it for real: root passes every permission check, a read-only mount does not
        handle, probe_file = tempfile.mkstemp(dir=probe, prefix=".hydrahead-write-test-")
        os.close(handle)
        os.unlink(probe_file)
    except OSError as err:
        raise ConfigError(
            f"cannot write the run directory {run_dir} ({probe}: {err.strerror}); set paths.log_dir "
            "or hydra.run.dir to a writable place"
        ) from None
    return typed


def describe_config_error(err: Exception) -> str:
    """Hydra's and OmegaConf's multi-line composition errors, as one line naming the key."""
    from . import schema

    text = str(err.__cause__ or err) if not str(err).startswith("Could not override") else str(err)
    full = f"{err}\n{err.__cause__ or ''}"
    key = re.search(r"full_key: (\S+)", full)
    key = key.group(1) if key else None
    missing = re.search(r"Key '([^']+)' not in '(\w+)'", full)
    if missing and key:
        node = getattr(schema, missing.group(2), None)
        allowed = ", ".join(node.__dataclass_fields__) if node is not None else ""
        return f"unknown key {key}; {key.rsplit('.', 1)[0]} has: {allowed}"
    option = re.search(r"Could not find '([^']+)'", full)
    if option:
        group, name = option.group(1).rsplit("/", 1) if "/" in option.group(1) else ("", option.group(1))
        choices = re.findall(r"^\t(\S+)$", full, re.M)
        return f"{group}={name}: no such option; available: {', '.join(choices)}"
    value = re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", full)
    if value and key:
        return f"{key}={value.group(1)}: expected {value.group(2).lower()}"
    if "Missing mandatory value" in full and key:
        return f"{key} is required (it has no value; set {key}=...)"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"{first}" + (f" ({key})" if key and key not in first else "")
