"""Configs are found from a built wheel, not only from the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_carries_configs_and_experiments(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp_path / "dist")],
        check=True,
        capture_output=True,
        timeout=600,
    )
    wheel = next((tmp_path / "dist").glob("hydrahead-*.whl"))
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    assert (unpacked / "hydrahead" / "conf" / "train.yaml").is_file()
    assert (unpacked / "hydrahead" / "conf" / "experiment" / "head_comparison.yaml").is_file()
    assert (unpacked / "hydrahead" / "modeling" / "head_spec.py").is_file()  # exports copy it
    env = {**os.environ, "PYTHONPATH": str(unpacked), "HYDRAHEAD_ROOT": str(tmp_path / "root")}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import hydrahead.utils.paths as p; print(p.__file__, p.config_dir(), p.experiments_dir())",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.stdout.split() == [
        str(unpacked / "hydrahead" / "utils" / "paths.py"),
        str(unpacked / "hydrahead" / "conf"),
        str(unpacked / "hydrahead" / "conf" / "experiment"),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "hydrahead.cli.train", "experiment=head_comparison", "--cfg", "job"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "freeze: true" in proc.stdout
