"""Instance-level attribution methods, one module each, all behind :class:`core.methods.base.Attributor`.

Importing this package imports every module in it, and each registers its methods, so
:data:`REGISTRY` always lists them all (the CLI and the app read it).
"""

import importlib
import pkgutil

from core.methods.base import (
    REGISTRY,
    Attributor,
    Param,
    TopK,
    TrainingData,
    create,
    get_method,
    offered,
    register,
)

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["REGISTRY", "Attributor", "Param", "TopK", "TrainingData", "create", "get_method", "offered", "register"]
