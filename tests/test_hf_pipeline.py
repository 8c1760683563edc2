"""transformers' ``pipeline()`` on exports: the labels and scores ``hydrahead-predict`` gives.

hydrahead-predict's probabilities are ``model.predict_proba(model(**inputs).logits)``; the pipelines
must give the same numbers for the same tokens, in this process (classes registered) and in one where
hydrahead cannot be imported (the folder's own code). The export's tokenizer must load as plain
``AutoTokenizer.from_pretrained(dir)`` in a job without stdin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from hydrahead.backbones import load_tokenizer
from hydrahead.build import build_model
from hydrahead.config.schema import BackboneConfig
from hydrahead.export import export_model

TEXTS = ["the big cat runs to the river", "a dog eats", "red apple and green banana"]
LABELS = ["animal", "color", "food", "place"]


@dataclass
class Case:
    dir: Path
    task: str  # the pipeline task
    model: object
    tokenizer: object

    def probabilities(self, text: str) -> torch.Tensor:
        """What hydrahead-predict computes for ``text``: [labels] or [tokens, labels]."""
        with torch.no_grad():
            return self.model.predict_proba(self.model(**self.tokenizer(text, return_tensors="pt")).logits)[0]


# name: (backbone, task, level, head, native)
CASES = {
    "multiclass": ("tiny:bert", "multiclass", "sequence", {"pooling": "mean", "hidden_layers": [8]}, False),
    "multilabel": ("tiny:roberta", "multilabel", "sequence", {"layer": [2, 4]}, False),
    "token": ("tiny:bert", "multiclass", "token", {"hidden_layers": [8]}, False),
    "token-roberta": ("tiny:roberta", "multiclass", "token", {"layer": -2}, False),  # byte-level BPE
    "token-native": ("tiny:electra", "multiclass", "token", {}, True),
}


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Case]:
    root = tmp_path_factory.mktemp("pipelines")
    made = {}
    for name, (backbone, task, level, head, native) in CASES.items():
        tokenizer = load_tokenizer(backbone, words=level != "sequence")
        model, _ = build_model(
            BackboneConfig(name_or_path=backbone, pretrained=False),
            labels=LABELS,
            head=head,
            task=task,
            level=level,
            seed=3,
            tokenizer=tokenizer,
        )
        with torch.no_grad():  # a head far from uniform: scores that tell labels apart
            model.head.classifier.weight.normal_(0, 2.0)
            model.head.classifier.bias.normal_(0, 1.0)
        if name == "multiclass":  # a calibrated model: predict_proba and the pipeline see the same logits
            model.config.calibration_temperature = 2.5
        model.eval()
        out = export_model(model, root / name, tokenizer, native=native)
        made[name] = Case(
            out, f"{'text' if level == 'sequence' else 'token'}-classification", model, tokenizer
        )
    return made


def run_pipeline(case: Case, texts=TEXTS):
    from transformers import pipeline

    if case.task == "text-classification":
        classify = pipeline(case.task, model=str(case.dir), trust_remote_code=True)
        return classify(list(texts), top_k=None), classify
    tag = pipeline(
        case.task, model=str(case.dir), trust_remote_code=True, aggregation_strategy="none", ignore_labels=[]
    )
    return tag(list(texts)), tag


def check_sequence(case: Case, outputs) -> None:
    for text, scores in zip(TEXTS, outputs):
        expected = case.probabilities(text)
        assert [s["label"] for s in scores] == [LABELS[i] for i in expected.argsort(descending=True)]
        got = {s["label"]: s["score"] for s in scores}
        torch.testing.assert_close(
            torch.tensor([got[label] for label in LABELS]), expected, rtol=0, atol=1e-5
        )


def check_tokens(case: Case, outputs) -> None:
    for text, entities in zip(TEXTS, outputs):
        expected = case.probabilities(text)  # [tokens, labels], special tokens included
        special = case.tokenizer(text, return_special_tokens_mask=True)["special_tokens_mask"]
        assert [e["index"] for e in entities] == [i for i, s in enumerate(special) if not s]
        for entity in entities:
            row = expected[entity["index"]]
            assert entity["entity"] == LABELS[int(row.argmax())]
            assert float(entity["score"]) == pytest.approx(float(row.max()), abs=1e-5)
            assert text[entity["start"] : entity["end"]].strip()  # offsets into the text: a fast tokenizer


@pytest.mark.parametrize("name", ["multiclass", "multilabel"])
def test_text_classification_pipeline_gives_predict_proba(cases, name):
    case = cases[name]
    outputs, classify = run_pipeline(case)
    check_sequence(case, outputs)
    if name == "multilabel":  # sigmoids, not a softmax: they need not sum to 1
        assert classify.model.config.problem_type == "multi_label_classification"
        assert all(abs(sum(s["score"] for s in scores) - 1) > 1e-3 for scores in outputs)


@pytest.mark.parametrize("name", ["token", "token-roberta", "token-native"])
def test_token_classification_pipeline_gives_predict_proba(cases, name):
    case = cases[name]
    outputs, tag = run_pipeline(case)
    assert tag.tokenizer.is_fast  # offsets, word ids: the pipeline needs a fast tokenizer
    check_tokens(case, outputs)


def test_label_names_come_from_the_export(cases):
    from transformers import AutoConfig

    for case in cases.values():
        config = AutoConfig.from_pretrained(case.dir, trust_remote_code=True)
        assert [config.id2label[i] for i in range(len(LABELS))] == LABELS
        assert config.label2id == {label: i for i, label in enumerate(LABELS)}


# -- without hydrahead: the folder's own code, stdin closed ------------------------------------------

_FRESH = r"""
import json, sys
sys.modules["hydrahead"] = None  # only the exported folders count
from transformers import pipeline
jobs, texts = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for name, job in jobs.items():
    if job["task"] == "text-classification":
        scores = pipeline(job["task"], model=job["dir"], trust_remote_code=True)(texts, top_k=None)
    else:
        tag = pipeline(job["task"], model=job["dir"], trust_remote_code=True, aggregation_strategy="none",
                       ignore_labels=[])
        scores = [[{**e, "score": float(e["score"])} for e in row] for row in tag(texts)]
    out[name] = scores
