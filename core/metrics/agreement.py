"""Agreement of two methods' score matrices ``a`` and ``b`` ``[n_test, n_train]`` on the same test points.

Used by the attribution benchmark (every method against exact TracIn) and to compare methods
on a scenario; the TRAK paper (Park et al., ICML 2023) and dattri report the same two figures.

- :func:`spearman`: the Spearman rank correlation of the two rows of each test point (ties:
  average ranks, :func:`core.stats.spearman`), averaged over test points. A constant row has
  no ranking: :func:`spearman_rows` gives NaN for it, :func:`spearman` raises.
- :func:`top_k_overlap`: the number of training points in both rows' top ``k`` (the ``k``
  largest scores, proponents), averaged over test points; from 0 to ``k``. Ties at the
  boundary of a top ``k`` count by their chance (see :mod:`core.metrics._common`): the
  expected overlap when each method's ties are broken at random, ``Σ_i P(i ∈ top_k(a))
  P(i ∈ top_k(b))``.
"""

from __future__ import annotations

import math

import torch

from core.errors import AttrexError
from core.metrics._common import check_k, matrix, top_k_weights
from core.stats import spearman as _spearman


def _pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = matrix(a, "a"), matrix(b, "b")
    if a.shape != b.shape:
        raise AttrexError(f"the two score matrices must have the same shape; got {list(a.shape)} and {list(b.shape)}")
    return a, b


def spearman_rows(a, b) -> list[float]:
    """Spearman correlation of each pair of rows (NaN where a row is constant)."""
    a, b = _pair(a, b)
    return [_spearman(r, s) for r, s in zip(a, b, strict=True)]


def spearman(a, b) -> float:
    """Mean over test points of the Spearman correlation of their two rows."""
    rhos = spearman_rows(a, b)
    undefined = [i for i, r in enumerate(rhos) if not math.isfinite(r)]
    if undefined:
        raise AttrexError(f"Spearman correlation is undefined for rows {undefined[:8]}: a method gives them constant scores")
    return sum(rhos) / len(rhos)


def top_k_overlap_rows(a, b, k: int = 10) -> list[float]:
    """Expected ``|top_k(a_row) ∩ top_k(b_row)|`` for each pair of rows."""
    a, b = _pair(a, b)
    k = check_k(k, a.shape[1])
    return (top_k_weights(a, k) * top_k_weights(b, k)).sum(1).tolist()


def top_k_overlap(a, b, k: int = 10) -> float:
    """Mean over test points of the overlap of the two rows' top ``k``."""
    rows = top_k_overlap_rows(a, b, k)
    return sum(rows) / len(rows)
