"""What an evaluation measures on: :class:`Settings`, every field of which enters the cache key of its results."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import AttrexError


@dataclass(frozen=True)
class Settings:
    """What an evaluation measures on; every field enters the cache key of its results."""

    n_test: int = 100          # clean test points of the DualView tasks
    k: int = 10                # top-k of the backdoor share
    n_triggered: int = 20      # triggered test samples of the backdoor task
    lds_test: int = 50         # test points of LDS
    lds_subsets: int = 20      # M: subset models of LDS
    lds_alpha: float = 0.5     # fraction of the training set in each LDS subset
    seed: int = 0              # seed of the test-point draws and the LDS subsets

    def __post_init__(self) -> None:
        for name in ("n_test", "k", "n_triggered", "lds_test"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise AttrexError(f"{name} must be a positive integer; got {getattr(self, name)!r}")
        if not isinstance(self.lds_subsets, int) or self.lds_subsets < 3:
            raise AttrexError(f"lds_subsets must be an integer >= 3; got {self.lds_subsets!r}")
        if not 0 < self.lds_alpha < 1:
            raise AttrexError(f"lds_alpha must lie strictly between 0 and 1; got {self.lds_alpha!r}")
