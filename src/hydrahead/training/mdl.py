"""MDL probing with the online code (Voita & Titov, EMNLP 2020): how many bits the labels cost given
the frozen features, when a probe learns to predict them as it goes.

The train split is put in one fixed order (from ``seed``) and cut into blocks at
``task.mdl_fractions`` percent (the paper's 0.1, 0.2, 0.4, ... 50, 100). The first block is sent with
the uniform code (``items * log2 K`` bits); every later block costs ``sum -log2 p(y | x)`` under a
probe trained from scratch on everything before it, with the run's head, optimizer, schedule and
epochs. So the codelength counts both how well the probe ends up predicting and how much data it
needed to get there: a representation that makes the labels easy to learn transmits them in fewer
bits. ``compression = uniform / online``.

Early stopping, the same for every block: a fraction ``task.mdl_heldout`` of each prefix (its last
inputs in the fixed order, at least one) is held out, the probe trains on the rest, and the epoch
with the lowest held-out loss is the one that codes the next block (the paper also holds out a part
of each prefix). A one-input prefix has nothing to hold out: its probe is picked on its own loss.

An "item" is what the loss sees: a sequence, a labelled token, a labelled position. For multilabel
tasks the codelength is the sum of the per-label binary codelengths (uniform: 1 bit per label per
item). The blocks are made of whole inputs, so an input's tokens always travel together.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time

import torch

log = logging.getLogger("hydrahead.run")


def block_ends(count: int, fractions: list[float]) -> list[int]:
    """The input count at the end of each block: ``fractions`` (percent) of ``count``, at least one
    input per block (so small data has fewer, not empty, blocks)."""
    ends: list[int] = []
    for fraction in fractions:
        end = min(count, max(1, round(count * fraction / 100)))
        if not ends or end > ends[-1]:
            ends.append(end)
    if ends[-1] != count:
        ends.append(count)
    return ends


def fixed_order(count: int, seed: int) -> list[int]:
    order = list(range(count))
    random.Random(f"mdl-online-{seed}").shuffle(order)
    return order


def subset(split: dict, inputs: list[int]) -> dict:
    """The rows of ``inputs`` (in that order) of a feature split ``{features, labels, offsets}``."""
    offsets = split["offsets"]
    starts, ends = offsets[inputs], offsets[torch.tensor(inputs) + 1]
    rows = torch.cat([torch.arange(int(a), int(b)) for a, b in zip(starts, ends)])
    counts = ends - starts
    return {
        "features": split["features"].index_select(0, rows),
        "labels": split["labels"].index_select(0, rows),
        "offsets": torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]),
    }


def items_in(split: dict) -> int:
    return int(split["offsets"][-1])


def uniform_bits(items: int, num_labels: int, task: str) -> float:
    """The uniform code: log2 K bits per item (multilabel: one bit per label per item)."""
    return float(items * (num_labels if task == "multilabel" else math.log2(num_labels)))


@torch.no_grad()
def codelength_bits(model, batches, task: str, device=None) -> float:
    """``sum -log2 p(y | x)`` over the labelled items of ``batches`` (float64 sums); ``model`` in
    eval mode."""
    total = torch.zeros((), dtype=torch.float64)
    for batch in batches:
        if device is not None:
            batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(features=batch["features"]).logits.double()
        labels = batch["labels"]
        if task == "multiclass":
            nats = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
            )
        else:
            flat, target = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1, logits.shape[-1])
            keep = target[:, 0] != -100
            nats = torch.nn.functional.binary_cross_entropy_with_logits(
                flat[keep], target[keep].double(), reduction="sum"
            )
        total += nats.cpu()
    return float(total / math.log(2))


def online_codelength(blocks: list[list[int]], train: dict, num_labels: int, task: str, fit, bits) -> dict:
    """The online code of ``train`` cut into ``blocks`` (lists of input indices, in transmission order).

    ``fit(prefix_inputs, block_index)`` returns a probe trained on the inputs sent before the block;
    ``bits(probe, block_split)`` its codelength of the block. Returns the totals and each block.
    """
    first = subset(train, blocks[0])
    first_bits = uniform_bits(items_in(first), num_labels, task)
    rows = [
        {"inputs": len(blocks[0]), "items": items_in(first), "kbits": first_bits / 1000, "code": "uniform"}
    ]
    online, sent = first_bits, list(blocks[0])
    for index, block in enumerate(blocks[1:], start=1):
        probe, info = fit(list(sent), index)
        part = subset(train, block)
        block_bits = bits(probe, part)
        online += block_bits
        rows.append({"inputs": len(block), "items": items_in(part), "kbits": block_bits / 1000, **info})
        sent += block
    uniform = uniform_bits(items_in(train), num_labels, task)
    return {
        "online_kbits": online / 1000,
        "uniform_kbits": uniform / 1000,
        "compression": uniform / online if online > 0 else float("inf"),
        "blocks": rows,
    }


def online_code(model, splits: dict, data, typed, trainer_args: dict) -> dict:
    """``task.mdl=online`` for a frozen-backbone run: probes of ``model``'s head on cached ``splits``.

    ``data`` is the run's :class:`~hydrahead.data.datamodule.EncodedData` (input lengths, batching).
    Returns the ``mdl`` record of metrics.json, with ``metrics`` to merge into the run's metrics.
    """
    from hydrahead.build import head_seed
    from hydrahead.data.features import FeatureBatches
    from hydrahead.modeling import HydraHeadModel

    from .head_trainer import HeadTrainer, head_mode

    task, start = typed.task, time.perf_counter()
    train, train_inputs = splits["train"], data.splits["train"]
    count = len(train_inputs)
    order = fixed_order(count, typed.seed)
    ends = block_ends(count, list(task.mdl_fractions))
    blocks = [order[a:b] for a, b in zip([0, *ends[:-1]], ends)]
    # The block probes pick their epoch on held-out loss, and nothing resumes them.
    probe_typed = dataclasses.replace(typed, task=dataclasses.replace(task, monitor="val/loss", mode="min"))
    device = None

    def fit(sent: list[int], index: int):
        nonlocal device
        held = max(1, round(len(sent) * task.mdl_heldout)) if len(sent) > 1 else 0
        fit_on, check_on = (sent[:-held], sent[-held:]) if held else (sent, sent)
        with torch.random.fork_rng():
            torch.manual_seed(head_seed(typed.seed) + index)
            probe = HydraHeadModel(model.config, backbone=model.backbone)  # a fresh head, shared encoder
        block_data = dataclasses.replace(
            data,
            splits={
                "train": [train_inputs[i] for i in fit_on],
                "validation": [train_inputs[i] for i in check_on],
            },
        )
        block_splits = {"train": subset(train, fit_on), "validation": subset(train, check_on)}
        trainer = HeadTrainer(
            probe, block_splits, block_data, probe_typed, None, {}, trainer_args, quiet=True
        )
        device = trainer.device
        result = trainer.fit()
        if device.type != "cpu":
            probe.to(device)
        info = {
            "train_inputs": len(fit_on),
            "heldout_inputs": held,
            "best_epoch": result["best_epoch"],
            "heldout_loss": result["metrics"].get("val/loss"),
        }
        return probe, info

    def bits(probe, part: dict) -> float:
        batches = FeatureBatches(part, data.level, data.eval_batch_size)
        head_mode(probe, False)
        value = codelength_bits(probe, batches, task.name, device)
        if device is not None and device.type != "cpu":
            probe.cpu()
        return value

    result = online_codelength(blocks, train, model.config.num_labels, task.name, fit, bits)
    result.update(
        seed=typed.seed,
        fractions=list(task.mdl_fractions),
        heldout=task.mdl_heldout,
        early_stopping="per block: the epoch with the lowest loss on the held-out end of its prefix",
        multilabel_code="sum of per-label binary codelengths" if task.name == "multilabel" else None,
        time_s=round(time.perf_counter() - start, 3),
    )
    result["metrics"] = {
        "mdl/online_kbits": result["online_kbits"],
        "mdl/uniform_kbits": result["uniform_kbits"],
        "mdl/compression": result["compression"],
        # each block's codelength (block 0: the uniform code), for W&B and hydrahead-compare --metric
        **{f"mdl/block_{i:02d}_kbits": block["kbits"] for i, block in enumerate(result["blocks"])},
    }
    log.info(
        "MDL online code: %.2f kbits (uniform %.2f kbits), compression %.2f, in %.1f s",
        result["online_kbits"],
        result["uniform_kbits"],
        result["compression"],
        result["time_s"],
    )
    return result
