"""Build the offline corpora that data configs name in ``data.prepare`` (WordNet supersenses).

Writes ``<data_dir>/wordnet_{gloss,lemma,examples,tagging}/{train,validation,test}.jsonl`` and a
``stats.json`` each; see :mod:`hydrahead.data.wordnet`. Training calls :func:`ensure_prepared`,
which does nothing when the files are already there; the CLI is :mod:`hydrahead.cli.prepare`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hydrahead.data import wordnet

CORPORA = {"wordnet": wordnet.DATASETS}


def default_data_dir() -> Path:
    """$HYDRAHEAD_DATA_DIR, else ``<project root>/data`` (as ``paths.data_dir`` in the configs)."""
    if os.environ.get("HYDRAHEAD_DATA_DIR"):
        return Path(os.environ["HYDRAHEAD_DATA_DIR"]).expanduser()
    from hydrahead.utils.paths import project_root

    return project_root() / "data"


def _corpus_of(name: str) -> str:
    if name in CORPORA:
        return name
    for corpus, datasets in CORPORA.items():
        if name in datasets:
            return corpus
    known = sorted([*CORPORA, *(d for datasets in CORPORA.values() for d in datasets)])
    raise ValueError(f"unknown corpus {name!r}; hydrahead-prepare knows {known}")


def is_prepared(name: str, data_dir: str | Path) -> bool:
    corpus = _corpus_of(name)
    return all(wordnet.is_complete(Path(data_dir) / dataset) for dataset in CORPORA[corpus])


def ensure_prepared(
    name: str, data_dir: Path, source: str | Path | None = None, force: bool = False, console=None
) -> Path:
    """Build corpus ``name`` (``wordnet``, or one of its datasets such as ``wordnet_gloss``) into
    ``data_dir`` unless all its files exist already (``force`` rebuilds). Returns the dataset's
    directory for a dataset name, ``data_dir`` for a corpus name.

    Raises :class:`hydrahead.data.wordnet.SourceNotFound` when no WordNet can be found.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    corpus = _corpus_of(name)
    result = data_dir / name if name != corpus else data_dir
    if not force and is_prepared(corpus, data_dir):
        return result
    prepare_wordnet(data_dir, source=source, console=console, force=force)
    return result


def prepare_wordnet(
    data_dir: Path, source: str | Path | None = None, console=None, force: bool = True
) -> list[dict]:
    """Parse WordNet, build and write the four datasets; print a summary. Returns their stats.

    Without ``force``, a dataset that is complete by the time it would be written (a concurrent
    run finished it) is left as it is.
    """
    console = console or _console(stderr=True)
    started = time.perf_counter()
    data_dir = Path(data_dir)
    found = wordnet.find_source(data_dir, source)
    console.print(f"[bold]WordNet source:[/bold] {found}")
    wn = wordnet.load(found)
    if not wn.has_lexnames_file:
        console.print("  (no lexnames file: using the built-in lexnames(5WN) table)")
    wordnet.clean_leftovers(data_dir)
    stats = [
        wordnet.write_dataset(dataset, data_dir, wn.source, force=force) for dataset in wordnet.build_all(wn)
    ]
    elapsed = time.perf_counter() - started
    print_summary(stats, console, data_dir, wn.source, elapsed)
    return stats


def print_summary(
    stats: list[dict], console, data_dir: Path, source: str, elapsed: float | None = None
) -> None:
    from rich.table import Table

    table = Table(title=f"Prepared under {data_dir}", title_justify="left")
    for column, justify in (
        ("dataset", "left"),
        ("split", "left"),
        ("size", "right"),
        ("classes", "right"),
        ("majority class", "left"),
        ("maj. acc", "right"),
        ("train-maj. acc", "right"),
        ("dropped", "right"),
    ):
        table.add_column(column, justify=justify)
    for entry in stats:
        for index, split in enumerate(wordnet.SPLITS):
            s = entry["splits"][split]
            majority = s["majority_class"]
            if isinstance(majority, list):
                majority = "{" + ", ".join(majority) + "}"
            table.add_row(
                entry["name"] if index == 0 else "",
                split,
                f"{s['size']:,}",
                str(s["num_classes"]),
                str(majority),
                f"{s['majority_baseline']:.3f}",
                f"{s['train_majority_baseline']:.3f}" if "train_majority_baseline" in s else "-",
                f"{s['dropped_examples']:,}" if "dropped_examples" in s else "",
                end_section=index == len(wordnet.SPLITS) - 1,
            )
    console.print(table)
    lines = [f"source: {source}"]
    for entry in stats:
        if "dropped_examples" in entry:
            lines.append(
                f"{entry['name']}: dropped {entry['dropped_examples']:,} usage example(s) where the synset's "
                f"word was not found ({entry['dropped_fraction']:.1%})"
            )
    if elapsed is not None:
        lines.append(f"done in {elapsed:.1f}s")
    for line in lines:
        console.print(line, highlight=False)


def _console(stderr: bool = False):
    """A rich console; 120 columns when not a terminal (logs, pipes), so the table stays readable."""
    from rich.console import Console

    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=120)
