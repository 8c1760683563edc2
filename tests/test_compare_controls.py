"""hydrahead-compare with control tasks (selectivity), the majority baseline and MDL metrics:
fabricated job directories only (no training), so it stays fast."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from hydrahead.cli.compare import main
from hydrahead.compare import (
    CONTROL_CSV_COLUMNS,
    CompareError,
    baseline_text,
    collect_runs,
    compare,
    lower_is_better,
    run_compare,
)
from test_compare import PNG_SIGNATURE, fabricate_job, markdown_rows, read_csv

REAL_MAJORITY = {"val/acc": 0.31, "test/acc": 0.30, "label": "noun.act"}
CONTROL_MAJORITY = {"val/acc": 0.2, "test/acc": 0.21, "label": "noun.state"}


def job(
    path: Path,
    layer: int,
    seed: int,
    control: bool | None = False,
    hidden: list[int] | None = None,
    status: str | None = "completed",
    metrics: dict | None = None,
    baselines: dict | None = None,
    **payload,
) -> Path:
    """A probing job: ``head.layer``, ``head.hidden_layers``, ``task.control`` (None: not overridden,
    false in the config), ``seed``; the config says what the overrides say."""
    hidden = hidden or []
    overrides = [f"head.layer={layer}", f"head.hidden_layers={hidden}".replace(" ", "")]
    overrides += [] if control is None else [f"task.control={str(control).lower()}"]
    overrides += [f"seed={seed}"]
    config = {
        "task": {
            "monitor": "val/acc",
            "mode": "max",
            "control": bool(control),
            "control_seed": 0,
            "mdl": None,
        },
        "head": {"layer": layer, "hidden_layers": hidden},
        "seed": seed,
    }
    if baselines is not None:
        payload["baselines"] = baselines
    if control:
        payload["control"] = {"seed": 0, "types": 1234}
    return fabricate_job(path, overrides, status, metrics=metrics, config=config, **payload)


def real_acc(layer: int, hidden: list[int], seed: int) -> float:
    return 0.5 + 0.1 * layer + (0.05 if hidden else 0.0) + 0.01 * seed


def control_acc(layer: int, hidden: list[int], seed: int) -> float:
    return 0.3 + 0.02 * layer + (0.1 if hidden else 0.0) + 0.03 * seed


HEADS = ([], [256])


@pytest.fixture
def probes(tmp_path) -> Path:
    """2 layers x 2 heads x task.control={false,true} x 2 seeds, all completed, with baselines."""
    sweep = tmp_path / "probes"
    num = 0
    for layer in (1, 2):
        for hidden in HEADS:
            for control in (False, True):
                for seed in (0, 1):
                    acc = (control_acc if control else real_acc)(layer, hidden, seed)
                    baseline = CONTROL_MAJORITY if control else REAL_MAJORITY
                    job(
                        sweep / str(num),
                        layer,
                        seed,
                        control,
                        hidden,
                        metrics={"val/acc": acc, "test/acc": acc - 0.01},
                        baselines={"majority": baseline},
                    )
                    num += 1
    return sweep


def test_selectivity_per_row(probes, capsys):
    assert main([str(probes)]) == 0
    out = capsys.readouterr().out
    assert "selectivity" in out
    printed = next(line for line in out.splitlines() if "majority" in line and "noun.act" in line)
    assert "0.3100" in printed and "0.2000" in printed  # the printed table's last row

    comp = compare(collect_runs([probes]))
    assert comp.controls and comp.keys == ["head.layer", "head.hidden_layers"] and len(comp.rows) == 4
    assert comp.unpaired == []
    for row in comp.rows:
        layer, hidden = row["raw"]["head.layer"], row["raw"]["head.hidden_layers"]
        real = [real_acc(layer, hidden, s) for s in (0, 1)]
        control = [control_acc(layer, hidden, s) for s in (0, 1)]
        selectivity = [r - c for r, c in zip(real, control)]
        assert (row["n"], row["pairs"], row["real_n"], row["control_n"], row["unpaired"]) == (2, 2, 2, 2, 0)
        assert row["mean"] == pytest.approx(statistics.fmean(real))
        assert row["std"] == pytest.approx(statistics.stdev(real))
        assert row["control_mean"] == pytest.approx(statistics.fmean(control))
        assert row["control_std"] == pytest.approx(statistics.stdev(control))
        assert row["selectivity_mean"] == pytest.approx(statistics.fmean(selectivity))
        assert row["selectivity_std"] == pytest.approx(statistics.stdev(selectivity))
        assert row["seeds"] == ["0", "1"]
    # by hand, layer 2 with the MLP: real 0.75, 0.76; control 0.44, 0.47; selectivity 0.31, 0.29
    best = comp.rows[0]
    assert (best["keys"]["head.layer"], best["keys"]["head.hidden_layers"]) == ("2", "[256]")
    assert best["selectivity_mean"] == pytest.approx(0.30)
    assert best["selectivity_std"] == pytest.approx(0.01 * 2**0.5)
    assert [r["mean"] for r in comp.rows] == sorted((r["mean"] for r in comp.rows), reverse=True)

    rows = read_csv(probes / "comparison.csv")
    assert list(rows[0]) == [
        "metric",
        "head.layer",
        "head.hidden_layers",
        *CONTROL_CSV_COLUMNS,
        "missing",
        "seeds",
        "majority",
        "control_majority",
    ]
    assert len(rows) == 4  # the baseline is no group: columns on every row
    for csv_row, row in zip(rows, comp.rows):
        assert csv_row["head.layer"] == row["keys"]["head.layer"]
        for column, key in (
            ("real_mean", "mean"),
            ("real_std", "std"),
            ("control_mean", "control_mean"),
            ("selectivity_mean", "selectivity_mean"),
            ("selectivity_std", "selectivity_std"),
        ):
            assert float(csv_row[column]) == row[key]  # full precision
        assert (csv_row["pairs"], csv_row["unpaired"], csv_row["failed"], csv_row["running"]) == (
            "2",
            "0",
            "0",
            "0",
        )
        assert (float(csv_row["majority"]), float(csv_row["control_majority"])) == (0.31, 0.2)
    # the majority baseline: real and control task's, no selectivity, never sorted
    b = comp.baseline
    assert (b["keys"], b["mean"], b["control_mean"], b["real_n"], b["control_n"]) == (
        {"head.layer": "majority", "head.hidden_layers": "-"},
        0.31,
        0.2,
        8,
        8,
    )
    assert b["selectivity_mean"] is None and b["label"] == "'noun.act'" and b not in comp.rows

    md = markdown_rows(probes / "comparison.md")
    assert len(md) == 4
    assert md[0][:8] == ["2", "[256]", "0.7550", "0.0071", "0.4550", "0.0212", "0.3000", "0.0141"]
    text = (probes / "comparison.md").read_text()
    assert "selectivity" in text and "Not paired" not in text
    assert (
        "Baseline, not a job: always predicting train's majority class 'noun.act' scores val/acc 0.3100 "
        "(8 real jobs); on the control task 0.2000 (8 control jobs)." in text
    )
    assert (probes / "comparison.png").read_bytes().startswith(PNG_SIGNATURE)

    # --sort selectivity: the layer-2 linear probe (0.36, 0.34) is the most selective
    comp = run_compare([probes], sort="selectivity", show=False)
    assert comp.plot_kind == "line"
    assert [r["selectivity_mean"] for r in comp.rows] == sorted(
        (r["selectivity_mean"] for r in comp.rows), reverse=True
    )
    assert (comp.rows[0]["keys"]["head.layer"], comp.rows[0]["keys"]["head.hidden_layers"]) == ("2", "[]")
    assert comp.rows[0]["selectivity_mean"] == pytest.approx(0.35)
    # grouping by task.control as well: the plain table, one row per kind
    comp = compare(collect_runs([probes]), by=["head.layer", "task.control"])
    assert not comp.controls and len(comp.rows) == 4 and all(r["n"] == 4 for r in comp.rows)


def test_unpaired_jobs_are_listed_with_their_reason(tmp_path, capsys):
    s = tmp_path / "s"
    ok = {"val/acc": 0.8}
    job(s / "0", 1, 0, False, metrics=ok)
    job(s / "1", 1, 0, True, metrics={"val/acc": 0.5})  # pair: selectivity 0.3
    job(s / "2", 1, 1, False, metrics=ok)  # no control twin
    job(s / "3", 1, 2, False, metrics={"val/acc": 0.7})
    job(s / "4", 1, 2, True, status="failed", error="RuntimeError: boom")  # its control twin failed
    job(s / "5", 1, 3, True, metrics={"val/acc": 0.4})  # no real twin
    job(s / "6", 1, 4, False, metrics=ok)
    job(s / "7", 1, 4, True, status="running", host="elsewhere.example", pid=1)  # twin still running
    job(s / "8", 2, 0, False, metrics={"val/acc": 0.9})
    job(s / "9", 2, 0, True, metrics={"val/acc": 0.45})

    assert main([str(s)]) == 0
    out = capsys.readouterr().out
    assert "not paired" in out and "boom" in out
    comp = compare(collect_runs([s]))
    rows = {r["keys"]["head.layer"]: r for r in comp.rows}
    one = rows["1"]
    assert (one["pairs"], one["n"], one["real_n"], one["control_n"]) == (1, 1, 4, 2)
    assert (one["unpaired"], one["failed"], one["running"]) == (4, 1, 1)
    assert one["selectivity_mean"] == pytest.approx(0.3) and one["selectivity_std"] is None
    assert one["mean"] == pytest.approx(statistics.fmean([0.8, 0.8, 0.7, 0.8]))  # every completed real job
    assert one["control_mean"] == pytest.approx(statistics.fmean([0.5, 0.4]))
    assert (rows["2"]["pairs"], rows["2"]["unpaired"]) == (1, 0)

    reasons = {Path(line.split(": ", 1)[1].split(" — ")[0]).name: line for line in comp.unpaired}
    assert set(reasons) == {"2", "3", "5", "6"}
    assert reasons["2"].startswith("real:") and reasons["2"].endswith("no control twin")
    assert reasons["3"].endswith(f"control twin failed: {s / '4'}")
    assert reasons["5"].startswith("control:") and reasons["5"].endswith("no real twin")
    assert reasons["6"].endswith(f"control twin running: {s / '7'}")

    csv_rows = {r["head.layer"]: r for r in read_csv(s / "comparison.csv")}
    assert (csv_rows["1"]["pairs"], csv_rows["1"]["unpaired"]) == ("1", "4")
    md = (s / "comparison.md").read_text()
    assert "Not paired" in md and all(line in md for line in comp.unpaired)
    assert "Not completed" in md and "boom" in md


def test_twins_have_the_same_seed_and_may_come_from_other_sweeps(tmp_path):
    s = tmp_path / "seeds"
    job(s / "0", 3, 0, False, metrics={"val/acc": 0.8})
    job(s / "1", 3, 1, True, metrics={"val/acc": 0.4})
    job(s / "2", 4, 0, False, metrics={"val/acc": 0.8})
    comp = compare(collect_runs([s]))
    row = next(r for r in comp.rows if r["keys"]["head.layer"] == "3")
    assert (row["pairs"], row["unpaired"], row["selectivity_mean"]) == (0, 2, None)
    assert sorted(line.rsplit(" — ", 1)[1] for line in comp.unpaired) == [
        "no control twin",
        "no control twin",
        "no real twin",
    ]

    # a real sweep that never overrides task.control (false in its config) and a control sweep
    real, control = tmp_path / "real", tmp_path / "control"
    for seed in (0, 1):
        job(real / str(seed), 5, seed, None, metrics={"val/acc": 0.9 - 0.01 * seed})
        job(control / str(seed), 5, seed, True, metrics={"val/acc": 0.5 + 0.01 * seed})
    comp = compare(collect_runs([real, control]))
    assert comp.controls and comp.keys == [] and len(comp.rows) == 1
    assert comp.rows[0]["pairs"] == 2 and comp.rows[0]["selectivity_mean"] == pytest.approx(0.39)
    assert comp.rows[0]["selectivity_std"] == pytest.approx(statistics.stdev([0.4, 0.38]))


def test_majority_class_row(tmp_path, capsys):
    s = tmp_path / "heads"
    for num, (head, seed) in enumerate([("linear", 0), ("linear", 1), ("mlp", 0), ("mlp", 1)]):
        fabricate_job(
            s / str(num),
            [f"head={head}", f"seed={seed}"],
            metrics={"val/acc": 0.6 + 0.1 * (head == "mlp"), "test/acc": 0.59 + 0.1 * (head == "mlp")},
            baselines={"majority": REAL_MAJORITY},
        )
    assert main([str(s), "--metric", "test/acc"]) == 0
    out = capsys.readouterr().out.splitlines()
    # printed: the groups in metric order, then the baseline row (below a line), never sorted
    printed = [line.split()[1] for line in out if line.startswith("│")]
    assert printed == ["mlp", "linear", "majority"]
    assert "0.3000" in next(line for line in out if "│ majority" in line)
    rows = read_csv(s / "comparison.csv")
    header = ["metric", "head", "mean", "std", "n", "failed", "running", "missing", "seeds", "majority"]
    assert list(rows[0]) == header
    assert [r["head"] for r in rows] == ["mlp", "linear"] and all(float(r["majority"]) == 0.30 for r in rows)
    md = markdown_rows(s / "comparison.md")
    assert [r[0] for r in md] == ["mlp", "linear"]
    text = (s / "comparison.md").read_text()
    assert "majority class 'noun.act' scores test/acc 0.3000 (4 real jobs)." in text
    assert (s / "comparison.png").read_bytes().startswith(PNG_SIGNATURE)

    # jobs on different data disagree: the mean, and a note saying so
    fabricate_job(
        s / "4", ["head=mlp", "seed=2"], metrics={"val/acc": 0.7}, baselines={"majority": {"val/acc": 0.41}}
    )
    comp = compare(collect_runs([s]))
    assert comp.baseline["mean"] == pytest.approx(statistics.fmean([0.31] * 4 + [0.41]))
    assert comp.baseline["n"] == 5 and "differ (0.3100-0.4100)" in comp.baseline["note"]
    assert "0.3300 (5 real jobs; the jobs differ (0.3100-0.4100): mean shown)" in baseline_text(comp)

    # no baselines (a multilabel task, an older run): no majority row
    t = tmp_path / "plain"
    fabricate_job(t / "0", ["head=linear"], metrics={"val/acc": 0.5})
    fabricate_job(t / "1", ["head=mlp"], metrics={"val/acc": 0.6})
    comp = run_compare([t], show=False)
    assert comp.baseline is None and not comp.controls
    assert [r["head"] for r in read_csv(t / "comparison.csv")] == ["mlp", "linear"]
    assert "not a job" not in (t / "comparison.md").read_text()
    assert markdown_rows(t / "comparison.md")[0] == ["mlp", "0.6000", "", "1", "0", "0", "0"]
    lines = (t / "comparison.md").read_text().splitlines()
    assert "| head | val/acc mean | std | n | failed | running | seeds |" in lines


def test_mdl_metrics_sort_by_their_direction(tmp_path, capsys):
    for num, (layer, kbits) in enumerate([(1, 30.0), (2, 12.0), (3, 20.0)]):
        fabricate_job(
            tmp_path / str(num),
            [f"head.layer={layer}"],
            metrics={"val/acc": 0.5, "mdl/online_kbits": kbits, "mdl/compression": 60.0 / kbits},
        )
    runs = collect_runs([tmp_path])
    comp = compare(runs, "mdl/online_kbits")
    assert not comp.descending and [r["keys"]["head.layer"] for r in comp.rows] == ["2", "3", "1"]
    comp = compare(runs, "mdl/compression")
    assert comp.descending and [r["keys"]["head.layer"] for r in comp.rows] == ["2", "3", "1"]
    assert all(
        lower_is_better(m) for m in ("val/loss", "mdl/online_kbits", "val/ece", "test/brier", "val/nll")
    )
    assert not any(
        lower_is_better(m) for m in ("val/acc", "mdl/compression", "val/precision", "test/f1_macro")
    )

    # --sort selectivity without control jobs: a clear error
    assert main([str(tmp_path), "--sort", "selectivity"]) == 2
    assert "control" in capsys.readouterr().err
    with pytest.raises(CompareError):
        compare(runs, sort="selectivity")
