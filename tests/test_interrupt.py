"""Time limits, preemption and scancel under submitit (``training.interrupt``), without SLURM.

Each test runs a job in this process as submitit would: submitit's own signal handlers installed
(``JobEnvironment._handle_signals``, a fake SLURM environment), ``scontrol requeue`` recorded instead of
run. A signal sent in the middle of an optimizer step stops the job after that step with a resumable
mid-epoch ``last.ckpt``; the next attempt, in the same run dir, ends with the metrics of an
uninterrupted run, having executed every optimizer step once.
"""

from __future__ import annotations

import os
import signal

import pytest
import torch

from conftest import FAST, read_metrics, run_job

LONG = [a for a in FAST if "limit_train" not in a and "max_epochs" not in a and "num_train" not in a] + [
    "trainer.max_epochs=2",
    "data.num_train=128",  # 8 batches an epoch
    "export=false",
]
FINE_TUNED = [*LONG, "backbone=tiny_roberta"]  # Lightning, with dropout in the backbone
FROZEN = [*LONG, "backbone.freeze=true", "head=mlp", "head.hidden_layers=[32]", "head.dropout=0.2"]


class Job:
    """A stand-in for hydra-submitit-launcher's launcher: callable, and checkpointable as it is."""

    def __call__(self):
        return None

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


@pytest.fixture
def submitit_job(monkeypatch, tmp_path):
    """A submitit SLURM job's process: ``start()`` begins an attempt (submitit's handlers installed
    again, as in a fresh process); ``requeues`` lists the ``scontrol requeue`` calls."""
    import submitit
    from submitit.core.utils import DelayedSubmission
    from submitit.slurm.slurm import SlurmJobEnvironment

    from hydrahead.training import interrupt

    for key, value in {
        "SUBMITIT_EXECUTOR": "slurm",
        "SUBMITIT_FOLDER": str(tmp_path / "submitit"),
        "SLURM_JOB_ID": "999999",
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    (tmp_path / "submitit").mkdir()
    requeues = []
    monkeypatch.setattr(SlurmJobEnvironment, "_requeue", lambda self, countdown: requeues.append(countdown))
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR2, signal.SIGTERM, signal.SIGCONT)}

    class Attempts:
        def __init__(self):
            self.requeues = requeues
            self.count = 0

        def start(self):
            interrupt.uninstall()  # a new process: nothing received, submitit's handlers first
            if self.count:
                monkeypatch.setenv("SLURM_RESTART_COUNT", str(self.count))
            self.count += 1
            env = submitit.JobEnvironment()
            delayed = DelayedSubmission(Job())
            delayed.set_timeout(1, 3)  # timeout_min=1, max_num_timeout=3
            env._handle_signals(env.paths, delayed)

    yield Attempts()
    interrupt.uninstall()
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def signal_at_step(monkeypatch, engine: str, step: int, sig=signal.SIGUSR2) -> None:
    """Send ``sig`` to this process in the middle of the ``step``-th training batch (1-based; an
    optimizer step without gradient accumulation): after it is fetched, before forward and backward."""
    calls = []

    def send():
        calls.append(1)
        if len(calls) == step:
            os.kill(os.getpid(), sig)

    if engine == "lightning":
        from hydrahead.training.module import HeadModule

        real = HeadModule.training_step

        def training_step(self, batch, batch_idx):
            send()
            return real(self, batch, batch_idx)

        monkeypatch.setattr(HeadModule, "training_step", training_step)
    else:
        from hydrahead.training.head_trainer import HeadTrainer

        real = HeadTrainer._to_device

        def to_device(self, batch):
            send()
            return real(self, batch)

        monkeypatch.setattr(HeadTrainer, "_to_device", to_device)


def uninterrupted(args, run_dir):
    run_job(args, run_dir)
    return read_metrics(run_dir)


