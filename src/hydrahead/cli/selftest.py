"""``hydrahead-selftest``: every head preset x task x level on a tiny encoder, end to end.

For each combination: build, forward + backward (finite loss, gradients reach the head and any
trainable backbone part), export, then reload every export in one fresh Python process where
hydrahead cannot be imported and compare logits. Prints a table; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from hydrahead.modeling.head_spec import IGNORE_INDEX, LEVELS, TASKS

NUM_LABELS = 3


def synthetic_batch(tokenizer, task: str, level: str, generator):
    """Two padded sentences with labels (and mask_indices) of the right shape for task x level."""
    import torch

    enc = tokenizer(["the big cat runs to the river", "a dog eats"], padding=True, return_tensors="pt")
    batch = dict(enc)
    seq_len = batch["input_ids"].shape[1]
    if level == "positions":
        batch["mask_indices"] = torch.tensor([[1, 3, 5], [2, 0, 0]])  # second row: one real detection
    shape = {"sequence": (2,), "token": (2, seq_len), "positions": (2, 3)}[level]
    if task == "multiclass":
        labels = torch.randint(0, NUM_LABELS, shape, generator=generator)
    else:
        labels = torch.randint(0, 2, (*shape, NUM_LABELS), generator=generator).float()
    if level == "token":
        labels[batch["attention_mask"] == 0] = IGNORE_INDEX
    if level == "positions":
        labels[1, 1:] = IGNORE_INDEX
    batch["labels"] = labels
    return batch


AUTO_CLASS_FOR_LEVEL = {
    "sequence": "AutoModelForSequenceClassification",
    "token": "AutoModelForTokenClassification",
    "positions": "AutoModel",
}

# Runs in a fresh interpreter with hydrahead made unimportable: only the exported folder counts.
_RELOAD_SCRIPT = r"""
import json, sys
sys.modules["hydrahead"] = None
import torch, transformers
jobs = json.loads(sys.argv[1])
for job in jobs:
    auto = getattr(transformers, job["auto_class"])
    model = auto.from_pretrained(job["dir"], trust_remote_code=job["trust_remote_code"]).eval()
    inputs = torch.load(job["inputs"], weights_only=True)
    with torch.no_grad():
        logits = model(**inputs).logits
    torch.save({"logits": logits, "class": type(model).__module__ + "." + type(model).__name__}, job["out"])
