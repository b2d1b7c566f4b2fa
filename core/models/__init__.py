"""Architectures and training with checkpoints."""

from core.models.architectures import ARCHITECTURES, AttrexModel, build_model
from core.models.training import (
    DEFAULT_CONFIGS,
    Checkpoint,
    TrainConfig,
    TrainedModel,
    default_config,
    is_cached,
    load_cached,
    load_state,
    predict,
    predict_proba,
    train,
)

__all__ = [
    "ARCHITECTURES", "AttrexModel", "build_model", "DEFAULT_CONFIGS", "Checkpoint", "TrainConfig",
    "TrainedModel", "default_config", "is_cached", "load_cached", "load_state", "predict", "predict_proba", "train",
]