@pytest.mark.parametrize(
    ("engine", "args", "step"),
    [("lightning", FINE_TUNED, 5), ("head_trainer", FROZEN, 11)],
    ids=["lightning", "head_trainer"],
)
def test_a_signalled_job_requeues_at_the_next_step_and_resumes_exactly(
    engine, args, step, submitit_job, monkeypatch, tmp_path
):
    full = uninterrupted(args, tmp_path / "full")
    run_dir = tmp_path / "job"
    submitit_job.start()
    with monkeypatch.context() as signalled:
        signal_at_step(signalled, engine, step)
        with pytest.raises(SystemExit) as exited:
            run_job(args, run_dir)
    assert exited.value.code == -1  # submitit's exit after a requeue: no result pickle
    assert submitit_job.requeues == [2]  # timed out: max_num_timeout 3 -> 2 left
    assert (tmp_path / "submitit" / "999999_submitted.pkl").is_file()  # the requeued submission
    record = read_metrics(run_dir)
    assert record["status"] == "requeued" and record["attempt"] == 1
    assert [(e["attempt"], e["reason"], e["global_step"]) for e in record["requeued"]] == [
        (1, "timeout", step)
    ]
    assert record["steps_executed"] == step  # the step in flight completed, then the job stopped
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == step  # mid-epoch: 8 batches an epoch
    submitit_job.start()
    resumed = run_job(args, run_dir)
    assert resumed.status == "completed"
    record = read_metrics(run_dir)
    assert record["metrics"] == full["metrics"]
    assert record["global_step"] == full["global_step"] == 16
    assert record["steps_executed"] == full["steps_executed"] == 16  # no step ran twice
    assert record["attempt"] == 2 and len(record["requeued"]) == 1
    assert record["engine"].split()[0] == engine


def test_a_signal_outside_training_requeues_at_once(submitit_job, monkeypatch, tmp_path):
    from hydrahead import pipeline

    real = pipeline._load_data

    def load_data(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR2)  # while the data loads: nothing to checkpoint
        return real(*args, **kwargs)

    submitit_job.start()
    with monkeypatch.context() as signalled:
        signalled.setattr(pipeline, "_load_data", load_data)
        with pytest.raises(SystemExit):
            run_job(FINE_TUNED, tmp_path / "job")
    record = read_metrics(tmp_path / "job")
    assert record["status"] == "requeued" and record["steps_executed"] == 0
    assert not (tmp_path / "job" / "checkpoints" / "last.ckpt").exists()
    submitit_job.start()
    assert run_job(FINE_TUNED, tmp_path / "job").status == "completed"
    assert read_metrics(tmp_path / "job")["steps_executed"] == 16


