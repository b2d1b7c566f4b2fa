"""Architectures and training with checkpoints."""

from core.models.architectures import (
    ARCHITECTURES,
    Architecture,
    AttrexModel,
    build_model,
    register_architecture,
)
from core.models.custom import ModelSource
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
    recipe_of,
    train,
)

__all__ = [
    "ARCHITECTURES", "Architecture", "AttrexModel", "build_model", "register_architecture", "ModelSource", "recipe_of", "DEFAULT_CONFIGS", "Checkpoint", "TrainConfig",
    "TrainedModel", "default_config", "is_cached", "load_cached", "load_state", "predict", "predict_proba", "train",
]