print("RESULT " + json.dumps(out))
"""

_TOKENIZER = r"""
import sys
sys.modules["hydrahead"] = None
from transformers import AutoTokenizer
path, text = sys.argv[1], sys.argv[2]
for name, kwargs in (("plain", {}), ("untrusted", {"trust_remote_code": False}), ("trusted", {"trust_remote_code": True})):
    print(f"BEGIN {name}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    print(f"LOADED {name} {type(tokenizer).__name__} {tokenizer(text)['input_ids']}", flush=True)
"""


def fresh_python(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -c script args`` where hydrahead is unimportable, stdin closed, remote code in a temp dir."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def test_pipelines_without_hydrahead_give_the_same_scores(cases):
    names = ["multiclass", "multilabel", "token"]
    jobs = {name: {"dir": str(cases[name].dir), "task": cases[name].task} for name in names}
    done = fresh_python(_FRESH, json.dumps(jobs), json.dumps(TEXTS), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [row for row in done.stdout.splitlines() if row.startswith("RESULT ")]
    results = json.loads(line[len("RESULT ") :])
    for name in ("multiclass", "multilabel"):
        check_sequence(cases[name], results[name])
    check_tokens(cases["token"], results["token"])


@pytest.fixture(scope="module")
def tokenizer_loads(cases) -> dict[str, str]:
    """What each way of loading the export's tokenizer printed, in a fresh process without stdin."""
    case = cases["multiclass"]
    done = fresh_python(_TOKENIZER, str(case.dir), TEXTS[0], timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    sections, current = {}, None
    for row in (done.stdout + "\n" + done.stderr).splitlines():
        if row.startswith("BEGIN "):
            current = row.split()[1]
            sections[current] = ""
        elif current is not None:
            sections[current] += row + "\n"
    return sections


def test_export_tokenizer_loads_in_a_job_without_stdin(cases, tokenizer_loads):
    expected = cases["multiclass"].tokenizer(TEXTS[0])["input_ids"]
    for name in ("plain", "untrusted", "trusted"):
        assert f"LOADED {name} BertTokenizer {expected}" in tokenizer_loads[name], tokenizer_loads
    # As the model card says to load it: with trust_remote_code given, nothing is asked.
    for name in ("untrusted", "trusted"):
        assert "[y/N]" not in tokenizer_loads[name], tokenizer_loads[name]


@pytest.mark.xfail(
    strict=True,
    reason="transformers 5 resolves AutoConfig first in AutoTokenizer.from_pretrained, and an unset "
    "trust_remote_code with config.json's auto_map.AutoConfig and an unregistered model_type always "
    "asks; no file in the export can prevent it (see the model card's note)",
)
def test_plain_autotokenizer_asks_nothing(tokenizer_loads):
    assert "[y/N]" not in tokenizer_loads["plain"], tokenizer_loads["plain"]
