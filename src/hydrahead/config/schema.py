"""Typed schemas of the config groups, registered in Hydra's ConfigStore (``train_schema``).

``conf/train.yaml`` lists ``train_schema`` first in its defaults, so every group file and every
override is merged into these dataclasses: a misspelt key or a wrong type fails at compose time
with the key's name. Value checks that types cannot express live in ``__post_init__`` and run when
:func:`hydrahead.config.validate` converts the composed config into a :class:`TrainConfig`, still
before any weights load. Importing this module is cheap (no torch, no transformers).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from hydrahead.modeling.head_spec import LEVELS, TASKS, HeadSpec


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key and what is allowed."""


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {list(allowed)}")


@dataclass
class LoraConfig:
    """A LoRA adapter (Hu et al. 2021, through ``peft``), used with ``backbone.adapter=lora``."""

    r: int = 8
    """Rank of each adapted module's low-rank update ``B @ A``."""
    alpha: float = 16
    """Scale of the update: it is multiplied by ``alpha / r``."""
    dropout: float = 0.1
    """Dropout on the adapted modules' inputs (the adapter branch only), in [0, 1)."""
    target_modules: list[str] | None = None
    """Names (or dotted name tails, e.g. ``attention.self.query``) of the backbone's modules that get
    an adapter; null: the attention query and value projections (peft's default for the architecture,
    else the modules named query/value, q_lin/v_lin, q_proj/v_proj or query_proj/value_proj)."""

    def __post_init__(self):
        if self.r < 1:
            raise ConfigError(f"backbone.lora.r={self.r} must be >= 1")
        if self.alpha <= 0:
            raise ConfigError(f"backbone.lora.alpha={self.alpha} must be > 0")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"backbone.lora.dropout={self.dropout} must be in [0, 1)")
        if self.target_modules is not None and (
            isinstance(self.target_modules, str) or not list(self.target_modules)
        ):
            raise ConfigError(
                f"backbone.lora.target_modules={self.target_modules!r} must be null or a non-empty list "
                "of module names, e.g. [query,value]"
            )


@dataclass
class BackboneConfig:
    name_or_path: str = "sentence-transformers/all-MiniLM-L6-v2"
    """Hub id, local directory, or ``tiny:<family>`` (random tiny encoder)."""
    freeze: Any = False
    """true (whole backbone), false, or an int N (embeddings + bottom N layers). With an adapter it
    says where adapters go (see ``adapter``)."""
    adapter: str | None = None
    """null: the backbone's own weights train (those ``freeze`` leaves). lora: they all stay frozen and
    a LoRA adapter (``backbone.lora``) trains instead, with the head (the head is never adapted, always
    trains). freeze=false puts adapters on every targeted module; freeze=N none in the embeddings and
    bottom N layers (they run without dropout, as frozen ones do); freeze=true is an error (nothing
    left to train). The adapter turns the feature cache off (backbone.cache=on is an error).
    Checkpoints hold the adapter and the head; the export merges the adapter into the backbone's
    weights (a plain model that loads without peft)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """The adapter's settings with adapter=lora."""
    pretrained: bool = True
    """false: the backbone's architecture with random weights (dry runs, random-encoder baselines)."""
    init_seed: int | None = None
    """The seed of random backbone weights (pretrained=false, tiny:); null: the run's ``seed``. Set
    it to draw one random encoder for a sweep over seeds (the seeds then vary the probe only)."""

    def weights_seed(self, seed: int) -> int:
        """The seed random weights are drawn with in a run of ``seed``."""
        return seed if self.init_seed is None else self.init_seed

    revision: str | None = None
    trust_remote_code: bool = False
    dtype: str | None = None
    """e.g. bfloat16 to load the backbone weights in half precision."""
    attn_implementation: str | None = None
    """eager, sdpa or flash_attention_2; null: the backbone's default."""
    resize_token_embeddings: int | None = None
    cache: str = "auto"
    """Frozen-backbone feature cache: auto (on when backbone.freeze=true), on, or off."""
    cache_layers: str = "all"
    """Depth of a feature-cache entry: all (every layer: one pass serves a whole layer sweep) or read
    (layers 0..the highest this head reads: cheaper for one deep model probed low; ``computed`` is
    the older name of read)."""
    cache_dtype: str = "float32"
    """Storage dtype of cached features: float32, float16 or bfloat16."""
    compile: bool = False
    """torch.compile the backbone (fine-tuning on GPU)."""

    def __post_init__(self):
        _choice("backbone.cache", self.cache, ("auto", "on", "off"))
        _choice("backbone.cache_layers", self.cache_layers, ("all", "read", "computed"))
        _choice("backbone.cache_dtype", self.cache_dtype, ("float32", "float16", "bfloat16"))
        if not isinstance(self.freeze, (bool, int)) or (
            not isinstance(self.freeze, bool) and self.freeze < 0
        ):
            raise ConfigError(f"backbone.freeze={self.freeze!r} must be true, false or a non-negative int")
        _choice("backbone.adapter", self.adapter, (None, "lora"))
        if isinstance(self.lora, dict):  # a saved run config, read back as plain data
            known = {f.name for f in dataclasses.fields(LoraConfig)}
            self.lora = LoraConfig(**{k: v for k, v in self.lora.items() if k in known})
        if self.adapter and self.freeze is True:
            raise ConfigError(
                f"backbone.freeze=true with backbone.adapter={self.adapter}: the adapter only trains "
                f"where the backbone is not frozen, so nothing would train; use backbone.freeze=false "
                f"with backbone.adapter={self.adapter} (or backbone.freeze=N: adapters above layer N only)"
            )
        if self.adapter and self.cache == "on":
            raise ConfigError(
                f"backbone.cache=on with backbone.adapter={self.adapter}: the adapter changes the "
                "backbone's output as it trains, so its features cannot be cached; use backbone.cache=auto"
            )


