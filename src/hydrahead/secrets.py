"""Secrets: find the values that must not be written anywhere, mask them in configs, redact text."""

from __future__ import annotations

import os
import re

from omegaconf import DictConfig, OmegaConf

# A secret's name has one of these words as a part of its own (HF_TOKEN, logger.wandb.api_key,
# db_password), not inside another word (data.fields.tokens, TOKENIZERS_PARALLELISM, tokenizer).
SECRET_NAME = re.compile(
    r"(?:^|[^a-z0-9])(token|secret|passw(?:or)?d|api_?key|credentials?|private_?key)(?:$|[^a-z0-9])", re.I
)
MASK = "***"


def secret_values(cfg: DictConfig | None = None) -> set[str]:
    """Values that must not be written anywhere: secret-named env variables and config keys."""
    values = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 6}
    if cfg is not None:

        def walk(node, key=""):
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, str(k))
            elif isinstance(node, str) and SECRET_NAME.search(key) and len(node) >= 6:
                values.add(node)

        walk(OmegaConf.to_container(cfg, resolve=True))
    return values


def redact(text: str, secrets: set[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def masked_config(cfg: DictConfig) -> dict:
    """The resolved config as a plain dict, secrets masked: keys that name a secret, and values
    interpolated from environment variables that do (``${oc.env:HF_TOKEN}``). This is what W&B
    and the checkpoints receive."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    raw = OmegaConf.to_container(cfg, resolve=False)

    def walk(node, source, key=""):
        if isinstance(node, dict):
            inner = source if isinstance(source, dict) else {}
            return {k: walk(v, inner.get(k), str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, None, key) for v in node]
        env = re.findall(r"\$\{oc\.env:([^,}]+)", source) if isinstance(source, str) else []
        if node is not None and (SECRET_NAME.search(key) or any(SECRET_NAME.search(name) for name in env)):
            return MASK
        return node

    return walk(resolved, raw)
