"""HF Hub datasets by name (``data.hf_name``), mapped through the same schema as local files."""

from __future__ import annotations

from .encode import DataError
from .readers import _example

HUB_SPLITS = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}


def read_hub_split(data_cfg, split: str, task: str) -> list[dict] | None:
    """Rows of ``split`` from ``datasets.load_dataset(hf_name, hf_config)``, or None if it has none."""
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"data.hf_name={data_cfg.hf_name!r} needs the `datasets` package: pip install 'hydrahead[hub]'"
        ) from None
    loaded = datasets.load_dataset(data_cfg.hf_name, data_cfg.hf_config)
    for name in HUB_SPLITS[split]:
        if name in loaded:
            return [
                _example(row, f"{data_cfg.hf_name}[{name}]:{index}", data_cfg, task)
                for index, row in enumerate(loaded[name], start=1)
            ]
    return None
