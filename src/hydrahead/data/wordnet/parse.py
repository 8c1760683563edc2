"""Parsing WordNet's dictionary files: synsets, glosses, sense keys, exception lists; :func:`load`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .sources import POS_FILES, REQUIRED, Source, SourceNotFound, source_from_path

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
_GLOSS_MARKS = re.compile(r'[()"]')
MARKER = re.compile(r"\((?:a|p|ip)\)$")


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
