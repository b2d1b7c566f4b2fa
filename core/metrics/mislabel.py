"""Mislabel detection: how well a per-training-point suspicion score finds the flipped labels.

The score is anything that ranks training points, highest = most suspicious: a method's
self-influence (the IIF paper's mislabel AUC, Yang, Gu & Sun; Koh & Liang 2017 §5.4;
Pruthi et al. 2020 §4.1), the training loss, or the summed absolute attributions of the
DualView paper's label-poisoning test (:mod:`core.metrics.dualview`). ``flipped`` is the
ground truth: a boolean mask ``[n]`` or the flipped ids (``scenario.truth.flipped_ids``).

- :func:`auroc`: area under the ROC curve, the probability that a flipped point scores
  above a clean one (Mann–Whitney U / (m (n − m))); ties count one half (average ranks).
  Equal to scikit-learn's ``roc_auc_score``. Random = 0.5.
- :func:`auprc`: average precision, ``Σ_t (R_t − R_{t−1}) P_t`` over the distinct score
  thresholds from the highest down (tied points enter together), as scikit-learn's
  ``average_precision_score``. Random = the share of flipped points.
- :func:`precision_at_k`: share of flipped points among the k highest scores.
- :func:`detection_curve`: the cumulative curve of the label-poisoning experiments (Koh &
  Liang 2017 Fig. 6, Yeh et al. 2018, Pruthi et al. 2020): after checking the first ``j`` of
  the ranked points, the share of all flipped points found, for ``j = 0..n``.

Ties are broken by their expectation under a random order (see :mod:`core.metrics._common`):
within a group of equal scores the curve rises linearly, and precision@k counts a point tied
at the boundary with the probability that it falls in the top k. No flipped point (or, for
AUROC, no clean one) raises :class:`~core.errors.AttrexError` instead of returning NaN.
"""

from __future__ import annotations

import torch

from core.metrics._common import auroc as _auroc
from core.metrics._common import check_k, mask, need_both, top_k_weights, vector


def _inputs(scores, flipped, negatives: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
    s = vector(scores)
    pos = mask(flipped, len(s), "flipped")
    return s, pos, need_both(pos, "flipped", negatives)


def auroc(scores, flipped) -> float:
    """Area under the ROC curve of ``scores`` [n] for finding ``flipped`` (ties: average rank)."""
    s = vector(scores)
    return _auroc(s, mask(flipped, len(s), "flipped"), "flipped")


def _ranked_groups(s: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Groups of equal scores from the highest down: their sizes and their numbers of positives."""
    order = s.argsort(descending=True, stable=True)
    _, group, sizes = torch.unique_consecutive(s[order], return_inverse=True, return_counts=True)
    hits = torch.zeros(len(sizes), dtype=torch.float64).index_add_(0, group, pos[order].double())
    return sizes.double(), hits


def auprc(scores, flipped) -> float:
    """Average precision of ``scores`` [n] for finding ``flipped`` (scikit-learn's definition)."""
    s, pos, m = _inputs(scores, flipped, negatives=False)
    sizes, hits = _ranked_groups(s, pos)
    precision = hits.cumsum(0) / sizes.cumsum(0)
    return float((hits / m * precision).sum())


def precision_at_k(scores, flipped, k: int) -> float:
    """Share of flipped points among the ``k`` highest scores (a tie at the boundary counts by its chance)."""
    s, pos, _ = _inputs(scores, flipped, negatives=False)
    k = check_k(k, len(s))
    return float((top_k_weights(s, k) * pos).sum() / k)


def detection_curve(scores, flipped) -> tuple[torch.Tensor, torch.Tensor]:
    """``(checked, found)``, both ``[n + 1]``: after the ``j`` highest-scoring points (``checked = j / n``),
    the share of the flipped points found; ``(0, 0)`` to ``(1, 1)``."""
    s, pos, m = _inputs(scores, flipped, negatives=False)
    sizes, hits = _ranked_groups(s, pos)
    per_point = (hits / sizes).repeat_interleave(sizes.long())  # a tied group's hits spread evenly over it
    found = torch.cat([torch.zeros(1, dtype=torch.float64), per_point.cumsum(0) / m])
    found[-1] = 1.0  # exactly, whatever the rounding of the sum
    return torch.arange(len(s) + 1, dtype=torch.float64) / len(s), found
