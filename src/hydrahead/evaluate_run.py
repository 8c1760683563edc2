"""``hydrahead-eval``: a finished run, evaluated on another labelled file or split.

The run's saved data config, changed by ``--data`` overrides (Hydra's grammar: ``data.test_file=x.jsonl``,
``data=wordnet_lemma``, ``data.max_length=256``), picks the examples; the run's label vocabulary labels
them (a label the run never saw is an error naming ``file:line``). The best checkpoint (or ``--checkpoint``)
is rebuilt as ``hydrahead-export`` rebuilds it. The metrics are training's own (the same torchmetrics,
through :mod:`hydrahead.training.evaluation`), so on the run's own split they equal ``metrics.json``.

Writes ``<run>/eval/<name>/``: ``metrics.json``, ``per_class.csv``, ``confusion_matrix.{csv,png}`` and
``reliability.png``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from hydrahead.config.schema import ConfigError, DataConfig

log = logging.getLogger("hydrahead.eval")

SPLIT_STAGES = {"validation": "val", "test": "test", "train": "train"}


class EvalError(ValueError):
    """A run or a request that cannot be evaluated; the message (one line) says which and why."""


def data_config(saved: dict, overrides: list[str]) -> DataConfig:
    """The run's data config (``saved``: the run's resolved ``data`` node) with ``overrides`` applied.

    ``data=<preset>`` starts from that preset of ``conf/data`` instead; ``data.<key>=<value>`` sets a key
    (``+``/``++`` allowed). Unknown keys and wrong types are ConfigErrors naming the key.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from hydrahead.utils.paths import config_dir

    base = OmegaConf.merge(OmegaConf.structured(DataConfig), saved)
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as err:  # Hydra's grammar errors are several classes
        raise ConfigError(f"--data: {str(err).strip().splitlines()[0]}") from None
    for override in parsed:
        key = override.key_or_group
        if key == "data":
            preset = config_dir() / "data" / f"{override.value()}.yaml"
            if not preset.is_file():
                options = sorted(p.stem for p in preset.parent.glob("*.yaml"))
                raise ConfigError(f"--data data={override.value()}: no such data preset; one of {options}")
            base = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(preset))
            continue
        if not key.startswith("data."):
            raise ConfigError(
                f"--data {override.input_line}: only data keys (data.<key>=...) or data=<preset>"
            )
        if override.is_delete():
            raise ConfigError(f"--data {override.input_line}: deleting a data key is not supported")
        try:
            OmegaConf.update(base, key[len("data.") :], override.value(), merge=True)
        except OmegaConfBaseException as err:
            raise ConfigError(f"--data {override.input_line}: {str(err).splitlines()[0]}") from None
    try:
        return OmegaConf.to_object(base)
    except (OmegaConfBaseException, ValueError) as err:
        raise ConfigError(f"--data: {str(err).splitlines()[0]}") from None


def saved_config(run) -> dict:
    """The run's saved config, resolved (``paths.output_dir`` is the run dir; ``hh.*`` resolvers)."""
    from omegaconf import OmegaConf

    from hydrahead.config.resolvers import register

    register()
    if not run.config_file.is_file():
        raise EvalError(f"{run.dir}: no saved config ({run.config_file.relative_to(run.dir)})")
    cfg = OmegaConf.load(run.config_file)
    cfg.paths.output_dir = str(run.dir)
    return OmegaConf.to_container(cfg, resolve=True)


