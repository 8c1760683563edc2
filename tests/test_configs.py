"""Every shipped config composes against the typed schema and passes validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import hydrahead.cli.train  # noqa: F401  (registers the schema and resolvers)
from hydrahead.config import validate
from hydrahead.utils.paths import config_dir, experiments_dir

# Groups whose options need a matching data level to validate.
NEEDS = {
    ("head", "mask_gather"): ["data=synthetic_positions"],
    ("data", "local"): ["data.train_file={files}/train.jsonl", "data.validation_file={files}/dev.jsonl"],
}


def shipped_options() -> list[tuple[str, str]]:
    options = []
    for path in sorted(config_dir().glob("*/*.yaml")):
        group = path.parent.name
        if group in ("experiment", "hydra"):
            continue
        options.append((group, path.stem))
    options += [("experiment", p.stem) for p in sorted(experiments_dir().glob("*.yaml"))]
    return options


def compose_train(overrides: list[str], tmp_path: Path):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose(
            "train", overrides=[*overrides, f"paths.output_dir={tmp_path}", f"paths.root_dir={tmp_path}"]
        )


@pytest.mark.parametrize(("group", "option"), shipped_options(), ids="/".join)
def test_every_config_composes_and_validates(group, option, tmp_path):
    for name in ("train.jsonl", "dev.jsonl"):
        (tmp_path / name).write_text('{"text": "a b", "label": "x"}\n')
    needs = [n.format(files=tmp_path) for n in NEEDS.get((group, option), [])]
    cfg = compose_train([f"{group}={option}", *needs], tmp_path)
    typed = validate(cfg)
    assert typed.data.level in ("sequence", "token", "positions")


def test_every_config_file_opens_with_a_runnable_command():
    files = [p for p in config_dir().rglob("*.yaml") if p.parent.name != "hydra"]
    files += list(experiments_dir().glob("*.yaml"))
    for path in files:
        head = path.read_text().splitlines()[:4]
        assert any("hydrahead-train" in line for line in head if line.startswith("#")), path


def test_experiments_are_on_the_search_path():
    assert (config_dir() / "experiment").resolve() == experiments_dir().resolve()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("head.hiden_layers=[8]", "hiden_layers"),
        ("head.dropout=lots", "head.dropout"),
        ("optimizer.lr=fast", "optimizer.lr"),
        ("head=nonexistent", "head"),
    ],
)
def test_bad_override_fails_at_compose_time_with_the_key(override, needle, tmp_path):
    with pytest.raises(Exception, match=needle):
        compose_train([override], tmp_path)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("head.dropout=1.0", "head.dropout"),
        ("head.hidden_layers=[0]", "head.hidden_layers"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("backbone.freeze=-1", "backbone.freeze"),
        ("head.pooling=sum", "head.pooling"),
    ],
)
def test_bad_values_fail_validation_with_the_key(override, needle, tmp_path):
    cfg = compose_train([override], tmp_path)
    with pytest.raises(ValueError, match=needle):
        validate(cfg)


def test_mask_gather_head_on_sequence_data_is_refused(tmp_path):
    cfg = compose_train(["head=mask_gather", "data=synthetic_sequences"], tmp_path)
    with pytest.raises(ValueError, match="head needs data at level 'positions'"):
        validate(cfg)


def test_any_trainer_argument_can_be_added(tmp_path):
    cfg = compose_train(
        ["++trainer.gradient_clip_algorithm=value", "++trainer.val_check_interval=0.5"], tmp_path
    )
    assert cfg.trainer.gradient_clip_algorithm == "value"
    assert cfg.trainer.val_check_interval == 0.5


def test_local_data_with_a_missing_file_is_refused(tmp_path):
    cfg = compose_train(
        [
            "data=local",
            f"data.train_file={tmp_path}/nope.jsonl",
            f"data.validation_file={tmp_path}/nope.jsonl",
        ],
        tmp_path,
    )
    with pytest.raises(ValueError, match="data.train_file=.*nope.jsonl: no such file"):
        validate(cfg)


def test_data_config_sets_its_task_default_and_the_command_line_wins(tmp_path):
    assert compose_train(["data=wordnet_lemma"], tmp_path).task.name == "multilabel"
    assert compose_train(["data=wordnet_lemma", "task=multiclass"], tmp_path).task.name == "multiclass"
    assert compose_train(["data=wordnet_gloss"], tmp_path).task.name == "multiclass"


@pytest.mark.parametrize(
    ("overrides", "lr", "epochs"),
    [
        (["backbone.freeze=true"], 1e-2, 3),  # a probe: experiments/probe_defaults
        (["backbone.freeze=false"], 1e-3, 2),
        (["backbone.freeze=3"], 1e-3, 2),
        (["backbone.freeze=true", "optimizer.lr=3e-3", "trainer.max_epochs=5"], 3e-3, 5),
        (["backbone.freeze=true", "optimizer=sgd"], 0.05, 3),
    ],
)
def test_probe_defaults_follow_the_backbone_freeze(overrides, lr, epochs):
    from hydrahead import compose as compose_run

    cfg = compose_run(overrides)
    assert cfg.optimizer.lr == pytest.approx(lr) and cfg.trainer.max_epochs == epochs