def test_sigterm_without_a_requeue_is_a_cancel(submitit_job, monkeypatch, tmp_path):
    submitit_job.start()
    with monkeypatch.context() as signalled:
        signal_at_step(signalled, "lightning", 3, signal.SIGTERM)
        with pytest.raises(SystemExit) as exited:
            run_job(FINE_TUNED, tmp_path / "job")
    assert exited.value.code == 128 + signal.SIGTERM
    assert submitit_job.requeues == []
    record = read_metrics(tmp_path / "job")
    assert record["status"] == "cancelled" and record["reason"] == "scancel"
    assert torch.load(tmp_path / "job" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def test_timed_out_too_often_fails(submitit_job, monkeypatch, tmp_path):
    from submitit.core.utils import UncompletedJobError

    submitit_job.start()
    signal.getsignal(signal.SIGUSR2).__self__._delayed.set_timeout(1, 0)  # max_num_timeout used up
    with monkeypatch.context() as signalled:
        signal_at_step(signalled, "lightning", 2)
        with pytest.raises(UncompletedJobError):  # submitit's own: a result pickle with the error
            run_job(FINE_TUNED, tmp_path / "job")
    record = read_metrics(tmp_path / "job")
    assert record["status"] == "failed" and "too many times" in record["error"]
    assert submitit_job.requeues == []


def test_attempts_append_to_one_wandb_run(submitit_job, monkeypatch, tmp_path):
    from wandb_records import read_run

    args = [a for a in FINE_TUNED if a != "logger=none"] + ["logger=wandb"]
    submitit_job.start()
    with monkeypatch.context() as signalled:
        signal_at_step(signalled, "lightning", 4)
        with pytest.raises(SystemExit):
            run_job(args, tmp_path / "job")
    submitit_job.start()
    assert run_job(args, tmp_path / "job").status == "completed"
    record = read_metrics(tmp_path / "job")
    files = sorted((tmp_path / "job" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2  # one log per attempt, both of the run whose id the run dir keeps
    runs = [read_run(f) for f in files]
    assert [r["id"] for r in runs] == [record["wandb_id"]] * 2
    assert runs[1]["summary"]["test/acc"] == pytest.approx(record["metrics"]["test/acc"])


def test_early_stopped_run_resumed_from_its_last_checkpoint_stays_stopped(tmp_path):
    args = [*FINE_TUNED, "trainer.max_epochs=6", "callbacks.early_stopping.enabled=true"]
    args += ["callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=10"]
    first = run_job(args, tmp_path / "first")
    assert first.record["epochs"] < 6
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = run_job([*args, f"ckpt_path={last}"], tmp_path / "resumed")
    assert resumed.record["global_step"] == first.record["global_step"]
    assert resumed.record["metrics"] == first.record["metrics"]


def test_with_gradient_accumulation_the_job_stops_at_the_optimizer_step(submitit_job, monkeypatch, tmp_path):
    args = [*FINE_TUNED, "++trainer.accumulate_grad_batches=2"]
    full = uninterrupted(args, tmp_path / "full")
    submitit_job.start()
    with monkeypatch.context() as signalled:
        signal_at_step(signalled, "lightning", 5)  # the 5th batch: the first half of optimizer step 3
        with pytest.raises(SystemExit):
            run_job(args, tmp_path / "job")
    record = read_metrics(tmp_path / "job")
    assert [e["global_step"] for e in record["requeued"]] == [3]  # after the 6th batch, step 3 complete
    submitit_job.start()
    run_job(args, tmp_path / "job")
    record = read_metrics(tmp_path / "job")
    assert record["metrics"] == full["metrics"]
    assert record["steps_executed"] == record["global_step"] == full["global_step"] == 8


@pytest.mark.slow
def test_a_signalled_ddp_job_stops_every_rank_at_one_step_and_resumes_exactly(
    submitit_job, monkeypatch, tmp_path
):
    """Two processes (the worker started by rank 0): SLURM signals every process of a job, so both
    get SIGUSR2 in the middle of step 3. The worker ignores it, rank 0 decides for both at that step
    (one last.ckpt, the job requeued); the next attempt ends with the uninterrupted DDP run's metrics."""
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32"]
    args = [*FINE_TUNED, *ddp, "data.batch_size=8"]  # 128 / (2 x 8): 8 steps an epoch
    full = uninterrupted(args, tmp_path / "full")
    assert full["ddp"]["world_size"] == 2
    from hydrahead.training import ddp as ddp_module
    from hydrahead.training.module import HeadModule

    real, calls = HeadModule.training_step, []

    def training_step(self, batch, batch_idx):
        calls.append(1)
        if len(calls) == 3:  # SLURM's signal reaches every process of the job
            for launcher in ddp_module._LAUNCHED:
                for proc in launcher.procs:
                    proc.send_signal(signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGUSR2)
        return real(self, batch, batch_idx)

    run_dir = tmp_path / "job"
    submitit_job.start()
    with monkeypatch.context() as signalled:
        signalled.setattr(HeadModule, "training_step", training_step)
        with pytest.raises(SystemExit) as exited:
            run_job(args, run_dir)
    assert exited.value.code == -1 and submitit_job.requeues == [2]
    record = read_metrics(run_dir)
    assert record["status"] == "requeued"
    assert [(e["reason"], e["global_step"]) for e in record["requeued"]] == [("timeout", 3)]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    submitit_job.start()
    assert run_job(args, run_dir).status == "completed"
    record = read_metrics(run_dir)
    assert record["metrics"] == pytest.approx(full["metrics"], abs=1e-6)
    assert record["global_step"] == full["global_step"] == 16
    assert record["steps_executed"] == 16
