"""A real single-node SLURM cluster (scripts/local_slurm.sh): a batch job runs, a hydrahead sweep runs on it."""

from __future__ import annotations

import re

import pytest

from conftest import FAST, read_metrics, train_cli

pytestmark = pytest.mark.slurm


def test_batch_job_completes(slurm_cluster, tmp_path):
    out = tmp_path / "job.out"
    job = slurm_cluster.sbatch("-o", str(out), "--wrap", "echo ran on $SLURMD_NODENAME")
    assert slurm_cluster.wait(job) == {job: "COMPLETED"}
    assert out.read_text().startswith("ran on ")


def test_slurm_sweep_completes(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    result = train_cli(
        "-m",
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={slurm_cluster.partition}",
        "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        *FAST,
        "head=linear,mlp",
        f"hydra.sweep.dir={sweep}",
        f"paths.root_dir={tmp_path}",
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # One array element per job; job dirs are <num>_<array job id>_<task>.
    run_dirs = sorted(path for path in sweep.iterdir() if path.is_dir() and not path.name.startswith("."))
    assert [re.sub(r"_\d+_", "_<id>_", path.name) for path in run_dirs] == ["0_<id>_0", "1_<id>_1"]
    metrics = [read_metrics(path) for path in run_dirs]
    assert [m["status"] for m in metrics] == ["completed", "completed"]
    assert ["head=linear" in m["overrides"] for m in metrics] == [True, False]
    assert "head=mlp" in metrics[1]["overrides"]
