"""hydrahead-eval: a finished run on its own splits (the training metrics again) and on other files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import FAST, read_metrics, run_train
from hydrahead.data.synthetic import generate
from hydrahead.evaluate_run import evaluate_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A frozen run (head trainer, cached features) and a fine-tuned one (Lightning), trained once."""
    monkeypatch = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("eval")
    made = {}
    for name, extra in (("frozen", ["backbone.freeze=true"]), ("finetuned", [])):
        made[name] = root / name
        run_train(
            [*FAST, "trainer.max_epochs=2", "++trainer.limit_val_batches=null", *extra],
            made[name],
            monkeypatch,
        )
    monkeypatch.undo()
    return made


@pytest.mark.parametrize("kind", ["frozen", "finetuned"])
@pytest.mark.parametrize("split, stage", [("validation", "val"), ("test", "test")])
def test_eval_on_the_runs_own_split_equals_its_training_metrics(runs, kind, split, stage):
    trained = read_metrics(runs[kind])["metrics"]
    record = evaluate_run(runs[kind], split=split)
    measured = record["metrics"]
    names = [k for k in trained if k.startswith(f"{stage}/")]
    assert sorted(names) == sorted(measured)
    for key in names:
        assert measured[key] == pytest.approx(trained[key], abs=1e-5), key
    written = json.loads((runs[kind] / "eval" / split / "metrics.json").read_text())
    assert written["metrics"] == measured
    for name in ("per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "reliability.png"):
        assert (runs[kind] / "eval" / split / name).is_file()


def _write(path, examples):
    path.write_text("".join(json.dumps({"text": e["text"], "label": e["label"]}) + "\n" for e in examples))
    return path


def test_eval_on_another_labelled_file(runs, tmp_path):
    examples = generate("sequence", "multiclass", "test", 40, seed=7)
    file = _write(tmp_path / "new_data.jsonl", examples)
    record = evaluate_run(runs["frozen"], data=[f"data.test_file={file}"])
    assert record["items"] == 40
    assert record["data"]["file"] == str(file)
    assert (runs["frozen"] / "eval" / "new_data" / "metrics.json").is_file()
    assert 0 <= record["metrics"]["test/acc"] <= 1


def test_eval_cli_refuses_an_unknown_label_naming_the_line(runs, tmp_path):
    examples = generate("sequence", "multiclass", "test", 5, seed=7)
    examples[3]["label"] = "vehicle"
    file = _write(tmp_path / "odd.jsonl", examples)
    done = subprocess.run(
        [sys.executable, "-m", "hydrahead.cli.eval", str(runs["frozen"]), "--data", f"data.test_file={file}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert f"{file}:4" in done.stderr and "'vehicle' is not in the label vocabulary" in done.stderr
    assert done.stderr.count("\n") == 1  # one line, no traceback


def test_eval_refuses_a_key_outside_data(runs):
    from hydrahead.config.schema import ConfigError

    with pytest.raises(ConfigError, match="only data keys"):
        evaluate_run(runs["frozen"], data=["optimizer.lr=1"])
    with pytest.raises(ConfigError, match="data.no_such_key"):
        evaluate_run(runs["frozen"], data=["data.no_such_key=1"])
