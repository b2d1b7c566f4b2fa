"""Rank statistics shared by the benchmark and the experiments: ranks with ties, Spearman, Pearson, ROC AUC."""

from __future__ import annotations

import torch


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """Ranks ``1..n`` of a 1-d tensor, ties sharing their average rank (as ``scipy.stats.rankdata``)."""
    x = x.double()
    order = x.argsort()
    xs = x[order]
    n = len(x)
    starts = torch.ones(n, dtype=torch.bool)
    starts[1:] = xs[1:] != xs[:-1]
    group = starts.cumsum(0) - 1                              # group id of each sorted position
    first = torch.nonzero(starts).squeeze(1)                  # first sorted position of each group
    size = torch.bincount(group, minlength=len(first))
    avg = first.double() + (size.double() + 1) / 2            # average 1-based rank of each group
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = avg[group]
    return ranks


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two vectors (``nan`` if one is constant)."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denom = (a.norm() * b.norm()).item()
    return float("nan") if denom == 0 else (a @ b).item() / denom


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two score vectors (``nan`` if one is constant)."""
    return pearson(rankdata(a), rankdata(b))


def auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positive`` (Mann–Whitney; ties count one half)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)
    return ((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)).item()
