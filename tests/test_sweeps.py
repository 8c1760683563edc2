"""Sweeps: launchers, failure isolation, Optuna stop/resume, every experiment preset as a sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import FAST, read_metrics, run_train, train_cli
from hydrahead.utils.paths import experiments_dir

ROOT = Path(__file__).resolve().parents[1]
QUICK = [*FAST, "export=false"]


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())


def test_failed_job_is_isolated_and_named(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as stop:
        run_train([*QUICK, "head.dropout=0.1,1.5,0.2"], tmp_path, monkeypatch, multirun=True)
    assert stop.value.code == 1
    statuses = [read_metrics(job)["status"] for job in job_dirs(tmp_path)]
    assert statuses == ["completed", "failed", "completed"]  # the jobs after the failure still ran
    assert "head.dropout=1.5" in read_metrics(tmp_path / "1")["error"]
    err = capsys.readouterr().err
    assert "1 of 3 sweep jobs failed" in err and "FAILED 1 (" in err and "head.dropout=1.5" in err


def test_optuna_search_stopped_and_resumed(tmp_path, monkeypatch):
    import optuna

    import hydrahead.pipeline

    real_run, calls = hydrahead.pipeline.run, []

    def stopped_at_second_trial(cfg):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the search is stopped mid-way
        return real_run(cfg)

    args = [*QUICK, "sweep=optuna", "hydra.sweeper.n_trials=3"]
    monkeypatch.setattr(hydrahead.pipeline, "run", stopped_at_second_trial)
    monkeypatch.setenv("HYDRAHEAD_INVOCATION_ID", "first")
    with pytest.raises(BaseException):  # noqa: B017 - KeyboardInterrupt through Hydra
        run_train(args, tmp_path, monkeypatch, multirun=True)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.load_study(study_name="hydrahead", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]

    monkeypatch.setattr(hydrahead.pipeline, "run", real_run)
    monkeypatch.setenv("HYDRAHEAD_INVOCATION_ID", "second")
    run_train([*QUICK, "sweep=optuna", "hydra.sweeper.n_trials=2"], tmp_path, monkeypatch, multirun=True)
    study = optuna.load_study(study_name="hydrahead", storage=storage)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3  # 1 before the stop + 2 after the resume
    assert study.direction.name == "MAXIMIZE"  # task.mode=max for val/acc
    names = sorted(p.name for p in job_dirs(tmp_path))
    assert names == ["0_first", "0_second", "1_first", "1_second"]  # no resumed job overwrote another
    for trial, job in zip(complete[1:], ["0_second", "1_second"]):
        assert trial.value == pytest.approx(read_metrics(tmp_path / job)["best"])


def test_sweep_job_dirs_are_numbered_and_the_sweep_config_saved(tmp_path, monkeypatch):
    run_train([*QUICK, "seed=0,1"], tmp_path, monkeypatch, multirun=True)
    assert [p.name for p in job_dirs(tmp_path)] == ["0", "1"]
    saved = OmegaConf.load(tmp_path / "multirun.yaml")
    assert saved.hydra.sweep.dir == str(tmp_path)


def test_requeued_job_resumes_from_its_own_last_checkpoint(tmp_path, monkeypatch):
    """A job that runs again in a run dir that already holds last.ckpt continues from it."""
    args = [a for a in QUICK if "max_epochs" not in a] + ["trainer.max_epochs=2"]
    run_train(args, tmp_path, monkeypatch)
    first = read_metrics(tmp_path)
    run_train([a for a in args if "max_epochs" not in a] + ["trainer.max_epochs=3"], tmp_path, monkeypatch)
    again = read_metrics(tmp_path)
    assert first["epochs"] == 2 and again["epochs"] == 3
    assert again["global_step"] == first["global_step"] * 3 // 2  # one more epoch, not three


def test_single_task_slurm_job_uses_the_plain_environment(monkeypatch):
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    from hydrahead.training.factories import cluster_plugins

    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert cluster_plugins() == []
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert isinstance(cluster_plugins()[0], LightningEnvironment)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")  # trainer=ddp: tasks_per_node = devices
    (env,) = cluster_plugins()
    assert isinstance(env, SLURMEnvironment) and not env.auto_requeue


def test_slurm_launcher_preset_exposes_the_cluster_knobs():
    out = train_cli(
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.account=lab",
        "hydra.launcher.qos=high",
        "--cfg",
        "hydra",
        timeout=60,
        check=True,
    ).stdout
    launcher = OmegaConf.to_container(OmegaConf.create(out).hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["partition"], launcher["account"], launcher["qos"]) == ("gpu", "lab", "high")
    assert launcher["gpus_per_node"] == 1 and launcher["tasks_per_node"] == 1
    for knob in ("timeout_min", "mem_gb", "cpus_per_task", "array_parallelism"):
        assert knob in launcher
    assert launcher["submitit_folder"].startswith("${hydra.sweep.dir}")


@pytest.mark.slow
def test_2x2_multirun_through_the_local_launcher(tmp_path):
    proc = train_cli(
        "-m",
        "hydra/launcher=local",
        *QUICK,
        "head=linear,mlp",
        "seed=0,1",
        f"hydra.sweep.dir={tmp_path}",
        f"paths.root_dir={tmp_path}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = job_dirs(tmp_path)
    assert len(jobs) == 4
    assert all(job.name.startswith(f"{i}_") for i, job in enumerate(jobs))  # <num>_<submitit job id>
    assert len({read_metrics(job)["pid"] for job in jobs}) == 4  # separate processes
    assert all(read_metrics(job)["status"] == "completed" for job in jobs)
    assert (tmp_path / ".submitit").is_dir()


def _preset_overrides(name: str) -> list[str]:
    """Tiny, synthetic, one-batch versions of a preset's sweep (its axes stay as they are)."""
    spec = OmegaConf.load(experiments_dir() / f"{name}.yaml")
    data = next(d["override /data"] for d in spec.defaults if "override /data" in d)
    level = {"wordnet_examples": "positions", "wordnet_tagging": "tokens"}.get(data, "sequences")
    params = {str(k): str(v) for k, v in spec.hydra.sweeper.params.items()}
    params["seed"] = "0"
    if "head.layer" in params:
        params["head.layer"] = "range(0,5)"  # the tiny encoder has 4 layers
    extra = ["hydra.sweeper.params={" + ",".join(f"{k}:'{v}'" for k, v in params.items()) + "}"]
    return [f"experiment={name}", f"data=synthetic_{level}", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.stem for p in experiments_dir().glob("*.yaml")))
def test_every_preset_runs_as_a_fast_dev_run_sweep(name, tmp_path, monkeypatch):
    args = [*QUICK, "++trainer.fast_dev_run=true", *_preset_overrides(name)]
    run_train(args, tmp_path, monkeypatch, multirun=True)
    jobs = job_dirs(tmp_path)
    assert len(jobs) >= 3
    assert all(json.loads((job / "metrics.json").read_text())["status"] == "completed" for job in jobs)
