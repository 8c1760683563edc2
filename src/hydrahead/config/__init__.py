"""The config: typed schema (``schema``), checks and their wording (``validate``), Hydra set-up
(``resolvers``) and composing a run's config from Python (``compose``). Cheap to import."""

from .compose import compose
from .schema import (
    BackboneConfig,
    CallbacksConfig,
    ConfigError,
    DataConfig,
    FieldsConfig,
    HeadConfig,
    LoggerConfig,
    LoraConfig,
    OptimizerConfig,
    PathsConfig,
    SchedulerConfig,
    TaskConfig,
    TrainConfig,
    TrainerConfig,
)
from .validate import validate

__all__ = [
    "BackboneConfig",
    "CallbacksConfig",
    "ConfigError",
    "DataConfig",
    "FieldsConfig",
    "HeadConfig",
    "LoggerConfig",
    "LoraConfig",
    "OptimizerConfig",
    "PathsConfig",
    "SchedulerConfig",
    "TaskConfig",
    "TrainConfig",
    "TrainerConfig",
    "compose",
    "validate",
]
