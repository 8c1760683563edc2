"""Where the shipped configs live: inside the wheel, or at the repository root in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # src/hydrahead


def _shipped(name: str) -> Path:
    packaged = _PACKAGE / name  # a built wheel carries conf/ and experiments/ inside the package
    if packaged.is_dir():
        return packaged
    return _PACKAGE.parents[1] / name  # editable install: src/hydrahead -> repository root


def project_root() -> Path:
    """Where ``outputs/`` and ``data/`` go: $HYDRAHEAD_ROOT, else this checkout, else the launch dir."""
    import os

    if os.environ.get("HYDRAHEAD_ROOT"):
        return Path(os.environ["HYDRAHEAD_ROOT"]).expanduser().resolve()
    checkout = _PACKAGE.parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "conf").is_dir():
        return checkout
    return Path.cwd().resolve()


def config_dir() -> Path:
    """The Hydra config directory (``conf/``)."""
    return _shipped("conf")


def experiments_dir() -> Path:
    """The experiment presets: ``experiments/``, which Hydra sees as ``conf/experiment``."""
    return (config_dir() / "experiment").resolve()


def head_presets() -> dict[str, dict]:
    """The named head presets from ``conf/head/*.yaml`` (defaults lists merged), as plain dicts."""
    from omegaconf import OmegaConf

    folder = config_dir() / "head"

    def load(name: str):
        node = OmegaConf.load(folder / f"{name}.yaml")
        defaults = list(node.pop("defaults", []))
        if "_self_" not in defaults:
            defaults.append("_self_")
        parts = [node if entry == "_self_" else load(entry) for entry in defaults]
        return OmegaConf.merge(*parts)

    return {
        path.stem: OmegaConf.to_container(load(path.stem), resolve=True)
        for path in sorted(folder.glob("*.yaml"))
    }