@dataclass
class HeadConfig(HeadSpec):
    """The model's head spec (:class:`~hydrahead.modeling.head_spec.HeadSpec`) plus what the runner checks."""

    level: str | None = None
    """The data level this head needs (mask_gather: positions); null: any."""

    def __post_init__(self):
        # The other keys' values are checked by normalize_head (run by validate).
        if self.level is not None:
            _choice("head.level", self.level, LEVELS)

    def model_spec(self) -> dict:
        """The head dict the model config takes: every HeadSpec field, without the runner-only ``level``."""
        return {k: v for k, v in vars(self).items() if k != "level"}


@dataclass
class TaskConfig:
    name: str = "multiclass"
    """multiclass (softmax + cross-entropy) or multilabel (sigmoid + BCE)."""
    threshold: float = 0.5
    """Multilabel decision threshold for the F1 metrics."""
    monitor: str = "val/acc"
    """The metric that picks the best checkpoint (and that a sweeper optimises)."""
    mode: str = "max"
    control: bool = False
    """Train on the control task (Hewitt & Liang 2019) of the data: every word type (sequence level:
    every value of ``task.control_key``) gets one random label from train's label distribution.
    ``hydrahead-compare`` pairs each run with its control twin and reports selectivity."""
    control_seed: int = 0
    """The seed of the control labels (kept apart from ``seed``, which draws the probe)."""
    control_lowercase: bool = True
    """Token/positions levels: the type is the lowercased word form; false keeps case."""
    control_key: str | None = None
    """Sequence level: the data field whose value is the type (required there)."""
    mdl: str | None = None
    """online: also measure the online codelength of the labels given the frozen features
    (Voita & Titov 2020): ``mdl/online_kbits``, ``mdl/uniform_kbits``, ``mdl/compression``."""
    mdl_fractions: list[float] = field(
        default_factory=lambda: [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25.0, 50.0, 100.0]
    )
    """Block boundaries, in percent of the train split (the paper's); the last must be 100."""
    mdl_heldout: float = 0.1
    """The fraction of each prefix held out to pick the probe's best epoch (min held-out loss)."""
    class_weights: Any = None
    """Multiclass cross-entropy weight per label: null (none), balanced (``n / (k * n_c)`` from
    train's label counts, as scikit-learn's) or a list with one number per label, in label order
    (``labels.json``)."""
    pos_weight: Any = None
    """Multilabel BCE weight of each label's positive term: null, balanced (``negatives / positives``
    per label, from train) or a list with one number per label."""
    label_smoothing: float = 0.0
    """In [0, 1): multiclass targets mix with the uniform distribution (``CrossEntropyLoss``'s);
    multilabel targets become ``y * (1 - s) + s / 2`` (both 0 and 1 move towards 1/2)."""

    def __post_init__(self):
        _choice("task.name", self.name, TASKS)
        _choice("task.mode", self.mode, ("max", "min"))
        _choice("task.mdl", self.mdl, (None, "online"))
        if not 0 < self.threshold < 1:
            raise ConfigError(f"task.threshold={self.threshold} must be in (0, 1)")
        fractions = list(self.mdl_fractions)
        if (
            not fractions
            or fractions[-1] != 100
            or any(b <= a for a, b in itertools.pairwise(fractions))
            or fractions[0] <= 0
        ):
            raise ConfigError(
                f"task.mdl_fractions={fractions} must increase from above 0 to exactly 100 (percent)"
            )
        if not 0 < self.mdl_heldout < 1:
            raise ConfigError(f"task.mdl_heldout={self.mdl_heldout} must be in (0, 1)")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"task.label_smoothing={self.label_smoothing} must be in [0, 1)")
        for key, task in (("class_weights", "multiclass"), ("pos_weight", "multilabel")):
            value = getattr(self, key)
            if value is None:
                continue
            if task != self.name:
                other = "pos_weight" if key == "class_weights" else "class_weights"
                raise ConfigError(f"task.{key} is for task={task}; with task={self.name} use task.{other}")
            if value == "balanced":
                continue
            if isinstance(value, str) or not hasattr(value, "__iter__"):
                raise ConfigError(f"task.{key}={value!r} must be null, balanced or a list of numbers")
            weights = list(value)
            if not weights or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights
            ):
                raise ConfigError(f"task.{key}={weights} must be non-negative numbers, one per label")


