"""hydrahead-compare: a real 2x2 multirun (in process, tiny BERT) plus fabricated job directories."""

from __future__ import annotations

import csv
import json
import shutil
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import FAST, run_train
from hydrahead.cli.compare import main
from hydrahead.compare import collect_runs, compare, run_compare

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """``hydrahead-train -m head=linear,mlp seed=0,1`` (FAST): jobs 0..3."""
    path = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        run_train([*FAST, "export=false", "head=linear,mlp", "seed=0,1"], path, mp, multirun=True)
    return path


def copy_sweep(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "comparison.*"))
    return dst


def job_metrics(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def fabricate_job(
    job: Path,
    overrides: list[str],
    status: str | None = "completed",
    metrics: dict | None = None,
    config: dict | None = None,
    **payload,
) -> Path:
    """A job directory as the runner leaves it (status None: .hydra/ only, no metrics.json yet)."""
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = config or {"task": {"monitor": "val/acc", "mode": "max"}, "seed": 0}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if status is not None:
        body = {"status": status, "monitor": "val/acc", "metrics": metrics or {}, **payload}
        (job / "metrics.json").write_text(json.dumps(body))
    return job


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def markdown_rows(path: Path) -> list[list[str]]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_multirun_grouped_by_head_with_mean_std_over_seeds(sweep, tmp_path, capsys):
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "head" in out and "linear" in out and "mlp" in out
    for name in ("comparison.csv", "comparison.md", "comparison.png"):
        assert (sweep / name).is_file(), name

    jobs = {job: job_metrics(sweep / job) for job in "0123"}
    heads = {job: yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text()) for job in "0123"}
    by_head: dict[str, list[dict]] = {}
    for job, metrics in jobs.items():
        head = next(o.split("=")[1] for o in heads[job] if o.startswith("head="))
        by_head.setdefault(head, []).append(metrics["metrics"])

    rows = read_csv(sweep / "comparison.csv")
    assert [r["head"] for r in rows] != [] and {r["head"] for r in rows} == {"linear", "mlp"}
    assert set(rows[0]) >= {"metric", "head", "mean", "std", "n", "failed", "running"}
    for row in rows:
        assert row["metric"] == "val/acc" and row["n"] == "2" and row["failed"] == row["running"] == "0"
        values = [m["val/acc"] for m in by_head[row["head"]]]
        assert float(row["mean"]) == pytest.approx(statistics.fmean(values))
        assert float(row["std"]) == pytest.approx(statistics.stdev(values))
        assert row["seeds"] == "0 1"

    md = markdown_rows(sweep / "comparison.md")
    means = [float(r[1]) for r in md]
    assert means == sorted(means, reverse=True)  # task.mode=max: best first

    png = (sweep / "comparison.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    import matplotlib.image

    image = matplotlib.image.imread(sweep / "comparison.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    # Another metric: a loss sorts ascending; the numbers are the seeds' sample mean and std.
    comp = run_compare([sweep], metric="val/loss", out=tmp_path, show=False)
    assert comp.keys == ["head"] and comp.plot_kind == "bar" and not comp.descending
    assert [r["mean"] for r in comp.rows] == sorted(r["mean"] for r in comp.rows)
    for row in comp.rows:
        values = [m["val/loss"] for m in by_head[row["keys"]["head"]]]
        assert row["mean"] == pytest.approx(statistics.fmean(values))
        assert row["std"] == pytest.approx(statistics.stdev(values))


def test_by_overrides_the_detected_keys(sweep, tmp_path):
    comp = run_compare([sweep], by=["seed"], out=tmp_path, show=False)
    assert comp.keys == ["seed"] and {r["keys"]["seed"]: r["n"] for r in comp.rows} == {"0": 2, "1": 2}
    comp = run_compare([sweep], by=["head", "seed"], out=tmp_path, show=False)
    assert len(comp.rows) == 4 and all(r["n"] == 1 and r["std"] is None for r in comp.rows)
    assert all(r["std"] == "" and r["n"] == "1" for r in read_csv(tmp_path / "comparison.csv"))  # n=1: no std
    # a key nobody overrode comes from the config: one group of all four
    assert main([str(sweep), "--by", "backbone.freeze", "--out", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "comparison.csv")
    assert [(r["backbone.freeze"], r["n"]) for r in rows] == [("false", "4")]


def test_two_sweeps_at_once(sweep, tmp_path):
    # B: the same heads with another learning rate (constant within each sweep, different between them;
    # A's is the tiny encoders' default, 0.01)
    b = copy_sweep(sweep, tmp_path / "many" / "B")
    for job in "0123":
        overrides = yaml.safe_load((b / job / ".hydra" / "overrides.yaml").read_text())
        (b / job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, "optimizer.lr=0.003"]))
        payload = job_metrics(b / job)
        payload["metrics"]["val/acc"] += 0.5
        (b / job / "metrics.json").write_text(json.dumps(payload))
    comp = run_compare([sweep, b], out=tmp_path / "ab", show=False)
    assert comp.keys == ["head", "optimizer.lr"]
    assert sorted((r["keys"]["head"], r["keys"]["optimizer.lr"], r["n"]) for r in comp.rows) == [
        ("linear", "0.003", 2),
        ("linear", "0.01", 2),
        ("mlp", "0.003", 2),
        ("mlp", "0.01", 2),
    ]
    assert all(r["keys"]["optimizer.lr"] == "0.003" for r in comp.rows[:2])  # +0.5: the best two
    assert comp.plot_kind == "line"  # numeric axis (lr), one line per head
    assert (tmp_path / "ab" / "comparison.png").read_bytes().startswith(PNG_SIGNATURE)
    assert len(comp.sweeps) == 2 and "B" in (tmp_path / "ab" / "comparison.md").read_text().splitlines()[0]

    # C: the same configs with more seeds: pooled, n=4 per head
    c = copy_sweep(sweep, tmp_path / "many" / "C")
    for job in "0123":
        path = c / job / ".hydra" / "overrides.yaml"
        path.write_text(path.read_text().replace("seed=0", "seed=2").replace("seed=1", "seed=3"))
    comp = run_compare([sweep, c], out=tmp_path / "ac", show=False)
    assert comp.keys == ["head"] and [r["n"] for r in comp.rows] == [4, 4]
    assert comp.rows[0]["seeds"] == ["0", "1", "2", "3"]
    assert run_compare([sweep, c], by=["sweep"], out=tmp_path / "ac", show=False).keys == ["sweep"]

    # A parent directory is searched recursively, but never inside a job directory.
    decoy = fabricate_job(b / "0" / "reproductions" / "x", ["head=decoy"], metrics={"val/acc": 9.0})
    assert decoy.is_dir()
    runs = collect_runs([tmp_path / "many"])
    assert len(runs) == 8 and not any("reproductions" in r["dir"] for r in runs)


def test_failed_killed_running_and_pending_jobs_are_counted(sweep, tmp_path, capsys):
    s = copy_sweep(sweep, tmp_path / "sweep")
    here = socket.gethostname()
    fabricate_job(s / "4", ["head=mlp", "seed=2"], "failed", error="RuntimeError: boom")
    fabricate_job(
        s / "5",
        ["head=mlp", "seed=3"],
        "running",
        host=here,
        pid=dead_pid(),
        started="2026-01-01T00:00:00+0000",
    )
    fabricate_job(s / "6", ["head=mlp", "seed=4"], "running", host=here, pid=__import__("os").getpid())
    fabricate_job(s / "7", ["head=linear", "seed=2"], None)  # .hydra/ only: pending
    fabricate_job(s / "8", ["head=linear", "seed=3"], "running", host="elsewhere.example", pid=1)
    (s / "9").mkdir()
    (s / "9" / "metrics.json").write_text("{not json")  # corrupt: failed, not a crash

    runs = {Path(r["dir"]).name: r for r in collect_runs([s])}
    assert runs["5"]["status"] == "failed" and runs["5"].get("killed") and "killed" in runs["5"]["error"]
    assert runs["6"]["status"] == "running"  # this very process: alive
    assert runs["7"]["status"] == "pending"
    assert runs["8"]["status"] == "running"  # another host: not judged
    assert runs["9"]["status"] == "failed"

    assert main([str(s)]) == 0
    out = capsys.readouterr().out
    assert "killed" in out and "boom" in out
    rows = {r["head"]: r for r in read_csv(s / "comparison.csv")}
    assert (rows["mlp"]["n"], rows["mlp"]["failed"], rows["mlp"]["running"]) == ("2", "2", "1")
    assert (rows["linear"]["n"], rows["linear"]["failed"], rows["linear"]["running"]) == ("2", "0", "2")
    assert rows["?"]["failed"] == "1" and rows["?"]["n"] == "0"  # the unreadable job has no overrides
    md = (s / "comparison.md").read_text()
    assert "killed" in md and "pending" in md
    # the mean is over completed jobs only
    values = [
        job_metrics(s / j)["metrics"]["val/acc"]
        for j in "0123"
        if "head=mlp" in (s / j / ".hydra" / "overrides.yaml").read_text()
    ]
    assert float(rows["mlp"]["mean"]) == pytest.approx(statistics.fmean(values))


def test_sweep_in_progress_and_empty_dirs(tmp_path, capsys):
    s = tmp_path / "sweep"
    fabricate_job(s / "0", ["head=linear", "seed=0"], None)
    fabricate_job(s / "1", ["head=mlp", "seed=0"], "running", host="elsewhere.example", pid=1)
    assert main([str(s)]) == 0  # nothing completed yet: still a table (and a plot saying so)
    assert [(r["head"], r["n"], r["running"]) for r in read_csv(s / "comparison.csv")] == [
        ("linear", "0", "1"),
        ("mlp", "0", "1"),
    ]
    assert (s / "comparison.png").read_bytes().startswith(PNG_SIGNATURE)

    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no runs" in capsys.readouterr().err
    assert main([str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_unknown_metric_is_a_clear_error(tmp_path, capsys):
    fabricate_job(tmp_path / "0", ["head=linear"], metrics={"val/acc": 0.5, "test/acc": 0.4})
    assert main([str(tmp_path), "--metric", "val/nope"]) == 2
    err = capsys.readouterr().err
    assert "val/nope" in err and "test/acc" in err
    comp = compare(collect_runs([tmp_path]), "test/acc")
    assert comp.rows[0]["mean"] == 0.4 and comp.descending


def test_numeric_axis_gives_a_line_plot(tmp_path):
    for layer in range(4):
        for seed in (0, 1):
            config = {"task": {"monitor": "val/acc", "mode": "max"}, "seed": seed, "head": {"layer": layer}}
            fabricate_job(
                tmp_path / f"{layer * 2 + seed}",
                ["head=intermediate", f"head.layer={layer}", f"seed={seed}"],
                metrics={"val/acc": 0.5 + 0.1 * layer + 0.01 * seed},
                config=config,
            )
    comp = run_compare([tmp_path], show=False)
    assert comp.keys == ["head.layer"] and comp.plot_kind == "line"
    assert [r["keys"]["head.layer"] for r in comp.rows] == ["3", "2", "1", "0"]
    for row in comp.rows:
        layer = int(row["keys"]["head.layer"])
        expected = [0.5 + 0.1 * layer, 0.5 + 0.1 * layer + 0.01]
        assert row["mean"] == pytest.approx(statistics.fmean(expected))
        assert row["std"] == pytest.approx(statistics.stdev(expected))
    assert (tmp_path / "comparison.png").read_bytes().startswith(PNG_SIGNATURE)
    # min mode: the monitor sorts ascending
    for job in tmp_path.glob("*/.hydra/config.yaml"):
        job.write_text(job.read_text().replace("mode: max", "mode: min"))
    comp = run_compare([tmp_path], show=False)
    assert [r["keys"]["head.layer"] for r in comp.rows] == ["0", "1", "2", "3"]


def test_calibration_columns_sit_beside_the_metric(tmp_path):
    sweep = tmp_path / "cal"
    values = {"head=linear": (0.8, 0.10, 0.05), "head=mlp": (0.9, 0.30, 0.04)}
    for i, (override, (acc, ece, calibrated)) in enumerate(values.items()):
        for seed in (0, 1):
            metrics = {
                "val/acc": acc,
                "val/ece": ece + seed / 100,
                "val/brier": 0.2,
                "val/ece_calibrated": calibrated,
            }
            fabricate_job(sweep / f"{i}{seed}", [override, f"seed={seed}"], metrics=metrics)
    comp = compare(collect_runs([sweep]))
    assert comp.extras == ["val/ece", "val/brier", "val/ece_calibrated"]
    linear = next(r for r in comp.rows if r["keys"]["head"] == "linear")
    assert linear["extras"]["val/ece"] == pytest.approx(0.105)
    assert linear["extras"]["val/ece_calibrated"] == pytest.approx(0.05)
    run_compare([sweep])
    with open(sweep / "comparison.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["val/ece"]) for r in rows] == pytest.approx([0.305, 0.105])  # sorted by val/acc


def test_cancelled_and_requeued_jobs_are_shown_with_their_status(tmp_path, capsys):
    from hydrahead.rundir import mark_cancelled

    s = tmp_path / "slurm"
    fabricate_job(s / "0_7_0", ["head=linear", "seed=0"], metrics={"val/acc": 0.8})
    fabricate_job(s / "1_7_1", ["head=linear", "seed=1"], "failed", error="RuntimeError: stopped by SIGTERM")
    mark_cancelled(s / "1_7_1", "scancel: SLURM job 7_1 was cancelled")
    fabricate_job(s / "2_7_2", ["head=mlp", "seed=0"], "requeued", attempt=2)
    fabricate_job(s / "3_7_3", ["head=mlp", "seed=1"], metrics={"val/acc": 0.9})
    comp = run_compare([s], out=tmp_path / "out")
    rows = {r["keys"]["head"]: r for r in comp.rows}
    assert (rows["linear"]["n"], rows["linear"]["failed"], rows["linear"]["running"]) == (1, 1, 0)
    assert (rows["mlp"]["n"], rows["mlp"]["failed"], rows["mlp"]["running"]) == (1, 0, 1)  # may complete
    out = capsys.readouterr().out
    assert (
        f"cancelled: {s / '1_7_1'} — scancel: SLURM job 7_1 was cancelled" in out
    )  # the reason, not SIGTERM
    assert f"requeued: {s / '2_7_2'} — attempt 2, waiting in the queue to run again" in out
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert "- cancelled: " in md and "- requeued: " in md
