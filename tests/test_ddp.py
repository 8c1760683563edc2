"""DDP for one job: the self-sharding batch sampler, eval shares, 2-process CPU (gloo) runs, sweeps, SLURM.

Every multi-process test runs ``hydrahead-train`` in a fresh process with ``trainer=ddp
trainer.accelerator=cpu trainer.devices=2``: rank 0 goes through Hydra, rank 1 starts as
``hydrahead.cli.ddp_worker`` (no Hydra, nothing written), or under SLURM as the job's second task.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import read_metrics, train_cli

# -- the sampler and the eval shares (fast) ------------------------------------------------------


def _sampler(lengths, batch_size, world, rank, seed=0, group=True, epoch=0):
    from hydrahead.data.datamodule import EpochBatchSampler

    sampler = EpochBatchSampler(lengths, batch_size, seed, group, num_replicas=world, rank=rank)
    sampler.set_epoch(epoch)
    return sampler


LENGTHS = [3 + (i * 7919) % 61 for i in range(203)]  # 203: not a multiple of any global batch here


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize("world", [2, 3, 4])
def test_shares_are_disjoint_cover_the_epoch_and_have_equal_counts(world, group):
    shares = [list(_sampler(LENGTHS, 8, world, rank, group=group)) for rank in range(world)]
    assert len({len(share) for share in shares}) == 1  # every rank steps the same number of times
    assert len(shares[0]) == len(_sampler(LENGTHS, 8, world, 0, group=group))
    seen = [i for share in shares for batch in share for i in batch]
    assert sorted(seen) == list(range(len(LENGTHS)))  # each item once: 203 >= world, no padding needed
    assert all(len(batch) <= 8 for share in shares for batch in share)


@pytest.mark.parametrize("group", [True, False])
def test_global_batches_are_the_one_process_batches_at_the_global_batch_size(group):
    one = list(_sampler(LENGTHS, 16, 1, 0, group=group, epoch=3))
    shares = [list(_sampler(LENGTHS, 8, 2, rank, group=group, epoch=3)) for rank in range(2)]
    assert [a + b for a, b in zip(*shares)] == one


def test_one_process_order_is_unchanged():
    """With one process the sampler draws what it always drew (resumes and cached runs depend on it)."""
    import random

    rng = random.Random(5 * 100_003 + 2)
    order = list(range(len(LENGTHS)))
    rng.shuffle(order)
    expected = [order[i : i + 10] for i in range(0, len(order), 10)]
    assert list(_sampler(LENGTHS, 10, 1, 0, seed=5, group=False, epoch=2)) == expected


def test_deterministic_for_a_seed_and_different_per_epoch_and_seed():
    draw = lambda **kw: [list(_sampler(LENGTHS, 8, 2, rank, **kw)) for rank in range(2)]  # noqa: E731
    assert draw(seed=1, epoch=0) == draw(seed=1, epoch=0)
    assert draw(seed=1, epoch=0) != draw(seed=1, epoch=1)
    assert draw(seed=1, epoch=0) != draw(seed=2, epoch=0)


def test_length_grouping_is_kept_under_ddp():
    """Each global batch holds similar lengths: far less spread than random batches of the same size."""

    def spread(batches):
        return sum(max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in batches) / len(batches)

    grouped = [a + b for a, b in zip(*(list(_sampler(LENGTHS, 8, 2, r, group=True)) for r in range(2)))]
    shuffled = [a + b for a, b in zip(*(list(_sampler(LENGTHS, 8, 2, r, group=False)) for r in range(2)))]
    assert spread(grouped) < 0.25 * spread(shuffled)


def test_a_remainder_shorter_than_the_world_is_padded_by_wrap_around():
    lengths = [5] * 9  # global batch 8 with world 4: the remainder is one item
    shares = [list(_sampler(lengths, 2, 4, rank, group=False)) for rank in range(4)]
    assert [len(share) for share in shares] == [2, 2, 2, 2]
    last = [share[-1] for share in shares]
    assert all(len(batch) == 1 for batch in last)
    items = [i for share in shares for batch in share for i in batch]
    assert sorted(set(items)) == list(range(9)) and len(items) == 12  # 3 repeats, from the epoch's start


def test_sampler_is_a_batch_sampler_and_takes_the_process_group_when_not_told():
    from torch.utils.data import BatchSampler

    sampler = _sampler(LENGTHS, 8, None, None)
    assert isinstance(sampler, BatchSampler)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)  # no process group here
    with pytest.raises(ValueError, match="too few"):
        _sampler([3], 8, 2, 0)


@pytest.mark.parametrize("count,world", [(10, 3), (7, 2), (4, 4), (128, 2)])
def test_eval_shares_are_contiguous_and_in_order(count, world):
    from hydrahead.data.datamodule import eval_share

    bounds = [eval_share(count, rank, world, "validation") for rank in range(world)]
    assert [i for start, end in bounds for i in range(start, end)] == list(range(count))
    assert max(e - s for s, e in bounds) - min(e - s for s, e in bounds) <= 1
    with pytest.raises(ValueError, match="fewer than the 3 processes"):
        eval_share(2, 0, 3, "validation")


def test_feature_batches_shard_like_token_batches():
    """The cached-feature loaders split the same way: training through the sampler, eval contiguously."""
    import torch

    from hydrahead.data.datamodule import shard_bounds
    from hydrahead.data.features import FeatureBatches

    data = {"features": torch.zeros(11, 1, 2), "labels": torch.arange(11), "offsets": torch.arange(12)}
    lengths = [11 - i for i in range(11)]
    order = sorted(range(11), key=lambda i: lengths[i])
    shares = [
        FeatureBatches(data, "sequence", 4, lengths, num_replicas=2, rank=r).batch_sampler for r in (0, 1)
    ]
    assert [i for share in shares for batch in share for i in batch] == order
    assert [len(share) for share in shares] == [2, 2]  # 6 and 5 items, batches of 4
    assert shard_bounds(11, 0, 2) == (0, 6)
    train = [
        list(FeatureBatches(data, "sequence", 2, lengths, shuffle=True, num_replicas=2, rank=r).batch_sampler)
        for r in (0, 1)
    ]
    assert sorted(i for share in train for batch in share for i in batch) == list(range(11))


def test_ddp_strategy_is_chosen_for_ddp_and_several_devices_only():
    from hydrahead.training.ddp import JobDDPStrategy, strategy_for

    assert isinstance(strategy_for({"strategy": "ddp", "devices": 2}, {}), JobDDPStrategy)
    assert isinstance(
        strategy_for({"strategy": "auto", "devices": 2, "accelerator": "cpu"}, {}), JobDDPStrategy
    )
    found = strategy_for({"strategy": "ddp_find_unused_parameters_true", "devices": 2}, {})
    assert found._ddp_kwargs["find_unused_parameters"] is True
    assert strategy_for({"strategy": "auto", "devices": 1}, {}) is None
    assert strategy_for({"strategy": "ddp_spawn", "devices": 2}, {}) is None


# -- 2 processes on the CPU (gloo) -----------------------------------------------------------------
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32"]
TINY = ["backbone=tiny_bert", "data=synthetic_sequences", "logger=none", "callbacks.rich_progress_bar=false"]
# Test-only hooks, read at interpreter start by every process of a run (DDP workers inherit PYTHONPATH):
# dropout off in tiny BERTs, or a fit that stops after its first epoch (as test_train's resume test does).
SITECUSTOMIZE = """
import os
if os.environ.get("HH_TEST_NO_DROPOUT"):
    import transformers.models.bert.configuration_bert as bert
    _init = bert.BertConfig.__init__
    def _no_dropout(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        self.hidden_dropout_prob = self.attention_probs_dropout_prob = 0.0
    bert.BertConfig.__init__ = _no_dropout
if os.environ.get("HH_TEST_STOP_AFTER_FIRST_EPOCH"):
    from hydrahead.training.module import HeadModule
    HeadModule.on_train_epoch_end = lambda self: setattr(self.trainer, "should_stop", True)
"""


def _train(tmp: Path, name: str, *args: str, hooks: tuple[str, ...] = (), multirun: bool = False):
    """``hydrahead-train ARGS`` in a fresh process started in ``tmp``, writing under ``tmp/<name>``
    (``paths.root_dir``; the run dir is ``<name>/run``, a sweep's ``<name>/sweep``)."""
    import os

    root = tmp / name
    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HH_TEST_")}
    env.update({hook: "1" for hook in hooks})
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    where = f"hydra.sweep.dir={root}/sweep" if multirun else f"hydra.run.dir={root}/run"
    result = train_cli(
        *(["-m"] if multirun else []), *args, where, f"paths.root_dir={root}", timeout=300, cwd=tmp, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


def _close(a: dict, b: dict, rel: float) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= rel * max(abs(b[k]), 1e-3) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 2-process fine-tuning run (2 x 16, the tiny demo's 2 epochs) and its 1-process twin (1 x 32)."""
    tmp = tmp_path_factory.mktemp("ddp")
    ddp = _train(tmp, "ddp", *DDP, *TINY, "data.batch_size=16")
    one = _train(tmp, "one", *TINY, "trainer.accelerator=cpu", "data.batch_size=32", "export=false")
    return tmp, ddp / "run", one / "run"


@pytest.mark.slow
def test_two_processes_complete_learn_and_write_one_run_dir_from_rank_0(runs):
    tmp, run, one = runs
    record, single = read_metrics(run), read_metrics(one)
    assert record["status"] == "completed"
    assert record["metrics"]["val/acc"] >= 0.9 and record["metrics"]["test/acc"] >= 0.9  # chance: 0.25
    ddp = record["ddp"]
    assert ddp["world_size"] == 2 and [r["rank"] for r in ddp["ranks"]] == [0, 1]
    assert ddp["ranks"][0]["pid"] == record["pid"] != ddp["ranks"][1]["pid"]
    assert [r["train_samples"] for r in ddp["ranks"]] == [1024, 1024]  # 2 epochs x half of 1024 each
    assert record["global_step"] == single["global_step"] == 64  # 32 global batches of 32 per epoch
    # Rank 1 went through no Hydra: one run dir, nothing beside it, nothing in the working directory.
    assert sorted(p.name for p in tmp.iterdir()) == ["ddp", "one", "site"]
    assert sorted(p.name for p in (tmp / "ddp").iterdir()) == [".cache", "run"]
    files = [".hydra", "checkpoints", "metrics.json", "labels.json", "train.log", "model", "per_class.csv"]
    files += ["confusion_matrix.csv", "confusion_matrix.png", "reliability.png"]
    assert sorted(p.name for p in run.iterdir()) == sorted(files)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (run / "model" / "model.safetensors").is_file()
    # The same global batch on one process: the same schedule; with dropout the two runs draw different
    # masks (as two seeds would), so their metrics agree to a tolerance (measured: 0.0 acc, 0.016 loss).
    for key in ("val/acc", "test/acc", "val/f1_macro"):
        assert abs(record["metrics"][key] - single["metrics"][key]) <= 0.05, key
    for key in ("val/loss", "test/loss"):
        assert abs(record["metrics"][key] - single["metrics"][key]) <= 0.05, key


@pytest.mark.slow
def test_synced_eval_metrics_equal_one_process_on_the_same_weights(runs):
    """Each rank evaluated a contiguous share of the sorted split; synced, they are one process's."""
    from hydrahead.evaluate_run import evaluate_run

    _, run, _ = runs
    record = read_metrics(run)
    for split, stage in (("validation", "val"), ("test", "test")):
        alone = evaluate_run(run, split=split, device="cpu")["metrics"]
        ours = {k: v for k, v in record["metrics"].items() if k.startswith(f"{stage}/")}
        assert {k: alone[k] for k in ours} == pytest.approx(ours, rel=1e-5, abs=1e-6)
        assert alone[f"{stage}/acc"] == ours[f"{stage}/acc"]
    # The gathered logits (reports, calibration) are every rank's: the per-class counts of the whole split.
    assert (run / "per_class.csv").read_text() == (run / "eval" / "test" / "per_class.csv").read_text()


@pytest.mark.slow
def test_without_dropout_two_processes_equal_one_process_at_the_same_global_batch(tmp_path):
    """Dropout off everywhere: 2 x 16 and 1 x 32 see the same global batches and average the same
    gradients, so fine-tuning ends with the same metrics up to float rounding."""
    args = [*TINY, "export=false", "head.dropout=0", "seed=1"]
    ddp = _train(tmp_path, "ddp", *args, *DDP, "data.batch_size=16", hooks=("HH_TEST_NO_DROPOUT",))
    one = _train(
        tmp_path, "one", *args, "trainer.accelerator=cpu", "data.batch_size=32", hooks=("HH_TEST_NO_DROPOUT",)
    )
    a, b = read_metrics(ddp / "run")["metrics"], read_metrics(one / "run")["metrics"]
    assert _close(a, b, rel=1e-5), (a, b)


@pytest.mark.slow
def test_resume_from_last_ckpt_under_ddp_ends_where_the_uninterrupted_run_ends(runs, tmp_path):
    import torch

    _, full, _ = runs
    part = _train(
        tmp_path, "part", *DDP, *TINY, "data.batch_size=16", hooks=("HH_TEST_STOP_AFTER_FIRST_EPOCH",)
    )
    assert read_metrics(part / "run")["epochs"] == 1
    last = part / "run" / "checkpoints" / "last.ckpt"
    assert len(torch.load(last, weights_only=True)["rng_states"]) == 2  # each rank's own stream
    resumed = _train(tmp_path, "resumed", *DDP, *TINY, "data.batch_size=16", f"ckpt_path={last}")
    a, b = read_metrics(resumed / "run"), read_metrics(full)
    assert a["epochs"] == b["epochs"] == 2 and a["global_step"] == b["global_step"]
    assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-6)
    weights = [
        torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for r in (resumed / "run", full)
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_frozen_backbone_on_two_processes_pays_one_encoder_pass(tmp_path):
    """A frozen backbone through Lightning (save_top_k=2 needs it): rank 0 computes the feature entry
    before the worker starts, the worker reads it. Without dropout the run equals one process's."""
    args = [*TINY, "backbone.freeze=true", "callbacks.save_top_k=2", "head.dropout=0", "trainer.max_epochs=2"]
    ddp = _train(tmp_path, "ddp", *args, *DDP, "data.batch_size=16")
    one = _train(tmp_path, "one", *args, "trainer.accelerator=cpu", "data.batch_size=32")
    record = read_metrics(ddp / "run")
    assert record["engine"].startswith("lightning")
    assert [r["feature_cache"] for r in record["ddp"]["ranks"]] == ["computed", "hit"]
    assert len(list((ddp / ".cache" / "features").glob("*/depth-*.pt"))) == 1
    assert _close(record["metrics"], read_metrics(one / "run")["metrics"], rel=1e-5)


@pytest.mark.slow
def test_a_two_job_sweep_with_ddp_gives_two_complete_run_dirs_and_nothing_else(tmp_path):
    """Job 0 fine-tunes on 2 processes; job 1 (frozen: the head trainer, one process) needs no more."""
    small = ["data.num_train=256", "data.num_validation=64", "data.num_test=64", "trainer.max_epochs=1"]
    root = _train(
        tmp_path, "root", *DDP, *TINY, *small, "export=false", "backbone.freeze=false,true", multirun=True
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root", "site"]
    assert sorted(p.name for p in root.iterdir()) == [".cache", "sweep"]
    sweep = root / "sweep"
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    records = [read_metrics(sweep / job) for job in ("0", "1")]
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert records[0]["ddp"]["world_size"] == 2 and "ddp" not in records[1]
    assert records[1]["engine"] == "head_trainer"
    for job in ("0", "1"):
        assert not list((sweep / job).glob("*ddp_process*"))  # no log of a re-executed child
        assert sorted(p.name for p in (sweep / job / ".hydra").iterdir()) == [
            "config.yaml",
            "hydra.yaml",
            "overrides.yaml",
        ]


# -- SLURM: both ranks as tasks of one job, started by srun ---------------------------------------


@pytest.mark.slurm
def test_a_slurm_job_with_two_tasks_runs_both_ranks_under_srun(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    result = train_cli(
        "-m",
        *slurm_cluster.launcher(),
        "hydra.launcher.tasks_per_node=2",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        *TINY,
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
        f"paths.root_dir={tmp_path}",
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dirs = [p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(run_dirs) == 1 and re.fullmatch(r"0_\d+(_0)?", run_dirs[0].name), run_dirs
    record = read_metrics(run_dirs[0])
    assert record["status"] == "completed" and "val/acc" in record["metrics"]  # 1 epoch: not yet learnt
    ranks = record["ddp"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["pid"] != ranks[1]["pid"]
    assert record["ddp"]["cluster"] == "SLURMEnvironment"
    # One submitit log per task: srun started both.
    logs = sorted(p.name for p in (sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2 and {re.sub(r".*_(\d+)_log\.out", r"\1", name) for name in logs} == {"0", "1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cache", "sweep"]
