"""hydrahead against plain HF Trainer, side by side, on the same WordNet gloss data.

    python scripts/benchmark.py            # rows a,b,c in the full setting: 4000 train / 1000 val, 3 epochs
    python scripts/benchmark.py --quick    # a few minutes: 1000 / 250, 2 epochs
    python scripts/benchmark.py --rows d,e,f --quick          # whole commands, as a user runs them
    python scripts/benchmark.py --rows d --quick --train 200 --val 100 --epochs 1   # a smoke check
    python scripts/benchmark.py --device cuda --precision bf16   # on a GPU

Setting: all-MiniLM-L6-v2 (embedded, offline), WordNet glosses, max_length 64, batch 32, fp32.

Rows a-c time work inside one process each (the clock starts after the imports):
(a) A four-head sweep on frozen MiniLM (linear on CLS, MLP [256], MLP [512, 256], linear on
    hidden_states[3] CLS): hydrahead.run jobs in one process, against the same sweep written the
    way a typical user writes it with HF Trainer (frozen AutoModel + a custom head, one run per head).
(b) Full fine-tuning throughput (training samples/s, one epoch), hydrahead against HF Trainer with
    the same batch size, max_length and data.
(c) The limit: one no-grad forward pass over the data plus training the four heads on its features.

Rows d-f time what a user waits for: whole commands as separate processes, the clock around each
process (start-up and imports included), peak RSS per process from os.wait4 (the process or the
largest descendant it waited for), fresh paths.log_dir and paths.cache_dir per variant, W&B offline.
All sides train AdamW lr 1e-3, constant schedule, frozen backbone.
(d) W1, four heads (linear, MLP [256], MLP [512, 256] on the last layer's CLS; linear on mean-pooled
    hidden_states[3]). hydrahead two ways: two hydrahead-train commands (a -m sweep over
    head.hidden_layers, then head=intermediate head.layer=3 on the same cache dir), and one command
    over the w1 group in scripts/conf (+w1=linear,mlp_256,mlp_512_256,intermediate_3). Against HF
    Trainer (one process, one Trainer run per head) and the limit (one plain torch + transformers
    process: one no-grad pass, then the four heads). Walls, ratios, val acc per head, disk per job.
(e) W3, a probe sweep: mean-pooled head.layer 0..6 x head.hidden_layers [], [256], [512, 256] x seed
    0,1,2 (63 jobs; --w3-* shrink it) as one hydrahead-train -m command, against the limit (one
    process: one pass storing the 7 layers, 63 head trainings) and HF Trainer measured on 2 configs
    (layer 6 [], layer 3 [512, 256]) and extrapolated to the grid. Per-job overhead =
    (hydrahead wall - limit wall) / jobs.
(f) Cluster-shaped: 8 single-run hydrahead-train processes (head.hidden_layers differ, same frozen
    backbone and data) started at once on one empty cache dir; counts the encoder passes
    (feature_cache == "computed" in each run's metrics.json). Not timed. At tiny sizes a pass can end
    before the other processes have started up, so only realistic sizes show whether passes overlap.

Prints tables with the ratios and writes everything as JSON (--out). Needs the `bench` extra (accelerate).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
HEADS = [  # name, hydrahead overrides, (layer, hidden) for the plain-PyTorch/HF heads
    ("linear", ["head=linear"], (-1, [])),
    ("mlp_256", ["head=mlp_256"], (-1, [256])),
    ("mlp_512_256", ["head=mlp"], (-1, [512, 256])),
    ("linear_layer3", ["head=linear", "head.layer=3"], (3, [])),
]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_glosses(args) -> dict:
    from hydrahead.data.prepare import ensure_prepared
    from hydrahead.data.readers import read_examples

    folder = ensure_prepared("wordnet_gloss", Path(args.data_dir))
    from hydrahead.config import DataConfig

    cfg = DataConfig(name="wordnet_gloss")
    train = read_examples(folder / "train.jsonl", cfg, "multiclass")
    val = read_examples(folder / "validation.jsonl", cfg, "multiclass")
    labels = sorted({e["label"] for e in train})
    return {"train": train[: args.train], "val": val[: args.val], "labels": labels}


# -- (a) and (b) on HF Trainer, written as a user would ------------------------------------------
def mlp_head(width: int, hidden: list[int], num_labels: int):
    """dropout, then Linear-GELU-dropout per hidden width, then a Linear: hydrahead's head, by hand."""
    from torch import nn

    blocks = []
    for size in hidden:
        blocks += [nn.Linear(width, size), nn.GELU(), nn.Dropout(0.1)]
        width = size
    return nn.Sequential(nn.Dropout(0.1), *blocks, nn.Linear(width, num_labels))


def pool(hidden, attention_mask, pooling: str):
    """The [CLS] vector, or the mean over the real (unpadded) tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def stored_features(model, tokenizer, rows, args, reads: list[tuple[int, str]]):
    """One no-grad pass over ``rows`` (sorted by length, batches of args.batch): for each input,
    ``pool(hidden_states[layer], mask, pooling)`` per (layer, pooling) in ``reads`` -> [N, len(reads), H]."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["text"]))
    feats = torch.empty(len(rows), len(reads), model.config.hidden_size, device=device)
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"),
    ):
        for s in range(0, len(order), args.batch):
            index = order[s : s + args.batch]
            enc = tokenizer(
                [rows[i]["text"] for i in index],
                truncation=True,
                max_length=args.max_length,
                padding=True,
                return_tensors="pt",
            ).to(device)
            hidden = model(**enc, output_hidden_states=True).hidden_states
            mask = enc["attention_mask"]
            feats[index] = torch.stack([pool(hidden[k], mask, p) for k, p in reads], 1).float()
    return feats


