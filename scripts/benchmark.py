"""hydrahead against plain HF Trainer, side by side, on the same WordNet gloss data.

    python scripts/benchmark.py            # the full setting: 4000 train / 1000 val glosses, 3 epochs
    python scripts/benchmark.py --quick    # a few minutes: 1000 / 250, 2 epochs
    python scripts/benchmark.py --device cuda --precision bf16   # on a GPU

(a) A four-head sweep on frozen all-MiniLM-L6-v2 (linear on CLS, MLP [256], MLP [512, 256], linear on
    hidden_states[3] CLS): hydrahead.run jobs in one process, against the same sweep written the
    way a typical user writes it with HF Trainer (frozen AutoModel + a custom head, one run per head).
(b) Full fine-tuning throughput (training samples/s, one epoch), hydrahead against HF Trainer with
    the same batch size, max_length and data.
(c) The limit: one no-grad forward pass over the data plus training the four heads on its features.

Every row runs in a fresh subprocess (so its peak RSS is its own); its clock starts after the imports.
Prints a table with the ratios and writes it as JSON (--out). Needs the `bench` extra (accelerate).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
def hf_trainer(args, mode: str) -> dict:
    import numpy as np
    from torch import nn
    from transformers import AutoModel, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    from hydrahead.backbones import resolve_name_or_path

    start = time.perf_counter()
    data = load_glosses(args)
    path = resolve_name_or_path(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    label2id = {name: i for i, name in enumerate(data["labels"])}

    def encode(rows):
        return [
            {
                **tokenizer(r["text"], truncation=True, max_length=args.max_length),
                "labels": label2id[r["label"]],
            }
            for r in rows
        ]

    train, val = encode(data["train"]), encode(data["val"])

    class Classifier(nn.Module):
        def __init__(self, layer: int, hidden: list[int], freeze: bool):
            super().__init__()
            self.encoder = AutoModel.from_pretrained(path)
            if freeze:
                for p in self.encoder.parameters():
                    p.requires_grad = False
            self.layer = layer
            width, blocks = self.encoder.config.hidden_size, []
            for size in hidden:
                blocks += [nn.Linear(width, size), nn.GELU(), nn.Dropout(0.1)]
                width = size
            self.head = nn.Sequential(nn.Dropout(0.1), *blocks, nn.Linear(width, len(label2id)))

        def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
            out = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                output_hidden_states=True,
            )
            logits = self.head(out.hidden_states[self.layer][:, 0])
            loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return {"loss": loss, "logits": logits}

    def accuracy(pred):
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    common = dict(
        output_dir=str(Path(args.work) / f"hf-{mode}"),
        per_device_train_batch_size=args.batch,
        per_device_eval_batch_size=args.batch,
        report_to=[],
        save_strategy="no",
        logging_steps=50,
        use_cpu=args.device == "cpu",
        bf16=args.precision == "bf16",
        seed=0,
        disable_tqdm=True,
    )
    rows = {}
    if mode == "frozen":
        for name, _, (layer, hidden) in HEADS:
            tic = time.perf_counter()
            trainer = Trainer(
                model=Classifier(layer, hidden, freeze=True),
                args=TrainingArguments(num_train_epochs=args.epochs, learning_rate=3e-3, **common),
                train_dataset=train,
                eval_dataset=val,
                data_collator=DataCollatorWithPadding(tokenizer),
                compute_metrics=accuracy,
            )
            trainer.train()
            rows[name] = {"val_acc": trainer.evaluate()["eval_accuracy"], "wall_s": time.perf_counter() - tic}
        return {"wall_s": time.perf_counter() - start, "heads": rows, "peak_rss_mb": peak_rss_mb()}
    trainer = Trainer(
        model=Classifier(-1, [], freeze=False),
        args=TrainingArguments(num_train_epochs=1, learning_rate=5e-5, **common),
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
    from torch import nn
    from transformers import AutoModel

    from hydrahead.backbones import load_tokenizer, resolve_name_or_path

    start = time.perf_counter()  # like the other rows: reading the data and loading the model count
    data = load_glosses(args)
    device = torch.device(args.device)
    tokenizer = load_tokenizer(MODEL)
    model = AutoModel.from_pretrained(resolve_name_or_path(MODEL)).to(device).eval()
    label2id = {name: i for i, name in enumerate(data["labels"])}

    def cls_features(rows):
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["text"]))
        feats = torch.empty(len(rows), 2, model.config.hidden_size)
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
                feats[index] = torch.stack([hidden[-1][:, 0], hidden[3][:, 0]], 1).float().cpu()
        return feats

    train_x, val_x = cls_features(data["train"]), cls_features(data["val"])
    forward_s = time.perf_counter() - start
    train_y = torch.tensor([label2id[r["label"]] for r in data["train"]])
    val_y = torch.tensor([label2id[r["label"]] for r in data["val"]])
    heads, tic = {}, time.perf_counter()
    for name, _, (layer, hidden) in HEADS:
        torch.manual_seed(0)
        which = 1 if layer == 3 else 0
        width, blocks = train_x.shape[-1], []
        for size in hidden:
            blocks += [nn.Linear(width, size), nn.GELU(), nn.Dropout(0.1)]
            width = size
        head = nn.Sequential(nn.Dropout(0.1), *blocks, nn.Linear(width, len(label2id)))
        optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
        for _ in range(args.epochs):
            for batch in torch.randperm(len(train_y)).split(args.batch):
                loss = nn.functional.cross_entropy(head(train_x[batch, which]), train_y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        head.eval()
        with torch.no_grad():
            heads[name] = {"val_acc": float((head(val_x[:, which]).argmax(-1) == val_y).float().mean())}
    head_s = time.perf_counter() - tic
    return {
        "wall_s": forward_s + head_s,
        "forward_s": forward_s,
        "heads_s": head_s,
        "heads": heads,
        "peak_rss_mb": peak_rss_mb(),
    }


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1000 train / 250 val glosses, 2 epochs")
    parser.add_argument("--train", type=int, default=None)
    parser.add_argument("--val", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--data-dir", default=os.environ.get("HYDRAHEAD_DATA_DIR", "data"))
    parser.add_argument("--work", default="outputs/benchmark")
    parser.add_argument("--out", default=None, help="JSON results (default: <work>/benchmark.json)")
    parser.add_argument("--only", default=None, help="comma-separated rows to run (debugging)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.train = args.train or (1000 if args.quick else 4000)
    args.val = args.val or (250 if args.quick else 1000)
    args.epochs = args.epochs or (2 if args.quick else 3)
    if args.child:
        warm_imports()
        print("BENCH " + json.dumps(CHILDREN[args.child](args)), flush=True)
        return 0
    Path(args.work).mkdir(parents=True, exist_ok=True)
    # Every invocation starts clean: it pays for its own feature pass, and no row resumes a run
    # directory (hydrahead-train resumes its own last.ckpt) or reads another invocation's results.
    import shutil

    for stale in [Path(args.work) / "cache", *Path(args.work).glob("hydrahead-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    names = args.only.split(",") if args.only else list(CHILDREN)
    results = {}
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = run_child(name, args)
    report(results, args)
    return 0


def report(results: dict, args) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"hydrahead vs HF Trainer: {args.train} train / {args.val} val glosses, max_length "
        f"{args.max_length}, batch {args.batch}, {args.device} {args.precision}, {args.epochs} epochs"
    )
    for column in (
        "row",
        "wall s",
        "val acc (linear / mlp256 / mlp512,256 / L3)",
        "samples/s",
        "peak RSS MB",
    ):
        table.add_column(column)
    labels = {
        "hf_frozen": "(a) HF Trainer, 4-head frozen sweep",
        "hh_frozen": "(a) hydrahead, 4-head frozen sweep",
        "limit": "(c) limit: one forward pass + 4 heads",
        "hf_finetune": "(b) HF Trainer, fine-tune 1 epoch",
        "hh_finetune": "(b) hydrahead, fine-tune 1 epoch",
    }
    for name, row in results.items():
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
    console = Console(width=max(120, Console().width))
    console.print(table)
    for key, value in ratios.items():
        console.print(f"  {key:32s} {value:6.2f}x")
    out = Path(args.out or Path(args.work) / "benchmark.json")
    out.write_text(
        json.dumps(
            {
                "settings": {k: v for k, v in vars(args).items() if k != "child"},
                "results": results,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    console.print(f"written to {out}")


if __name__ == "__main__":
    sys.exit(main())
