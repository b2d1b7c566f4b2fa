"""Backdoor (poisoning) detection: do a method's explanations of triggered predictions point at the poison?

The setting of the backdoor attack papers (BadNets, Gu et al. 2017; for attribution:
Hammoudeh & Lowd, "Identifying a training-set attack's target using renormalized influence
estimation", CCS 2022, and the DualView paper's domain-mismatch test, which is the same idea
with a benign mark): some training points carry a trigger and the target label; test points
with the trigger are sent to the target class. ``scores`` ``[n_triggered, n_train]`` are a
method's attributions for triggered test samples that the model sends to the target class
(explained class: the target); ``poisoned`` is a boolean mask ``[n_train]`` or the poisoned
ids (``scenario.truth.poisoned_ids``).

- :func:`top_k_poisoned_share`: the share of poisoned points among each triggered sample's
  ``k`` strongest proponents, averaged over the samples; compare it with
  :func:`base_rate`, the poisoned share of the training set (what a random ranking gets).
- :func:`detection_auroc`: the AUROC of ranking all training points by their mean score over
  the triggered samples (the aggregated ranking), poisoned = positive.
- :func:`detection_auroc_in_class`: the same AUROC among the training points labelled with
  the target class only. Every poisoned point carries the target label, so over all points
  the label alone separates most of them (a method that scores the explained class's points
  high gets a high AUROC for nothing); within the class only the trigger can.
- :func:`trigger_mass_ratio`: the share of a feature attribution heatmap's mass (``|FLIA|``
  summed over channels) inside the trigger region, divided by the region's share of the
  image: 1 = no preference for the trigger, ``1 / region share`` = all mass on it.
- :func:`trigger_direction`: of FLIA heatmaps of the same pairs computed in several
  directions, the direction whose median :func:`trigger_mass_ratio` is highest. A trigger at
  the ends of the pixel range (BadNets' black-and-white patch) can move in one direction
  only, since FLIA clips to the range, and which one depends on the sign of ``∂IL/∂x`` at
  its pixels, that is on the trained model. On 40 poisoned pairs of the default MNIST CNN of
  ``mnist-backdoor``, seeds 0, 1 and 2, descent's median ratio was 23.7, 4.7 and 5.3 and
  ascent's 0.0, 0.03 and 1.0; an earlier training recipe had given descent 0 and ascent 27.

Ties in the top k count by their chance (see :mod:`core.metrics._common`); the AUROCs use
average ranks, as :func:`core.metrics.mislabel.auroc`. No poisoned point, or none clean among
the ranked points, raises :class:`~core.errors.AttrexError`.
"""

from __future__ import annotations

import statistics

import torch

from core.errors import AttrexError
from core.metrics._common import auroc, check_k, mask, matrix, need_both, top_k_weights


def _inputs(scores, poisoned) -> tuple[torch.Tensor, torch.Tensor]:
    s = matrix(scores)
    pos = mask(poisoned, s.shape[1], "poisoned")
    need_both(pos, "poisoned", negatives=False)
    return s, pos


def base_rate(poisoned, n_train: int) -> float:
    """The share of poisoned points in the training set: a random ranking's expected top-k share."""
    pos = mask(poisoned, n_train, "poisoned")
    need_both(pos, "poisoned", negatives=False)
    return float(pos.double().mean())


def top_k_poisoned_share(scores, poisoned, k: int = 10) -> float:
    """Mean over the rows of ``scores`` of the poisoned share among the ``k`` largest scores."""
    s, pos = _inputs(scores, poisoned)
    k = check_k(k, s.shape[1])
    return float((top_k_weights(s, k) * pos).sum(1).mean() / k)


def detection_auroc(scores, poisoned) -> float:
    """AUROC of the mean score over the triggered samples for finding the poisoned points, over all training points."""
    s, pos = _inputs(scores, poisoned)
    return auroc(s.mean(0), pos, "poisoned")


def detection_auroc_in_class(scores, poisoned, labels, target_class: int) -> float:
    """:func:`detection_auroc` among the training points whose label is ``target_class``."""
    s, pos = _inputs(scores, poisoned)
    labels = torch.as_tensor(labels)
    if labels.shape != (s.shape[1],):
        raise AttrexError(f"labels must have shape [{s.shape[1]}] (one per training point); got {list(labels.shape)}")
    keep = labels == target_class
    if not keep.any():
        raise AttrexError(f"no training point is labelled with the target class {target_class!r}")
    return auroc(s.mean(0)[keep], pos[keep], "poisoned")


def trigger_mass_ratio(heatmap, trigger_mask) -> float:
    """``(mass of heatmap inside the mask / its total mass) / (mask's share of the image)``; 0 for an all-zero heatmap."""
    heat = torch.as_tensor(heatmap).double()
    region = torch.as_tensor(trigger_mask)
    if region.dtype != torch.bool or region.shape != heat.shape:
        raise AttrexError(f"the trigger mask must be boolean with the heatmap's shape {list(heat.shape)}; "
                          f"got {region.dtype} {list(region.shape)}")
    if not region.any():
        raise AttrexError("the trigger mask is empty")
    if not torch.isfinite(heat).all() or (heat < 0).any():
        raise AttrexError("the heatmap must hold finite non-negative values (|attribution|)")
    return float(heat[region].sum() / heat.sum().clamp_min(1e-300) / region.double().mean())


def trigger_direction(heatmaps: dict[str, list], trigger_mask) -> tuple[str, dict[str, float]]:
    """The direction whose heatmaps put the most mass on the trigger, and each direction's median
    :func:`trigger_mass_ratio` over its heatmaps (ties: the first direction given)."""
    if not heatmaps or any(not len(h) for h in heatmaps.values()):
        raise AttrexError("trigger_direction needs at least one heatmap per direction")
    medians = {d: statistics.median(trigger_mass_ratio(h, trigger_mask) for h in hs) for d, hs in heatmaps.items()}
    return max(medians, key=lambda d: medians[d]), medians