def hf_classifier(path: str, num_labels: int, layer: int, hidden: list[int], freeze: bool, pooling="cls"):
    """AutoModel + a custom head on hidden_states[layer], the way HF users write one."""
    from torch import nn
    from transformers import AutoModel

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = AutoModel.from_pretrained(path)
            if freeze:
                for p in self.encoder.parameters():
                    p.requires_grad = False
            self.head = mlp_head(self.encoder.config.hidden_size, hidden, num_labels)

        def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
            out = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                output_hidden_states=True,
            )
            logits = self.head(pool(out.hidden_states[layer], attention_mask, pooling))
            loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return {"loss": loss, "logits": logits}

    return Classifier()


def hf_encode(tokenizer, rows: list[dict], label2id: dict, max_length: int) -> list[dict]:
    return [
        {**tokenizer(r["text"], truncation=True, max_length=max_length), "labels": label2id[r["label"]]}
        for r in rows
    ]


def hf_training_args(args, output_dir: Path, **kwargs):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.batch,
        per_device_eval_batch_size=args.batch,
        report_to=[],
        save_strategy="no",
        logging_steps=50,
        use_cpu=args.device == "cpu",
        bf16=args.precision == "bf16",
        disable_tqdm=True,
        seed=kwargs.pop("seed", 0),
        **kwargs,
    )


def hf_accuracy(pred) -> dict:
    import numpy as np

    return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}