def evaluate_run(
    run_dir: str | Path,
    data: list[str] = (),
    split: str = "test",
    name: str | None = None,
    checkpoint: str = "best",
    device: str = "auto",
    batch_size: int | None = None,
) -> dict:
    """Evaluate ``run_dir``'s model on ``split`` of its data changed by ``data``; returns the record
    written to ``<run>/eval/<name>/metrics.json`` (its ``metrics``: ``<stage>/acc``, ...)."""
    import torch

    from hydrahead.data.datamodule import HeadDataModule
    from hydrahead.export import rebuild_from_run
    from hydrahead.rundir import is_run_dir, load_run, write_json
    from hydrahead.training import reports
    from hydrahead.training.evaluation import collect, entity_metrics, score

    start = time.perf_counter()
    path = Path(run_dir).expanduser()
    if not path.is_dir() or not is_run_dir(path):
        raise EvalError(f"{run_dir}: not a run directory (it has neither .hydra/ nor metrics.json)")
    if split not in SPLIT_STAGES:
        raise EvalError(f"--split {split}: one of {list(SPLIT_STAGES)}")
    run = load_run(path)
    config = saved_config(run)
    typed_data = data_config(config["data"], list(data))
    if batch_size:
        typed_data = dataclasses.replace(typed_data, eval_batch_size=batch_size)
    if _sets_a_file(data) and (typed_data.name.startswith("synthetic") or typed_data.hf_name):
        # A labelled file to evaluate on, for a run trained on generated or hub data: read it as a
        # local file with the run's level, fields and lengths.
        typed_data = dataclasses.replace(typed_data, name="local", hf_name=None)
    task_name = config["task"]["name"]
    file = getattr(typed_data, f"{split}_file", None)
    reads_files = not typed_data.name.startswith("synthetic") and not typed_data.hf_name
    if reads_files and not file:
        raise EvalError(f"data.{split}_file is not set: give --data data.{split}_file=<file>")
    if reads_files and not Path(file).expanduser().is_file():
        raise EvalError(f"data.{split}_file={file}: no such file")
    name = name or (Path(file).stem if file and _sets_a_file(data, split) else split)
    out_dir = run.dir / "eval" / name
    model, tokenizer = rebuild_from_run(run.dir, checkpoint)  # checks the checkpoint before any data
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    datamodule = HeadDataModule(typed_data, tokenizer, task_name, labels=labels)
    datamodule.load_split(split)
    target = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else device.replace("auto", "cpu")
    )
    model.to(target).eval()
    temperature = float(getattr(model.config, "calibration_temperature", 1.0))
    model.config.calibration_temperature = 1.0  # the metrics as trained; calibrated ones beside them
    task_cfg = _task(config)
    outputs = collect(
        model,
        datamodule.split_loader(split),
        task_name,
        target,
        entities=entity_metrics(model, task_cfg, typed_data.seqeval_strict),
    )
    model.config.calibration_temperature = temperature
    stage = SPLIT_STAGES[split]
    metrics = score(outputs, task_name, len(labels), task_cfg.threshold, stage)
    if temperature != 1.0:
        calibrated = score(outputs, task_name, len(labels), task_cfg.threshold, stage, temperature)
        for key in ("ece", "brier"):
            metrics[f"{stage}/{key}_calibrated"] = calibrated[f"{stage}/{key}"]
    files = reports.write(
        out_dir, outputs.logits, outputs.labels, task_name, labels, task_cfg.threshold, temperature, split
    )
    record = {
        "run": str(run.dir),
        "split": split,
        "data": {"name": typed_data.name, "file": str(file) if file else None, "overrides": list(data)},
        "checkpoint": checkpoint,
        "items": int(outputs.labels.shape[0]),
        "calibration_temperature": temperature,
        "metrics": metrics,
        "reports": sorted(p.name for p in files.values()),
        "wall_s": round(time.perf_counter() - start, 3),
    }
    write_json(out_dir / "metrics.json", record)
    record["dir"] = str(out_dir)
    return record


def _sets_a_file(overrides, split: str | None = None) -> bool:
    keys = [o.lstrip("+").split("=", 1)[0] for o in overrides]
    wanted = [f"data.{split}_file"] if split else [f"data.{s}_file" for s in SPLIT_STAGES]
    return any(key in wanted for key in keys)


def _task(config: dict):
    from omegaconf import OmegaConf

    from hydrahead.config.schema import TaskConfig

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TaskConfig), config["task"]))
