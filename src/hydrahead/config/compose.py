"""The config ``hydrahead-train OVERRIDES`` would run, composed in this process (for ``run(cfg)``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict


def compose(overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """Compose ``conf/train.yaml`` with ``overrides`` (Hydra's override grammar, as on the command line).

    ``paths.output_dir`` becomes ``output_dir``, or else (unless an override sets it) the directory
    a single ``hydrahead-train`` run would get (``hydra.run.dir``). Unknown keys, options and wrong
    types raise Hydra's errors here; :func:`hydrahead.config.validate` checks values.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from hydrahead.utils.paths import config_dir

    from .resolvers import register

    register()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides), return_hydra_config=True)
    planned = OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"]
    given = OmegaConf.to_container(cfg.paths, resolve=False)["output_dir"]
    with open_dict(cfg):
        del cfg["hydra"]
        if output_dir is not None or str(given).startswith("${hydra:"):  # else set by an override
            cfg.paths.output_dir = str(Path(output_dir or planned).expanduser().resolve())
    return cfg