@dataclass
class FieldsConfig:
    """Field (column) names in local files and hub datasets."""

    text: str = "text"
    text_pair: str | None = "text_pair"
    label: str = "label"
    tokens: str = "tokens"
    tags: str = "tags"
    spans: str = "spans"
    word_positions: str = "word_positions"
    labels: str = "labels"


@dataclass
class DataConfig:
    name: str = MISSING
    level: str = "sequence"
    """sequence, token or positions."""
    batch_size: int = 32
    eval_batch_size: int | None = None
    max_length: int = 128
    """Longer inputs are truncated; positions that fall outside are dropped (and counted)."""
    num_workers: int = 0
    group_by_length: bool = False
    """Batch similar lengths together (fewer pad tokens)."""
    seed: int = 0
    # local files (data=local and the prepared corpora)
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    format: str = "auto"
    """auto (from the extension), jsonl, csv, parquet or conll."""
    fields: FieldsConfig = field(default_factory=FieldsConfig)
    label_all_subwords: bool = False
    """Label every subword of a word, not only the first (the rest get -100)."""
    on_error: str = "raise"
    """raise at the first bad row, or skip bad rows (and report how many)."""
    limit_train: int | None = None
    """Use the first N training examples (the label vocabulary still comes from the whole file)."""
    limit_validation: int | None = None
    limit_test: int | None = None
    seqeval_strict: bool = False
    """BIO token tasks: entity metrics in seqeval's strict IOB2 mode instead of the default."""
    prepare: str | None = None
    """A corpus hydrahead-prepare builds into paths.data_dir when its files are missing (wordnet)."""
    # HF Hub datasets (needs the `datasets` package and a network)
    hf_name: str | None = None
    hf_config: str | None = None
    # synthetic_* datasets: generated deterministically from data.seed
    num_train: int = 512
    num_validation: int = 128
    num_test: int = 128

    def __post_init__(self):
        _choice("data.level", self.level, LEVELS)
        _choice("data.format", self.format, ("auto", "jsonl", "csv", "parquet", "conll"))
        _choice("data.on_error", self.on_error, ("raise", "skip"))
        for key in ("batch_size", "max_length"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key}={getattr(self, key)} must be >= 1")
        for key in ("limit_train", "limit_validation", "limit_test"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"data.{key}={getattr(self, key)} must be >= 1 (or null for all)")


