"""Feature-level attribution: which parts of a training input carry its influence (FLIA, DualView-LRP)."""

from core.features.flia import FLIA, FLIAResult, flia, flia_many
from core.features.lrp import LRPResult, dualview_lrp

__all__ = ["FLIA", "FLIAResult", "LRPResult", "dualview_lrp", "flia", "flia_many"]
