"""The DualView paper's four metrics (Yolcu et al., "DualView: Data attribution from the dual
perspective", §5.1; the first two after Hanawa et al., "Evaluation of similarity-based
explanations", ICLR 2021). ``scores`` ``[n_test, n_train]`` are a method's attributions for
the explained class of each test point (its predicted class).

- :func:`identical_class`: the share of test points whose top-1 training point (largest
  score) has the explained class. Random: 1 / n_classes on balanced data.
- :func:`identical_subclass`: classes merged into random superclasses, the model trained on
  those; the share of test points whose top-1 training point has the test point's original
  (sub)class. Random: 1 / n_subclasses.
- :func:`label_poisoning`: labels flipped on a share of the training set; training points
  ranked by ``Σ_test |S[test, i]|`` (the paper's uniform strategy for every method), the
  area under the detection curve (share of flipped points found against the share of data
  checked, :func:`core.metrics.mislabel.detection_curve`), normalised by the areas of the
  worst and the best possible rankings: ``(A − A_worst) / (A_best − A_worst)``, so 0 =
  worst, 1 = best, and a random ranking expects 0.5. This normalised area equals the
  AUROC of the same ranking (both count, for each flipped point, the clean points ranked
  below it); with ties, its tie rule (a tied group's hits spread evenly) gives AUROC's
  average-rank value.
- :func:`domain_mismatch`: a fixed mark stamped on a share of one class's training images
  (the mark class); every test image of the other classes stamped; among those the model
  now predicts as the mark class, the share whose top-1 training point carries the mark.

Top-1 ties count by their chance (see :mod:`core.metrics._common`): a test point whose
largest score is shared by several training points passes by the share of them that match;
quanda's implementations take ``argmax`` (the first), which differs only when ties occur.
"""

from __future__ import annotations

import torch

from core.errors import AttrexError
from core.metrics._common import mask, matrix, need_both, top_k_weights, vector
from core.metrics.mislabel import detection_curve


def _top1_pass(s: torch.Tensor, match: torch.Tensor) -> float:
    """Mean over rows of P(the top-1 training point matches), ``match`` broadcast to ``s``'s shape."""
    return float((top_k_weights(s, 1) * match).sum(1).mean())


def _labels(t, n: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.shape != (n,) or torch.is_floating_point(t) or t.dtype == torch.bool:
        raise AttrexError(f"{what} must be {n} integer labels; got {t.dtype} {list(t.shape)}")
    return t


def identical_class(scores, train_labels, explained) -> float:
    """Share of test rows whose top-1 training point's label equals the row's explained class."""
    s = matrix(scores)
    y = _labels(train_labels, s.shape[1], "train_labels")
    c = _labels(explained, s.shape[0], "explained classes")
    return _top1_pass(s, y[None, :] == c[:, None])


def identical_subclass(scores, train_subclasses, test_subclasses) -> float:
    """Share of test rows whose top-1 training point has the test point's original (sub)class."""
    return identical_class(scores, train_subclasses, test_subclasses)


def normalised_area(ranking, flipped) -> float:
    """The detection curve's area for ``ranking`` [n] (highest first), normalised between the worst and best rankings."""
    r = vector(ranking, "ranking")
    pos = mask(flipped, len(r), "flipped")
    need_both(pos, "flipped")  # with every point flipped, worst = best

    def area(s: torch.Tensor) -> float:
        checked, found = detection_curve(s, pos)
        return float(torch.trapezoid(found, checked))

    worst, best = area(-pos.double()), area(pos.double())
    return (area(r) - worst) / (best - worst)


def label_poisoning(scores, flipped) -> float:
    """The DualView label-poisoning score: :func:`normalised_area` of the ranking by ``Σ_test |scores|``."""
    return normalised_area(matrix(scores).abs().sum(0), flipped)


def domain_mismatch(scores, marked, predicted, mark_class: int) -> float:
    """Share, among the stamped test rows predicted as ``mark_class``, whose top-1 training point is ``marked``.

    ``scores`` [n_stamped, n_train] are for the stamped other-class test images, explaining their
    predicted class; ``predicted`` [n_stamped] are those predictions (rows predicted otherwise are left out).
    """
    s = matrix(scores)
    pred = _labels(predicted, s.shape[0], "predicted classes")
    has_mark = mask(marked, s.shape[1], "marked")
    need_both(has_mark, "marked", negatives=False)
    rows = pred == mark_class
    if not rows.any():
        raise AttrexError(f"no stamped test image is predicted as the mark class {mark_class}: the model ignores "
                          "the mark, and domain mismatch is undefined")
    return _top1_pass(s[rows], has_mark[None, :])