def hf_trainer(args, mode: str) -> dict:
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer

    from hydrahead.backbones import resolve_name_or_path

    start = time.perf_counter()
    data = load_glosses(args)
    path = resolve_name_or_path(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    label2id = {name: i for i, name in enumerate(data["labels"])}
    train = hf_encode(tokenizer, data["train"], label2id, args.max_length)
    val = hf_encode(tokenizer, data["val"], label2id, args.max_length)
    output_dir = Path(args.work) / f"hf-{mode}"
    rows = {}
    if mode == "frozen":
        for name, _, (layer, hidden) in HEADS:
            tic = time.perf_counter()
            trainer = Trainer(
                model=hf_classifier(path, len(label2id), layer, hidden, freeze=True),
                args=hf_training_args(args, output_dir, num_train_epochs=args.epochs, learning_rate=3e-3),
                train_dataset=train,
                eval_dataset=val,
                data_collator=DataCollatorWithPadding(tokenizer),
                compute_metrics=hf_accuracy,
            )
            trainer.train()
            rows[name] = {"val_acc": trainer.evaluate()["eval_accuracy"], "wall_s": time.perf_counter() - tic}
        return {"wall_s": time.perf_counter() - start, "heads": rows, "peak_rss_mb": peak_rss_mb()}
    trainer = Trainer(
        model=hf_classifier(path, len(label2id), -1, [], freeze=False),
        args=hf_training_args(args, output_dir, num_train_epochs=1, learning_rate=5e-5),
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    metrics = trainer.train().metrics
    return {
        "samples_per_s": metrics["train_samples_per_second"],
        "wall_s": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),
    }


# -- (a) and (b) through hydrahead -------------------------------------------------------------------
def hydrahead_runs(args, mode: str) -> dict:
    from hydrahead import compose, run

    data_dir = str(Path(args.data_dir).resolve())
    common = [
        f"data.limit_train={args.train}",
        f"data.limit_validation={args.val}",
        "data.limit_test=1",
        f"data.max_length={args.max_length}",
        f"data.batch_size={args.batch}",
        "logger=none",
        "callbacks.rich_progress_bar=false",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={Path(args.work) / 'cache'}",
        f"++trainer.precision={_precision(args)}",
        f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
        "++trainer.num_sanity_val_steps=0",
    ]
    rows, start = {}, time.perf_counter()
    runs = HEADS if mode == "frozen" else [("finetune", ["head=linear"], None)]
    for name, overrides, _ in runs:
        run_dir = Path(args.work) / f"hydrahead-{mode}-{name}"
        extra = (
            [
                "backbone.freeze=true",
                "backbone.cache_layers=computed",
                "optimizer.lr=3e-3",
                f"trainer.max_epochs={args.epochs}",
            ]
            if mode == "frozen"
            else [
                "backbone.freeze=false",
                "trainer.max_epochs=1",
                "++trainer.limit_val_batches=0",
                "export=false",
            ]
        )
        tic = time.perf_counter()
        metrics = run(compose([*common, *overrides, *extra], output_dir=run_dir)).record
        rows[name] = {
            "val_acc": metrics["metrics"].get("val/acc"),
            "wall_s": time.perf_counter() - tic,
            "feature_cache": metrics.get("feature_cache"),
            "samples_per_s": metrics.get("train_samples_per_s"),
        }
    result = {"wall_s": time.perf_counter() - start, "heads": rows, "peak_rss_mb": peak_rss_mb()}
    if mode == "finetune":
        result["samples_per_s"] = rows["finetune"]["samples_per_s"]
    return result


def _precision(args) -> str:
    return "bf16-mixed" if args.precision == "bf16" else "32-true"


# -- (c) the limit ---------------------------------------------------------------------------------
def limit(args) -> dict:
    import torch
    from transformers import AutoModel

    from hydrahead.backbones import load_tokenizer, resolve_name_or_path

    start = time.perf_counter()  # like the other rows: reading the data and loading the model count
    data = load_glosses(args)
    device = torch.device(args.device)
    tokenizer = load_tokenizer(MODEL)
    model = AutoModel.from_pretrained(resolve_name_or_path(MODEL)).to(device).eval()
    label2id = {name: i for i, name in enumerate(data["labels"])}

    def cls_features(rows):  # CLS of the last layer and of hidden_states[3]
        return stored_features(model, tokenizer, rows, args, [(-1, "cls"), (3, "cls")]).cpu()

    train_x, val_x = cls_features(data["train"]), cls_features(data["val"])
    forward_s = time.perf_counter() - start
    train_y = torch.tensor([label2id[r["label"]] for r in data["train"]])
    val_y = torch.tensor([label2id[r["label"]] for r in data["val"]])
    heads, tic = {}, time.perf_counter()
    for name, _, (layer, hidden) in HEADS:
        which = 1 if layer == 3 else 0
        acc = train_head(
            train_x[:, which], train_y, val_x[:, which], val_y, hidden, len(label2id), args, 3e-3
        )
        heads[name] = {"val_acc": acc}
    head_s = time.perf_counter() - tic
    return {
        "wall_s": forward_s + head_s,
        "forward_s": forward_s,
        "heads_s": head_s,
        "heads": heads,
        "peak_rss_mb": peak_rss_mb(),
    }


def train_head(train_x, train_y, val_x, val_y, hidden, num_labels, args, lr: float, seed: int = 0) -> float:
    """A head on stored features: AdamW at a constant lr, shuffled batches; returns val accuracy."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    head = mlp_head(train_x.shape[-1], hidden, num_labels).to(train_x.device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr)
    for _ in range(args.epochs):
        for batch in torch.randperm(len(train_y)).split(args.batch):
            batch = batch.to(train_x.device)
            loss = nn.functional.cross_entropy(head(train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    head.eval()
    with torch.no_grad():
        return float((head(val_x).argmax(-1) == val_y).float().mean())


# -- (d), (e), (f): whole commands, the clock around each process ---------------------------------
CONF = Path(__file__).resolve().parent / "conf"  # the w1 group: hydra.searchpath=[file://<CONF>]
W1 = [  # name (= its scripts/conf/w1 preset), layer, pooling, head.hidden_layers
    ("linear", -1, "cls", []),
    ("mlp_256", -1, "cls", [256]),
    ("mlp_512_256", -1, "cls", [512, 256]),
    ("intermediate_3", 3, "mean", []),
]
W3_HF = [(6, []), (3, [512, 256])]  # what HF Trainer runs of (e)'s grid; extrapolated to the rest
CLUSTER_HIDDEN = ["[]", "[64]", "[128]", "[256]", "[512]", "[256,256]", "[512,256]", "[1024,512,256]"]
WHOLE_LR = 1e-3  # every side of (d) and (e): AdamW at hydrahead's default lr, constant schedule


def compact(value) -> str:
    """A list as Hydra's override grammar and a job name write it: [512,256]."""
    return json.dumps(value).replace(" ", "")


def w3_name(layer: int, hidden: list[int], seed: int) -> str:
    return f"L{layer} {compact(hidden)} s{seed}"


def configs_of(args, which: str) -> list[dict]:
    """The heads a plain process (HF Trainer or the limit) trains for row d (w1) or e (w3, w3_hf)."""
    if which == "w1":
        return [dict(name=n, layer=lay, pooling=p, hidden=h, seed=0) for n, lay, p, h in W1]
    grid = W3_HF if which == "w3_hf" else [(lay, h) for lay in args.w3_layers for h in args.w3_hidden]
    seeds = [0] if which == "w3_hf" else args.w3_seeds
    return [
        dict(name=w3_name(lay, h, s), layer=lay, pooling="mean", hidden=h, seed=s)
        for lay, h in grid
        for s in seeds
    ]


def read_glosses(args) -> dict:
    """The prepared JSONL read with json alone: the plain processes import nothing from hydrahead."""
    folder = Path(args.data_dir) / "wordnet_gloss"

    def read(name: str) -> list[dict]:
        with open(folder / name, encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]

    train, val = read("train.jsonl"), read("validation.jsonl")
    labels = sorted({r["label"] for r in train})  # from the whole train file, as hydrahead builds them
    return {"train": train[: args.train], "val": val[: args.val], "labels": labels}


def foreign_imports() -> list[str]:
    return sorted(m for m in ("hydrahead", "lightning", "hydra") if m in sys.modules)


def hf_process(args, which: str) -> dict:
    """HF Trainer as a user's script: frozen AutoModel + custom head, one Trainer run per config."""
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, set_seed

    data = read_glosses(args)
    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    label2id = {name: i for i, name in enumerate(data["labels"])}
    train = hf_encode(tokenizer, data["train"], label2id, args.max_length)
    val = hf_encode(tokenizer, data["val"], label2id, args.max_length)
    heads = {}
    for c in configs_of(args, which):
        tic = time.perf_counter()
        set_seed(c["seed"])
        trainer = Trainer(
            model=hf_classifier(
                args.model_path, len(label2id), c["layer"], c["hidden"], freeze=True, pooling=c["pooling"]
            ),
            args=hf_training_args(
                args,
                Path(args.run_dir),
                num_train_epochs=args.epochs,
                learning_rate=WHOLE_LR,
                lr_scheduler_type="constant",
                weight_decay=0.01,
                seed=c["seed"],
            ),
            train_dataset=train,
            eval_dataset=val,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=hf_accuracy,
        )
        trainer.train()
        acc = trainer.evaluate()["eval_accuracy"]
        heads[c["name"]] = {"val_acc": acc, "wall_s": time.perf_counter() - tic}
    return {"heads": heads, "imported": foreign_imports()}


def limit_process(args, which: str) -> dict:
    """The limit as a plain torch + transformers script: one no-grad pass storing every
    (layer, pooling) the configs read, then each head trained on those tensors."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    start = time.perf_counter()
    configs = configs_of(args, which)
    reads = sorted({(c["layer"], c["pooling"]) for c in configs})
    device = torch.device(args.device)
    data = read_glosses(args)
    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    model = AutoModel.from_pretrained(args.model_path).to(device).eval()
    label2id = {name: i for i, name in enumerate(data["labels"])}

    def features(rows):  # [N, len(reads), H]
        return stored_features(model, tokenizer, rows, args, reads)

    train_x, val_x = features(data["train"]), features(data["val"])
    forward_s = time.perf_counter() - start
    train_y = torch.tensor([label2id[r["label"]] for r in data["train"]], device=device)
    val_y = torch.tensor([label2id[r["label"]] for r in data["val"]], device=device)
    heads, tic = {}, time.perf_counter()
    for c in configs:
        i = reads.index((c["layer"], c["pooling"]))
        acc = train_head(
            train_x[:, i], train_y, val_x[:, i], val_y, c["hidden"], len(label2id), args, WHOLE_LR, c["seed"]
        )
        heads[c["name"]] = {"val_acc": acc}
    return {
        "forward_s": forward_s,
        "heads_s": time.perf_counter() - tic,
        "heads": heads,
        "imported": foreign_imports(),
    }


WHOLE_CHILDREN = {  # plain processes: no warm-up imports, no hydrahead
    "hf_w1": lambda a: hf_process(a, "w1"),
    "hf_w3": lambda a: hf_process(a, "w3_hf"),
    "limit_w1": lambda a: limit_process(a, "w1"),
    "limit_w3": lambda a: limit_process(a, "w3"),
}


def whole_env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}


def timed(cmd: list[str], log: Path) -> dict:
    """Run one command as a process of its own; wall clock and peak RSS around the whole of it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        tic = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=whole_env())
        # wait4: this child's rusage (max RSS of it or the largest descendant it waited for)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - tic
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = {"command": shlex.join(cmd), "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}
    if proc.returncode != 0:
        raise SystemExit(f"exit {proc.returncode}: {result['command']}\n{log.read_text()[-3000:]}")
    return result


def timed_child(name: str, args, where: Path) -> dict:
    """A plain process (WHOLE_CHILDREN) of this script, timed whole; its own report merged in."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, *child_args(args, where)]
    run = timed(cmd, where.with_suffix(".log"))
    lines = [line for line in where.with_suffix(".log").read_text().splitlines() if line.startswith("BENCH ")]
    report = json.loads(lines[-1][len("BENCH ") :])
    if name.startswith("limit") and report["imported"]:
        raise SystemExit(f"the limit imported {report['imported']}: it must be torch + transformers only")
    return {"wall_s": run["wall_s"], "peak_rss_mb": run["peak_rss_mb"], "commands": [run], **report}


def child_args(args, where: Path) -> list[str]:
    return [
        *("--train", str(args.train), "--val", str(args.val), "--epochs", str(args.epochs)),
        *("--batch", str(args.batch), "--max-length", str(args.max_length)),
        *("--device", args.device, "--precision", args.precision),
        *("--data-dir", str(Path(args.data_dir).resolve()), "--model-path", args.model_path),
        *("--run-dir", str(where), "--w3-layers", args.w3_layers_text),
        *("--w3-hidden", args.w3_hidden_text, "--w3-seeds", args.w3_seeds_text),
    ]


def hydrahead_cmd(args, variant: Path, *overrides: str) -> list[str]:
    """hydrahead-train with the common setting; runs under variant/outputs, cache in variant/cache."""
    exe = Path(sys.executable).with_name("hydrahead-train")
    return [
        str(exe if exe.exists() else "hydrahead-train"),
        *overrides,
        "backbone=minilm",
        "data=wordnet_gloss",
        f"data.limit_train={args.train}",
        f"data.limit_validation={args.val}",
        "data.test_file=null",  # the baselines evaluate validation only
        f"data.max_length={args.max_length}",
        f"data.batch_size={args.batch}",
        "scheduler=constant",  # AdamW at a constant lr 1e-3, as the baselines
        "optimizer.lr=1e-3",
        f"trainer.max_epochs={args.epochs}",
        f"trainer.precision={_precision(args)}",
        f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
        f"paths.data_dir={Path(args.data_dir).resolve()}",
        f"paths.log_dir={variant / 'outputs'}",
        f"paths.cache_dir={variant / 'cache'}",
    ]


def tree_bytes(path: Path) -> int:
    return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def runs_under(log_dir: Path) -> list[dict]:
    """Every run dir under log_dir (.hydra/config.yaml + metrics.json): its head, result and size."""
    import yaml

    runs = []
    for config in sorted(log_dir.rglob(".hydra/config.yaml")):
        run = config.parent.parent
        cfg = yaml.safe_load(config.read_text())
        record = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
        runs.append(
            {
                "dir": str(run),
                "layer": cfg["head"]["layer"],
                "pooling": cfg["head"]["pooling"],
                "hidden": cfg["head"]["hidden_layers"],
                "seed": cfg["seed"],
                "status": record.get("status"),
                "error": record.get("error"),
                "val_acc": record.get("metrics", {}).get("val/acc"),
                "feature_cache": record.get("feature_cache"),
                "bytes": tree_bytes(run),
            }
        )
    return runs


def hydrahead_side(commands: list[dict], variant: Path, name_of, expected: int) -> dict:
    """What the commands left under variant/: walls summed, per-job disk, the cache dir apart."""
    runs = runs_under(variant / "outputs")
    bad = [r for r in runs if r["status"] != "completed"]
    if bad or len(runs) != expected:
        raise SystemExit(f"{variant}: {len(runs)} runs, expected {expected}; not completed: {bad}")
    sizes = [r["bytes"] for r in runs]
    cache = variant / "cache"
    return {
        "wall_s": sum(c["wall_s"] for c in commands),
        "peak_rss_mb": max(c["peak_rss_mb"] for c in commands),
        "commands": commands,
        "heads": {name_of(r): {"val_acc": r["val_acc"], "feature_cache": r["feature_cache"]} for r in runs},
        "encoder_passes": sum(r["feature_cache"] == "computed" for r in runs),
        "disk": {
            "jobs": len(runs),
            "per_job_mean_bytes": sum(sizes) / len(sizes),
            "per_job_max_bytes": max(sizes),
            "jobs_total_bytes": sum(sizes),
            "cache_bytes": tree_bytes(cache) if cache.exists() else 0,
            "feature_cache_bytes": tree_bytes(cache / "features") if (cache / "features").exists() else 0,
        },
    }


def fresh(path: Path) -> Path:
    import shutil

    path = path.resolve()  # the commands get absolute paths.log_dir / paths.cache_dir
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def drop_runs(args, *variants: Path) -> None:
    """Exports make a job dir ~90 MB: measured, then removed unless --keep-runs."""
    import shutil

    if not args.keep_runs:
        for variant in variants:
            for name in ("outputs", "cache"):
                shutil.rmtree(variant / name, ignore_errors=True)


def w1_name(run: dict) -> str:
    by_head = {(layer, pooling, compact(hidden)): name for name, layer, pooling, hidden in W1}
    return by_head[(run["layer"], run["pooling"], compact(run["hidden"]))]


def row_w1(args) -> dict:
    """(d) W1 as a user runs it: hydrahead two ways, HF Trainer and the limit, each a whole process."""
    root = fresh(Path(args.work) / "d")
    two, one = root / "hydrahead-two-commands", root / "hydrahead-one-command"
    commands = [
        hydrahead_cmd(
            args, two, "-m", "backbone.freeze=true", "head=mlp", "head.hidden_layers=[],[256],[512,256]"
        ),
        hydrahead_cmd(args, two, "backbone.freeze=true", "head=intermediate", "head.layer=3"),
    ]
    runs = [timed(cmd, two / f"command{i}.log") for i, cmd in enumerate(commands, 1)]
    result = {"hydrahead_two_commands": hydrahead_side(runs, two, w1_name, len(W1))}
    command = hydrahead_cmd(
        args,
        one,
        "-m",
        f"hydra.searchpath=[file://{CONF}]",
        "backbone.freeze=true",
        "+w1=" + ",".join(name for name, *_ in W1),
    )
    result["hydrahead_one_command"] = hydrahead_side(
        [timed(command, one / "command.log")], one, w1_name, len(W1)
    )
    result["hf"] = timed_child("hf_w1", args, root / "hf")
    result["limit"] = timed_child("limit_w1", args, root / "limit")
    for variant in ("hydrahead_two_commands", "hydrahead_one_command"):
        for base in ("hf", "limit"):
            result.setdefault("ratios", {})[f"{variant}_over_{base}"] = (
                result[variant]["wall_s"] / result[base]["wall_s"]
            )
    drop_runs(args, two, one)
    return result


def layers_override(layers: list[int]) -> str:
    if layers == list(range(len(layers))):
        return f"head.layer=range(0,{len(layers)})"
    return "head.layer=" + ",".join(map(str, layers))


def row_w3(args) -> dict:
    """(e) W3, a probe sweep: one hydrahead command against the limit and HF Trainer (extrapolated)."""
    root = fresh(Path(args.work) / "e")
    n = len(configs_of(args, "w3"))
    hh = root / "hydrahead"
    command = hydrahead_cmd(
        args,
        hh,
        "-m",
        "backbone.freeze=true",
        "head=intermediate",
        layers_override(args.w3_layers),
        "head.hidden_layers=" + ",".join(compact(h) for h in args.w3_hidden),
        "seed=" + ",".join(map(str, args.w3_seeds)),
    )
    result = {
        "configs": n,
        "hydrahead": hydrahead_side(
            [timed(command, hh / "command.log")], hh, lambda r: w3_name(r["layer"], r["hidden"], r["seed"]), n
        ),
        "limit": timed_child("limit_w3", args, root / "limit"),
    }
    hf = timed_child("hf_w3", args, root / "hf")
    per_config = [h["wall_s"] for h in hf["heads"].values()]
    hf["measured_configs"] = len(per_config)
    hf["measured_wall_s"] = hf["wall_s"]
    hf["wall_s"] = hf["wall_s"] - sum(per_config) + n * sum(per_config) / len(per_config)
    hf["extrapolated"] = f"extrapolated from {len(per_config)} configs to {n}"
    result["hf"] = hf
    hh_acc, limit_acc = result["hydrahead"]["heads"], result["limit"]["heads"]
    result["val_acc_mean_abs_diff_vs_limit"] = sum(
        abs(hh_acc[k]["val_acc"] - limit_acc[k]["val_acc"]) for k in limit_acc
    ) / len(limit_acc)
    result["per_job_overhead_s"] = (result["hydrahead"]["wall_s"] - result["limit"]["wall_s"]) / n
    result["ratios"] = {
        "hydrahead_over_hf_extrapolated": result["hydrahead"]["wall_s"] / hf["wall_s"],
        "hydrahead_over_limit": result["hydrahead"]["wall_s"] / result["limit"]["wall_s"],
    }
    drop_runs(args, hh)
    return result


def row_cluster(args) -> dict:
    """(f) N single-run processes started at once on one empty cache dir: how many encoder passes."""
    root = fresh(Path(args.work) / "f")
    started = []
    for i in range(args.cluster_jobs):
        hidden, seed = CLUSTER_HIDDEN[i % len(CLUSTER_HIDDEN)], i // len(CLUSTER_HIDDEN)
        cmd = hydrahead_cmd(
            args, root, "backbone.freeze=true", "head=mlp", f"head.hidden_layers={hidden}", f"seed={seed}"
        )
        log = open(root / f"job{i}.log", "w")  # noqa: SIM115 (closed below, after the process ends)
        started.append(
            (cmd, log, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=whole_env()))
        )
    codes = []
    for _, log, proc in started:
        codes.append(proc.wait())
        log.close()
    runs = runs_under(root / "outputs")
    values = [r["feature_cache"] for r in runs]
    result = {
        "jobs": args.cluster_jobs,
        "exit_codes": codes,
        "completed": sum(r["status"] == "completed" for r in runs),
        "feature_cache": values,
        "encoder_passes": sum(v == "computed" for v in values),
        "commands": [shlex.join(cmd) for cmd, _, _ in started],
        "failed": {r["dir"]: r["error"] for r in runs if r["status"] != "completed"},
    }
    drop_runs(args, root)
    return result


MDL_HEADS = ("[]", "[1024,1024]")
MDL_REPEATS = 3  # each command; the medians are reported


def row_mdl(args) -> dict:
    """(g) task.mdl=online vs a plain frozen run of the same head on the same data, whole commands.

    The feature entry is made first, outside the comparison (both sides read it from disk), so the
    two commands differ by the online code alone: 10 probes trained on the prefixes of train.
    """
    root = fresh(Path(args.work) / "g")

    def cmd(name: str, hidden: str, *extra: str) -> list[str]:
        return hydrahead_cmd(
            args,
            root,
            "backbone.freeze=true",
            "head=mlp",
            "head.pooling=mean",
            f"head.hidden_layers={hidden}",
            f"hydra.run.dir={root / 'outputs' / name}",
            *extra,
        )

    import statistics

    warm = timed(cmd("warm", "[]"), root / "warm.log")
    result: dict = {"warm_up_s": warm["wall_s"], "repeats": MDL_REPEATS, "heads": {}}
    for hidden in MDL_HEADS:
        side = {}
        tries: dict[str, list] = {"plain": [], "mdl": []}
        for attempt in range(MDL_REPEATS):  # alternating, so drift on the machine hits both sides
            for kind, extra in (("plain", ()), ("mdl", ("task.mdl=online",))):
                name = f"{kind}-{hidden.strip('[]').replace(',', 'x') or 'linear'}-{attempt}"
                run = timed(cmd(name, hidden, *extra), root / f"{name}.log")
                record = json.loads((root / "outputs" / name / "metrics.json").read_text())
                tries[kind].append((run, record))
        for kind, runs in tries.items():
            walls = [run["wall_s"] for run, _ in runs]
            record = runs[0][1]
            side[kind] = {
                "wall_s": statistics.median(walls),
                "walls_s": walls,
                "command": runs[0][0]["command"],
                "train_s": statistics.median(r["train_s"] for _, r in runs),
                "mdl_s": statistics.median(r["mdl"]["time_s"] for _, r in runs) if "mdl" in record else None,
                "val_acc": record["metrics"]["val/acc"],
                "compression": record["metrics"].get("mdl/compression"),
                "online_kbits": record["metrics"].get("mdl/online_kbits"),
                "feature_cache": record["feature_cache"],
            }
        plain, mdl = side["plain"], side["mdl"]
        side["wall_ratio"] = mdl["wall_s"] / plain["wall_s"]
        side["compute_ratio"] = (mdl["train_s"] + mdl["mdl_s"]) / plain["train_s"]
        result["heads"][hidden] = side
    drop_runs(args, root)
    return result


WHOLE_ROWS = {"d": row_w1, "e": row_w3, "f": row_cluster, "g": row_mdl}


CHILDREN = {
    "hf_frozen": lambda a: hf_trainer(a, "frozen"),
    "hf_finetune": lambda a: hf_trainer(a, "finetune"),
    "hh_frozen": lambda a: hydrahead_runs(a, "frozen"),
    "hh_finetune": lambda a: hydrahead_runs(a, "finetune"),
    "limit": limit,
}


def warm_imports() -> None:
    """Every row imports its libraries before its clock starts: rows compare work, not import time."""
    import lightning  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoModel, Trainer  # noqa: F401

    import hydrahead.data.datamodule
    import hydrahead.data.features
    import hydrahead.modeling.modeling_hydrahead
    import hydrahead.training.module  # noqa: F401


def run_child(name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", name, *sys.argv[1:]]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"benchmark row {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("BENCH ") :])


ROWS = {  # --rows letter -> what runs for it (rows a-c: child processes, d-f: whole commands)
    "a": ["hf_frozen", "hh_frozen"],
    "b": ["hf_finetune", "hh_finetune"],
    "c": ["limit"],
    "d": ["d"],
    "e": ["e"],
    "f": ["f"],
    "g": ["g"],
}
ROWS_HELP = (
    "comma-separated rows: a (4-head frozen sweep, hydrahead.run vs HF Trainer), b (fine-tuning "
    "throughput), c (the limit: one pass + 4 heads), d (W1: whole hydrahead-train commands vs an HF "
    "Trainer process vs a plain-script limit), e (W3: a 63-job probe sweep, same three sides, HF "
    "extrapolated from 2 configs), f (8 single runs at once on one empty cache: encoder passes "
    "counted), g (task.mdl=online vs a plain frozen run of the same head, whole commands); default a,b,c"
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="a,b,c", help=ROWS_HELP)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1000 train / 250 val glosses, 2 epochs, every row; "
        "(e)'s grid: layers 0,3,6 x [],[512,256] x seed 0",
    )
    parser.add_argument("--train", type=int, default=None, help="training glosses (default 4000)")
    parser.add_argument("--val", type=int, default=None, help="validation glosses (default 1000)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the frozen rows (default 3)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--data-dir", default=os.environ.get("HYDRAHEAD_DATA_DIR", "data"))
    parser.add_argument("--work", default="outputs/benchmark")
    parser.add_argument("--out", default=None, help="JSON results (default: <work>/benchmark.json)")
    parser.add_argument("--w3-layers", default=None, help="(e) head.layer values (default 0,1,2,3,4,5,6)")
    parser.add_argument(
        "--w3-hidden", default=None, help="(e) head.hidden_layers values (default [],[256],[512,256])"
    )
    parser.add_argument("--w3-seeds", default=None, help="(e) seeds (default 0,1,2)")
    parser.add_argument("--cluster-jobs", type=int, default=8, help="(f) processes started at once")
    parser.add_argument(
        "--keep-runs", action="store_true", help="(d)-(f) keep the run and cache dirs (removed once measured)"
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated processes of rows a-c to run (debugging): " + ", ".join(CHILDREN),
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model-path", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.train = args.train or (1000 if args.quick else 4000)
    args.val = args.val or (250 if args.quick else 1000)
    args.epochs = args.epochs or (2 if args.quick else 3)
    args.w3_layers_text = args.w3_layers or ("0,3,6" if args.quick else "0,1,2,3,4,5,6")
    args.w3_hidden_text = args.w3_hidden or ("[],[512,256]" if args.quick else "[],[256],[512,256]")
    args.w3_seeds_text = args.w3_seeds or ("0" if args.quick else "0,1,2")
    args.w3_layers = [int(x) for x in args.w3_layers_text.split(",")]
    args.w3_hidden = json.loads(f"[{args.w3_hidden_text}]")
    args.w3_seeds = [int(x) for x in args.w3_seeds_text.split(",")]
    if args.child:
        if args.child in WHOLE_CHILDREN:  # timed whole by the parent: imports are part of it
            result = WHOLE_CHILDREN[args.child](args)
        else:
            warm_imports()
            result = CHILDREN[args.child](args)
        print("BENCH " + json.dumps(result), flush=True)
        return 0
    rows = args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"--rows {','.join(unknown)}: no such row; rows are {','.join(ROWS)}")
    wanted = {name for r in rows for name in ROWS[r]}
    names = args.only.split(",") if args.only else [n for n in CHILDREN if n in wanted]
    whole = [r for r in WHOLE_ROWS if r in wanted]
    Path(args.work).mkdir(parents=True, exist_ok=True)
    # Every invocation starts clean: it pays for its own feature pass, and no row resumes a run
    # directory (hydrahead-train resumes its own last.ckpt) or reads another invocation's results.
    import shutil

    for stale in [Path(args.work) / "cache", *Path(args.work).glob("hydrahead-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    if whole:  # outside every clock: the data is there and the plain processes know the model's path
        from hydrahead.backbones import resolve_name_or_path
        from hydrahead.data.prepare import ensure_prepared

        ensure_prepared("wordnet_gloss", Path(args.data_dir))
        args.model_path = resolve_name_or_path(MODEL)
    results = {}
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = run_child(name, args)
    failed = []
    for name in whole:
        print(f"running row {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = WHOLE_ROWS[name](args)
        except SystemExit as err:  # a failed command: the other rows still run and report
            print(f"row {name} failed: {err}", file=sys.stderr, flush=True)
            results[name], failed = {"error": str(err)}, [*failed, name]
    report(results, args)
    return 1 if failed else 0


def report(results: dict, args) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    setting = (
        f"{args.train} train / {args.val} val glosses, max_length {args.max_length}, batch {args.batch}, "
        f"{args.device} {args.precision}, {args.epochs} epochs"
    )
    labels = {
        "hf_frozen": "(a) HF Trainer, 4-head frozen sweep",
        "hh_frozen": "(a) hydrahead, 4-head frozen sweep",
        "limit": "(c) limit: one forward pass + 4 heads",
        "hf_finetune": "(b) HF Trainer, fine-tune 1 epoch",
        "hh_finetune": "(b) hydrahead, fine-tune 1 epoch",
    }
    inside = {name: row for name, row in results.items() if name in labels}
    if inside:
        table = Table(title=f"hydrahead vs HF Trainer: {setting}")
        for column in (
            "row",
            "wall s",
            "val acc (linear / mlp256 / mlp512,256 / L3)",
            "samples/s",
            "peak RSS MB",
        ):
            table.add_column(column)
        for name, row in inside.items():
            accs = " / ".join(
                f"{h['val_acc']:.3f}" for h in row.get("heads", {}).values() if h.get("val_acc") is not None
            )
            sps = row.get("samples_per_s")
            table.add_row(
                labels[name],
                f"{row['wall_s']:.1f}",
                accs if "frozen" in name or name == "limit" else "",
                f"{sps:.1f}" if sps else "",
                f"{row['peak_rss_mb']:.0f}",
            )
        console.print(table)
    ratios = {}
    if {"hf_frozen", "hh_frozen"} <= results.keys():
        ratios["frozen_sweep_speedup_vs_hf"] = results["hf_frozen"]["wall_s"] / results["hh_frozen"]["wall_s"]
    if {"hh_frozen", "limit"} <= results.keys():
        ratios["frozen_sweep_over_limit"] = results["hh_frozen"]["wall_s"] / results["limit"]["wall_s"]
    if {"hf_frozen", "limit"} <= results.keys():
        ratios["limit_speedup_vs_hf"] = results["hf_frozen"]["wall_s"] / results["limit"]["wall_s"]
    if {"hf_finetune", "hh_finetune"} <= results.keys():
        ratios["finetune_throughput_vs_hf"] = (
            results["hh_finetune"]["samples_per_s"] / results["hf_finetune"]["samples_per_s"]
        )
        ratios["finetune_peak_rss_vs_hf"] = (
            results["hh_finetune"]["peak_rss_mb"] / results["hf_finetune"]["peak_rss_mb"]
        )
    if {"hf_frozen", "hh_frozen"} <= results.keys():
        ratios["frozen_peak_rss_vs_hf"] = (
            results["hh_frozen"]["peak_rss_mb"] / results["hf_frozen"]["peak_rss_mb"]
        )
    for key, value in ratios.items():
        console.print(f"  {key:32s} {value:6.2f}x")
    for name, row in results.items():
        if "error" in row:
            lines = row["error"].splitlines() or [""]
            console.print(f"  ({name}) FAILED: {lines[0][:300]}", markup=False, highlight=False)
            for line in lines[1:][-4:]:  # the end of its log
                console.print(f"      {line[:300]}", markup=False, highlight=False)
    results_ok = {name: row for name, row in results.items() if "error" not in row}
    if {"d", "e"} & results_ok.keys():
        console.print(whole_table(results_ok, setting))
    for row in ("d", "e"):
        for key, value in results.get(row, {}).get("ratios", {}).items():
            ratios[f"{row}_{key}"] = value
            console.print(f"  ({row}) wall {key.replace('_over_', ' / '):38s} {value:6.3f}x")
    if "e" in results_ok:
        e = results["e"]
        console.print(
            f"  (e) per-job overhead (hydrahead wall - limit wall) / {e['configs']}: "
            f"{e['per_job_overhead_s']:.2f} s; HF Trainer {e['hf']['extrapolated']} "
            f"({e['hf']['measured_wall_s']:.1f} s measured); val acc |hydrahead - limit| mean "
            f"{e['val_acc_mean_abs_diff_vs_limit']:.3f}"
        )
    if "f" in results_ok:
        f = results["f"]
        counts = {v: f["feature_cache"].count(v) for v in dict.fromkeys(map(str, f["feature_cache"]))}
        console.print(
            f"  (f) {f['jobs']} single runs started at once on one empty cache dir: "
            f"{f['encoder_passes']} encoder passes (feature_cache: {counts}; {f['completed']} completed, "
            f"exit codes {f['exit_codes']})"
        )
    if "g" in results_ok:
        for hidden, side in results["g"]["heads"].items():
            plain, mdl = side["plain"], side["mdl"]
            console.print(
                f"  (g) head.hidden_layers={hidden}, median of {results['g']['repeats']}: "
                f"plain run {plain['wall_s']:.1f} s (train "
                f"{plain['train_s']:.2f} s), with task.mdl=online {mdl['wall_s']:.1f} s (train "
                f"{mdl['train_s']:.2f} s + online code {mdl['mdl_s']:.2f} s): whole command "
                f"{side['wall_ratio']:.2f}x, head compute {side['compute_ratio']:.2f}x; compression "
                f"{mdl['compression']:.2f}, val acc {plain['val_acc']:.3f} / {mdl['val_acc']:.3f}"
            )
    out = Path(args.out or Path(args.work) / "benchmark.json")
    out.write_text(
        json.dumps(
            {
                "settings": {k: v for k, v in vars(args).items() if k not in ("child", "run_dir")},
                "results": results,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    console.print(f"written to {out}")


def whole_table(results: dict, setting: str):
    """Rows d and e: one line per side, the clock around whole processes."""
    from rich.table import Table

    mb = 2**20
    table = Table(title=f"Whole commands, the clock around each process: {setting}")
    for column in ("row", "wall s", "val acc", "peak RSS MB", "disk/job MB mean / max", "cache MB", "passes"):
        table.add_column(column)

    def add(label: str, side: dict, accs: str) -> None:
        disk = side.get("disk")
        table.add_row(
            label,
            f"{side['wall_s']:.1f}",
            accs,
            f"{side['peak_rss_mb']:.0f}",
            f"{disk['per_job_mean_bytes'] / mb:.1f} / {disk['per_job_max_bytes'] / mb:.1f}" if disk else "",
            f"{disk['cache_bytes'] / mb:.1f}" if disk else "",
            str(side.get("encoder_passes", "")),
        )

    if "d" in results:
        d = results["d"]

        def w1_accs(side: dict) -> str:
            return " / ".join(f"{side['heads'][name]['val_acc']:.3f}" for name, *_ in W1)

        add(
            "(d) hydrahead, 2 commands",
            d["hydrahead_two_commands"],
            w1_accs(d["hydrahead_two_commands"]),
        )
        add(
            "(d) hydrahead, 1 command (+w1)",
            d["hydrahead_one_command"],
            w1_accs(d["hydrahead_one_command"]),
        )
        add("(d) HF Trainer, 4 runs", d["hf"], w1_accs(d["hf"]))
        add("(d) limit, plain script", d["limit"], w1_accs(d["limit"]))
        table.add_row("", "", "linear / mlp256 / mlp512,256 / mean L3", "", "", "", "")
    if "e" in results:
        e = results["e"]
        probes = [w3_name(layer, hidden, 0) for layer, hidden in W3_HF]

        def w3_accs(side: dict, mean: bool = True) -> str:
            heads = side["heads"]
            parts = [f"mean {sum(h['val_acc'] for h in heads.values()) / len(heads):.3f}"] if mean else []
            parts += [f"{p[: p.rindex(' ')]} {heads[p]['val_acc']:.3f}" for p in probes if p in heads]
            return "; ".join(parts)

        add(f"(e) hydrahead, 1 command, {e['configs']} jobs", e["hydrahead"], w3_accs(e["hydrahead"]))
        add(
            f"(e) HF Trainer, {e['hf']['extrapolated']}",
            e["hf"],
            w3_accs(e["hf"], mean=False),
        )
        add(f"(e) limit, plain script, {e['configs']} heads", e["limit"], w3_accs(e["limit"]))
    return table


if __name__ == "__main__":
    sys.exit(main())
