"""The hydrahead-selftest command."""

from __future__ import annotations

import torch

from hydrahead.cli import selftest


def test_selftest_linear_preset_passes_and_prints_the_table(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich: no wrapping inside cells
    assert selftest.main(["--preset", "linear"]) == 0
    out = capsys.readouterr().out
    assert "hydrahead self-test on tiny:bert" in out
    for word in ("linear", "multiclass", "multilabel", "sequence", "token", "positions"):
        assert word in out
    assert out.count(" ok ") == 6
    assert "FAIL" not in out


def test_selftest_reports_a_failure_with_exit_code_1(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("forced failure")

    monkeypatch.setattr(selftest, "check_one", broken)
    monkeypatch.setenv("COLUMNS", "200")
    assert selftest.main(["--preset", "linear"]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out
    assert "RuntimeError: forced failure" in captured.out
    assert "FAILED" in captured.err


def test_selftest_rows_cover_presets_tasks_and_levels(tmp_path):
    rows = selftest.run("tiny:bert", ["mask_gather"], out_dir=str(tmp_path))
    assert {(r["task"], r["level"]) for r in rows} == {
        (t, lv) for t in selftest.TASKS for lv in selftest.LEVELS
    }
    by_level = {(r["task"], r["level"]): r for r in rows}
    # mask_gather needs positions: the other levels are skipped, not failed.
    assert by_level[("multiclass", "sequence")]["status"] == "n/a"
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["level"] for r in ok} == {"positions"}
    assert all(r["reload"].startswith("hydrahead 0.0e+00") for r in ok)
    assert (tmp_path / "mask_gather-multiclass-positions" / "model.safetensors").is_file()


def test_synthetic_batch_shapes():
    tokenizer = __import__("hydrahead").tiny_tokenizer("bert")
    generator = torch.Generator().manual_seed(0)
    for task in selftest.TASKS:
        for level in selftest.LEVELS:
            batch = selftest.synthetic_batch(tokenizer, task, level, generator)
            B, T = batch["input_ids"].shape
            prefix = {"sequence": (B,), "token": (B, T), "positions": (B, 3)}[level]
            expected = prefix if task == "multiclass" else (*prefix, selftest.NUM_LABELS)
            assert tuple(batch["labels"].shape) == expected
            assert ("mask_indices" in batch) == (level == "positions")