@dataclass
class OptimizerConfig:
    name: str = "adamw"
    lr: float = 1e-3
    """Learning rate of the head."""
    backbone_lr: float | None = None
    """Learning rate of the trainable backbone; null: the same as lr."""
    weight_decay: float = 0.01
    """Not applied to biases and norm weights."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.9
    """SGD only."""
    fused: bool | None = None
    """AdamW only. null: fused kernels where the device has them (CPU, CUDA); false: never; true: required."""

    def __post_init__(self):
        _choice("optimizer.name", self.name, ("adamw", "sgd"))
        if self.lr <= 0:
            raise ConfigError(f"optimizer.lr={self.lr} must be > 0")
        if self.backbone_lr is not None and self.backbone_lr <= 0:
            raise ConfigError(f"optimizer.backbone_lr={self.backbone_lr} must be > 0")
        if self.weight_decay < 0:
            raise ConfigError(f"optimizer.weight_decay={self.weight_decay} must be >= 0")


@dataclass
class SchedulerConfig:
    name: str = "linear_warmup"
    """linear_warmup, cosine or constant; stepped once per optimizer step."""
    warmup_ratio: float = 0.1
    """Fraction of all optimizer steps spent warming up."""

    def __post_init__(self):
        _choice("scheduler.name", self.name, ("linear_warmup", "cosine", "constant"))
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"scheduler.warmup_ratio={self.warmup_ratio} must be in [0, 1)")


@dataclass
class TrainerConfig:
    """The Lightning Trainer arguments people sweep; add any other with ``++trainer.<arg>=``."""

    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    precision: Any = "32-true"
    max_epochs: int = 3
    log_every_n_steps: int = 10
    deterministic: Any = False
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    # debugging knobs (conf/debug); null keeps Lightning's default
    fast_dev_run: Any = False
    overfit_batches: float = 0.0
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None

    def __post_init__(self):
        if self.max_epochs < 1 and self.max_epochs != -1:
            raise ConfigError(f"trainer.max_epochs={self.max_epochs} must be >= 1")


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    patience: int = 3
    min_delta: float = 0.0


@dataclass
class CallbacksConfig:
    save_top_k: int = 1
    """Best checkpoints kept (on task.monitor), besides last.ckpt."""
    lr_monitor: bool = True
    rich_progress_bar: bool = True
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class WandbConfig:
    project: str = "hydrahead"
    entity: str | None = None
    mode: str | None = None
    """offline unless set to online here or through WANDB_MODE."""
    tags: list[str] = field(default_factory=list)
    group: str | None = None
    """null: the sweep's id in a multirun."""
    api_key: str | None = None
    """Better left to WANDB_API_KEY; set as ${oc.env:MY_KEY} it is used to log in and masked everywhere."""


@dataclass
class LoggerConfig:
    name: str = "wandb"
    """wandb, csv or none."""
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self):
        _choice("logger.name", self.name, ("wandb", "csv", "none"))


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
    cache_dir: str = MISSING
    log_dir: str = MISSING
    output_dir: str = MISSING
    """This run's directory (Hydra's runtime output dir)."""


@dataclass
class TrainConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    ckpt_path: str | None = None
    """Resume from this Lightning checkpoint (e.g. <run>/checkpoints/last.ckpt)."""
    export: Any = "auto"
    """Write the full HF export to <run>/model after training: true, false, or auto (fine-tuned runs
    export; frozen-backbone runs keep the head and a reference to the backbone, and
    ``hydrahead-export <run>`` builds the export on demand)."""
    calibrate: str | None = None
    """temperature: after training, fit one temperature on the validation split (minimum NLL of the
    best model's logits) and divide the logits by it from then on (export, ``predict_proba``,
    ``hydrahead-predict``); metrics.json records ECE before and after. null: no calibration."""
    malloc: str = "auto"
    """C heap policy (glibc). compact: buffers of 1 MiB and more are mmapped, so freed activations go
    back to the OS instead of fragmenting the heap (peak RSS near live memory; CPU steps a few % slower).
    glibc: its own dynamic policy. auto: compact while a trainable backbone trains on the CPU."""
    debug: Any = None

    def __post_init__(self):
        _choice("malloc", self.malloc, ("auto", "compact", "glibc"))
        _choice("calibrate", self.calibrate, (None, "temperature"))
        if self.export not in (True, False, "auto"):
            raise ConfigError(f"export={self.export!r} must be true, false or auto")
