"""Evaluation metrics: pure functions of score tensors and a scenario's ground truth.

No training and no UI here: a metric takes what a method produced (a score matrix
``[n_test, n_train]`` or per-training-point scores ``[n_train]``) and what the scenario
planted (flipped, poisoned or marked ids, labels) and returns a number. One module per kind,
each stating its definitions and papers:

- :mod:`core.metrics.mislabel`: AUROC, AUPRC, precision@k, the detection curve;
- :mod:`core.metrics.backdoor`: poisoned share of the top-k proponents, detection AUROC over
  all training points and within the target class, trigger mass of a heatmap;
- :mod:`core.metrics.dualview`: the DualView paper's identical class, identical subclass,
  label poisoning and domain mismatch;
- :mod:`core.metrics.lds`: the linear datamodeling score against models trained on subsets;
- :mod:`core.metrics.agreement`: Spearman and top-k overlap between two methods' scores.

Undefined cases (no flipped or poisoned point, a constant row for Spearman, ``k`` out of
range) raise :class:`~core.errors.AttrexError`; a metric never returns NaN. Ties are
handled deterministically (see :mod:`core.metrics._common`). :data:`METRICS` lists them by
name with a one-line description.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.metrics import agreement, backdoor, dualview, lds, mislabel


@dataclass(frozen=True)
class Metric:
    """A registered metric: call it as its function; ``description`` says what it measures in one line."""

    name: str
    fn: Callable
    description: str

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("auroc", mislabel.auroc, "mislabel detection: AUROC of a per-training-point score for the flipped points"),
    Metric("auprc", mislabel.auprc, "mislabel detection: average precision of a per-training-point score"),
    Metric("precision-at-k", mislabel.precision_at_k, "mislabel detection: flipped share among the k highest scores"),
    Metric("detection-curve", mislabel.detection_curve,
           "mislabel detection: share of flipped points found against share of data checked"),
    Metric("backdoor-top-k", backdoor.top_k_poisoned_share,
           "backdoor: poisoned share among the top-k proponents of triggered test samples"),
    Metric("backdoor-base-rate", backdoor.base_rate, "backdoor: poisoned share of the training set (random's top-k share)"),
    Metric("backdoor-auroc", backdoor.detection_auroc,
           "backdoor: AUROC of the mean score over triggered samples, all training points"),
    Metric("backdoor-auroc-class", backdoor.detection_auroc_in_class,
           "backdoor: AUROC of the mean score over triggered samples, target-class training points only"),
    Metric("trigger-mass", backdoor.trigger_mass_ratio,
           "backdoor: heatmap mass inside the trigger over the trigger's share of the image"),
    Metric("identical-class", dualview.identical_class,
           "DualView: share of test points whose top-1 training point has the explained class"),
    Metric("identical-subclass", dualview.identical_subclass,
           "DualView: share of test points whose top-1 training point has their original subclass"),
    Metric("label-poisoning", dualview.label_poisoning,
           "DualView: normalised area under the flipped-label detection curve of sum |score| (random 0.5)"),
    Metric("domain-mismatch", dualview.domain_mismatch,
           "DualView: share of mark-fooled test points whose top-1 training point carries the mark"),
    Metric("lds", lds.lds, "linear datamodeling score: Spearman of summed scores against subset-trained models' outputs"),
    Metric("spearman", agreement.spearman, "agreement: mean Spearman correlation of two methods' score rows"),
    Metric("top-k-overlap", agreement.top_k_overlap, "agreement: mean overlap of two methods' top-k proponents"),
)}

__all__ = ["METRICS", "Metric", "agreement", "backdoor", "dualview", "lds", "mislabel"]
