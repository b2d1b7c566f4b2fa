"""Scenarios: data sets, loaders and planted corruptions with their ground truth."""

from core.data.corruptions import (
    BadNets,
    Blended,
    Corruption,
    DomainMark,
    LabelNoise,
    Superclasses,
    TriggerToken,
)
from core.data.scenario import (
    DEFAULT_SCENARIO,
    PRESETS,
    GroundTruth,
    Scenario,
    ScenarioSpec,
    build,
    get_spec,
)
from core.data.sources import DATASETS, download, load

__all__ = [
    "BadNets", "Blended", "Corruption", "DomainMark", "LabelNoise", "Superclasses", "TriggerToken",
    "DEFAULT_SCENARIO", "PRESETS", "GroundTruth", "Scenario", "ScenarioSpec", "build", "get_spec",
    "DATASETS", "download", "load",
]
