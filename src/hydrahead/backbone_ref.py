"""What a head-only checkpoint says about the frozen backbone it sits on, and the check that it still does.

A frozen run keeps only its head; the backbone is rebuilt from its source when the model is
exported. The reference pins that source: a local directory (or the embedded MiniLM) by the
SHA-256 of each weight file, a hub id by the commit it resolved to, a random encoder (``tiny:*``,
``backbone.pretrained=false``) by its init seed. :func:`check_backbone_reference` refuses a source
that no longer holds the recorded weights.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from hydrahead.backbones import is_tiny, resolve_name_or_path
from hydrahead.config.schema import BackboneConfig, ConfigError
from hydrahead.data.cache import digest, file_digest

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".h5")


@functools.lru_cache(maxsize=64)
def _stat_keyed_digest(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(path)


def weight_file_digests(folder: str | Path) -> dict[str, str]:
    """``{file name: SHA-256}`` of the weight files directly in ``folder``.

    Remembered per (path, size, mtime) within a process: the jobs of a sweep hash a backbone once.
    """
    files = sorted(p for p in Path(folder).glob("*") if p.suffix in WEIGHT_SUFFIXES)
    digests = {}
    for path in files:
        stat = path.stat()
        digests[path.name] = _stat_keyed_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return digests


def weights_digest(folder: str | Path) -> str | None:
    """One digest of all weight files in ``folder`` (None when it has none): the feature cache keys by it."""
    files = weight_file_digests(folder)
    return digest(files) if files else None


def _hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit ``revision`` of ``repo_id`` resolves to in the local HF cache; never touches the network."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # an id the hub client rejects, or no hub client: nothing known
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def backbone_reference(bb: BackboneConfig, seed: int) -> dict:
    """What pins a frozen backbone's weights (plain data, stored in the checkpoint as ``backbone_ref``).

    Keys: ``name_or_path``, ``revision``, and one of ``random_init_seed`` (tiny or
    ``pretrained=false``), ``path`` + ``files`` (a local dir or the embedded MiniLM: the resolved
    directory and the SHA-256 of each weight file), or ``commit`` (a hub id; None when the local HF
    cache does not know it).
    """
    name = str(bb.name_or_path)
    ref: dict = {"name_or_path": name, "revision": bb.revision}
    if is_tiny(name) or not bb.pretrained:
        ref["random_init_seed"] = int(bb.weights_seed(seed))
        return ref
    resolved = resolve_name_or_path(name)
    if Path(resolved).is_dir():
        ref["path"] = resolved
        ref["files"] = weight_file_digests(resolved)
    else:
        ref["commit"] = _hub_commit(resolved, bb.revision)
    return ref


def backbone_config_of(config: dict) -> BackboneConfig:
    """The ``backbone`` group of a saved run config (a plain dict) as a :class:`BackboneConfig`.

    Keys the schema does not know (a config from another hydrahead version) are left out.
    """
    group = config.get("backbone")
    if not isinstance(group, dict):
        raise ConfigError("the saved run config has no backbone group: not a hydrahead run config")
    known = {f.name for f in dataclasses.fields(BackboneConfig)}
    return BackboneConfig(**{k: v for k, v in group.items() if k in known})


def run_backbone_reference(config: dict) -> dict:
    """:func:`backbone_reference` from a resolved run config dict (``hparams``: ``backbone`` and ``seed``)."""
    return backbone_reference(backbone_config_of(config), int(config.get("seed", 0)))


def check_backbone_reference(ref: dict) -> None:
    """Raise ConfigError (one line, naming the file and both digests) if the weights ``ref`` names changed.

    Every file is hashed anew. A random encoder and a hub commit cannot change (the export rebuilds
    at that seed or commit).
    """
    if "files" not in ref:
        return
    name, folder = ref.get("name_or_path"), Path(ref["path"])
    if not folder.is_dir():
        raise ConfigError(
            f"backbone {name!r}: its directory {folder} is gone; the frozen backbone cannot be rebuilt"
        )
    recorded = ref["files"]
    for file_name, old in sorted(recorded.items()):
        path = folder / file_name
        if not path.is_file():
            raise ConfigError(f"backbone {name!r}: weight file {path} is missing (recorded sha256 {old})")
        new = file_digest(path)
        if new != old:
            raise ConfigError(
                f"backbone {name!r}: weight file {path} changed since training "
                f"(sha256 now {new}, recorded {old}); the head was trained on other weights"
            )
    added = sorted(p.name for p in folder.glob("*") if p.suffix in WEIGHT_SUFFIXES and p.name not in recorded)
    if added:
        raise ConfigError(
            f"backbone {name!r}: weight file {folder / added[0]} was added since training "
            f"(recorded only {sorted(recorded) or 'none'}); the weights may have changed"
        )