"""


def logits_in_fresh_process(jobs: list[dict], timeout: float = 600) -> list[dict]:
    """Reload exports in a new Python process where ``import hydrahead`` fails, and run them.

    Each job: ``dir`` (the export), ``auto_class`` (name in transformers), ``inputs`` (a ``.pt``
    dict of tensors), ``trust_remote_code``. Returns per job ``{"logits", "class"}``.
    """
    import json
    import os
    import subprocess

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        for i, job in enumerate(jobs):
            job["out"] = os.path.join(tmp, f"{i}.pt")
            job["dir"] = str(job["dir"])
            job["inputs"] = str(job["inputs"])
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
        env.setdefault("HF_MODULES_CACHE", os.path.join(tmp, "modules"))
        proc = subprocess.run(
            [sys.executable, "-c", _RELOAD_SCRIPT, json.dumps(jobs)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"reloading in a fresh process failed:\n{proc.stderr[-3000:]}")
        return [torch.load(job["out"], weights_only=True) for job in jobs]


def check_one(backbone: str, preset: str, head: dict, task: str, level: str, out_dir: Path) -> dict:
    """Build, train one step, export; returns a result row (status 'ok' so far, or 'FAIL')."""
    import torch

    from hydrahead.build import build_model
    from hydrahead.config.schema import HeadConfig
    from hydrahead.export import export_model, native_head_kind

    row = {"preset": preset, "task": task, "level": level}
    head = HeadConfig(**head).model_spec()
    model, tokenizer = build_model(backbone, labels=NUM_LABELS, head=head, task=task, level=level)
    model.train()
    batch = synthetic_batch(tokenizer, task, level, torch.Generator().manual_seed(0))
    out = model(**batch)
    if not torch.isfinite(out.loss):
        raise RuntimeError(f"loss is {out.loss.item()}")
    out.loss.backward()
    silent = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad
        and n.startswith(("head.", "mix."))
        and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    if silent:
        raise RuntimeError(f"no gradient reached {silent}")
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        logits = model(**inputs).logits
    probs = model.predict_proba(logits)
    if task == "multiclass" and not torch.allclose(probs.sum(-1), torch.ones(())):
        raise RuntimeError("predict_proba rows do not sum to 1")
    export_dir = export_model(model, out_dir / f"{preset}-{task}-{level}", tokenizer)
    torch.save(inputs, export_dir / "selftest_inputs.pt")
    row.update(
        params=sum(p.numel() for p in model.parameters()),
        loss=out.loss.item(),
        logits=logits,
        jobs=[
            {
                "dir": export_dir,
                "auto_class": AUTO_CLASS_FOR_LEVEL[level],
                "trust_remote_code": True,
                "inputs": export_dir / "selftest_inputs.pt",
                "kind": "hydrahead",
            }
        ],
    )
    if native_head_kind(model.config):
        native_dir = export_model(model, out_dir / f"{preset}-{task}-{level}-native", tokenizer, native=True)
        row["jobs"].append(
            {
                "dir": native_dir,
                "auto_class": AUTO_CLASS_FOR_LEVEL[level],
                "trust_remote_code": False,
                "inputs": export_dir / "selftest_inputs.pt",
                "kind": "native",
            }
        )
    return row


def run(backbone: str, presets: list[str] | None = None, out_dir: str | None = None) -> list[dict]:
    """Run the self-test; returns one row per preset x task x level."""
    from hydrahead.utils.paths import head_presets

    available = head_presets()
    chosen = presets or list(available)
    unknown = [p for p in chosen if p not in available]
    if unknown:
        raise SystemExit(f"unknown head preset(s) {unknown}; available: {sorted(available)}")
    tmp = tempfile.TemporaryDirectory(prefix="hydrahead-selftest-") if out_dir is None else None
    root = Path(out_dir or tmp.name)
    rows = []
    for preset in chosen:
        head = available[preset]
        for task in TASKS:
            for level in LEVELS:
                if head.get("level") and head["level"] != level:
                    rows.append(
                        {
                            "preset": preset,
                            "task": task,
                            "level": level,
                            "status": "n/a",
                            "note": f"needs {head['level']}",
                        }
                    )
                    continue
                try:
                    rows.append({**check_one(backbone, preset, head, task, level, root), "status": "ok"})
                except Exception as err:  # one broken combination must not hide the others
                    rows.append(
                        {
                            "preset": preset,
                            "task": task,
                            "level": level,
                            "status": "FAIL",
                            "note": f"{type(err).__name__}: {err}",
                        }
                    )
    jobs = [job for row in rows for job in row.get("jobs", [])]
    if jobs:
        try:
            reloaded = iter(logits_in_fresh_process(jobs))
        except Exception as err:
            for row in rows:
                if row.get("jobs"):
                    row.update(status="FAIL", note=str(err)[-300:])
            reloaded = None
        for row in rows:
            if reloaded is None or not row.get("jobs"):
                continue
            diffs = []
            for job in row["jobs"]:
                result = next(reloaded)
                diff = (result["logits"] - row["logits"]).abs().max().item()
                diffs.append(f"{job['kind']} {diff:.1e}")
                if diff > 1e-6:
                    row.update(status="FAIL", note=f"{job['kind']} reload differs by {diff:.3g}")
            row["reload"] = ", ".join(diffs)
    if tmp is not None:
        tmp.cleanup()
    return rows


def print_table(rows: list[dict], backbone: str, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hydrahead self-test on {backbone} ({seconds:.0f} s)")
    for column in ("preset", "task", "level", "params", "loss", "reload |Δlogits|", "status"):
        table.add_column(column)
    style = {"ok": "green", "FAIL": "bold red", "n/a": "dim"}
    for row in rows:
        status = row["status"] if "note" not in row else f"{row['status']}: {row['note']}"
        table.add_row(
            row["preset"],
            row["task"],
            row["level"],
            f"{row.get('params', ''):,}" if "params" in row else "",
            f"{row['loss']:.4f}" if "loss" in row else "",
            row.get("reload", ""),
            f"[{style[row['status']]}]{status}[/]",
        )
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hydrahead-selftest", description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tiny:bert", help="tiny:<family>, a local dir or a hub id")
    parser.add_argument("--preset", action="append", help="only this head preset (repeatable)")
    parser.add_argument("--keep", metavar="DIR", help="keep the exports in DIR")
    args = parser.parse_args(argv)
    from transformers.utils import logging

    logging.disable_progress_bar()
    start = time.perf_counter()
    rows = run(args.backbone, args.preset, args.keep)
    print_table(rows, args.backbone, time.perf_counter() - start)
    failed = [r for r in rows if r["status"] == "FAIL"]
    if failed:
        print(f"{len(failed)} of {len(rows)} combinations FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
