"""Input checks and the tie rule shared by the metric modules.

**Ties.** A metric that takes "the top k" (precision@k, the top-1 tests, top-k overlap) or
walks a ranking (the detection curve) is given its expected value when ties among equal
scores are broken uniformly at random: a point tied at the boundary of the top k counts
with the probability that it falls inside (:func:`top_k_weights`). The result is
deterministic, does not depend on the order of the training set, and agrees with AUROC's
average-rank rule (a constant score gives every metric its random-ranking value).
"""

from __future__ import annotations

import torch

from core.errors import AttrexError
from core.stats import auc


def vector(scores, what: str = "scores") -> torch.Tensor:
    """``scores`` as a finite float64 vector ``[n]``, n >= 1."""
    t = torch.as_tensor(scores)
    if t.dim() != 1 or len(t) == 0:
        raise AttrexError(f"{what} must be a non-empty vector (one score per training point); got shape {list(t.shape)}")
    return _finite(t, what)


def matrix(scores, what: str = "scores") -> torch.Tensor:
    """``scores`` as a finite float64 matrix ``[n_test, n_train]`` with at least one row and column."""
    t = torch.as_tensor(scores)
    if t.dim() != 2 or 0 in t.shape:
        raise AttrexError(f"{what} must be a non-empty matrix [n_test, n_train]; got shape {list(t.shape)}")
    return _finite(t, what)


def _finite(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.dtype == torch.bool or t.is_complex():
        raise AttrexError(f"{what} must be real numbers; got {t.dtype}")
    t = t.double()
    if not torch.isfinite(t).all():
        raise AttrexError(f"{what} hold NaN or infinite values")
    return t


def mask(truth, n: int, what: str) -> torch.Tensor:
    """Ground truth as a boolean mask ``[n]``: a boolean tensor of length ``n``, or training ids in ``[0, n)``."""
    t = torch.as_tensor(truth)
    if t.dtype == torch.bool:
        if t.shape != (n,):
            raise AttrexError(f"{what} as a mask must have shape [{n}]; got {list(t.shape)}")
        return t
    t = t.reshape(-1)
    if len(t) and (torch.is_floating_point(t) or t.is_complex()):
        raise AttrexError(f"{what} must be a boolean mask or integer ids; got {t.dtype}")
    t = t.long()
    if len(t) and (t.min() < 0 or t.max() >= n):
        raise AttrexError(f"{what} ids must lie in [0, {n - 1}]; got {t.tolist()[:8]}")
    out = torch.zeros(n, dtype=torch.bool)
    out[t] = True
    return out


def need_both(positive: torch.Tensor, what: str, negatives: bool = True) -> int:
    """The number of positives (``what``: "flipped", "poisoned", ...); an :class:`AttrexError` if there are
    none (or, with ``negatives``, if every point is one)."""
    m = int(positive.sum())
    if m == 0:
        raise AttrexError(f"no {what} point among the {len(positive)} points: the metric is undefined")
    if negatives and m == len(positive):
        raise AttrexError(f"all {len(positive)} points are {what}: the metric needs some that are not")
    return m


def auroc(scores: torch.Tensor, positive: torch.Tensor, what: str) -> float:
    """AUROC of checked ``scores`` for the mask ``positive`` (ties: average ranks), refusing the undefined cases."""
    need_both(positive, what)
    return auc(scores, positive)


def check_k(k, n: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
        raise AttrexError(f"k must be an integer in [1, {n}]; got {k!r}")
    return k


def top_k_weights(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``P(point in the top k)`` along the last axis, ties broken uniformly at random: 1 above the k-th
    largest score, 0 below, and for the points tied with it the free places shared equally."""
    kth = scores.topk(k, dim=-1).values[..., -1:]
    above, tied = scores > kth, scores == kth
    free = k - above.sum(-1, keepdim=True)
    return above.double() + tied.double() * free / tied.sum(-1, keepdim=True)

