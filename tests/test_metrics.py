"""The evaluation metrics (core/metrics) against independent computations.

References, none of which shares code with :mod:`core.metrics`:

- scikit-learn's ``roc_auc_score`` and ``average_precision_score``, scipy's ``spearmanr``;
- the tie rule by enumeration: a metric's value averaged over every order of the tied
  points (every permutation of a small problem), which is what "ties broken at random"
  means;
- small examples worked by hand (in the comments).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

from core.errors import AttrexError
from core.metrics import METRICS, agreement, backdoor, dualview, mislabel

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


def tied_problem(seed: int, n: int = 200, levels: int = 6, share: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores with many ties (a few integer levels, shifted for the positives) and a boolean truth."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, generator=g) < share
    scores = torch.randint(0, levels, (n,), generator=g).double() + pos.double() * (seed % 3)
    return scores, pos


def orders(scores: list[float]):
    """Every ranking of ``scores`` from the highest down, ties in every order (each as often as the others)."""
    n = len(scores)
    for perm in itertools.permutations(range(n)):
        yield sorted(range(n), key=lambda i: (-scores[i], perm[i]))


def expected(scores: list[float], value) -> float:
    """``value(order)`` averaged over the tie orders of ``scores``."""
    vals = [value(o) for o in orders(scores)]
    return sum(vals) / len(vals)


# ----------------------------------------------------------------------------- mislabel detection


@pytest.mark.parametrize("seed", range(6))
def test_auroc_and_auprc_equal_scikit_learn_with_ties(seed):
    scores, pos = tied_problem(seed)
    assert mislabel.auroc(scores, pos) == pytest.approx(roc_auc_score(pos, scores), abs=1e-12)
    assert mislabel.auprc(scores, pos) == pytest.approx(average_precision_score(pos, scores), abs=1e-12)
    ids = pos.nonzero().squeeze(1)  # the truth as training ids, as a scenario holds it
    assert mislabel.auroc(scores, ids) == mislabel.auroc(scores, pos)
    assert mislabel.auprc(scores.float(), ids.tolist()) == pytest.approx(mislabel.auprc(scores, pos), abs=1e-7)
    cont = torch.randn(300, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    truth = cont + torch.randn(300, generator=torch.Generator().manual_seed(seed + 9), dtype=torch.float64) > 1
    assert mislabel.auroc(cont, truth) == pytest.approx(roc_auc_score(truth, cont), abs=1e-12)
    assert mislabel.auprc(cont, truth) == pytest.approx(average_precision_score(truth, cont), abs=1e-12)


def test_precision_at_k_by_hand_and_over_tie_orders():
    # scores 5, 4, 4, 4, 1 with points 1 and 4 flipped: the top 2 is point 0 and one of the three
    # tied at 4, point 1 with chance 1/3 -> precision (1/3) / 2 = 1/6; the top 4 holds point 1
    # surely -> 1/4; the top 5 holds both -> 2/5
    s, flipped = torch.tensor([5.0, 4, 4, 4, 1]), torch.tensor([1, 4])
    assert mislabel.precision_at_k(s, flipped, 1) == 0
    assert mislabel.precision_at_k(s, flipped, 2) == pytest.approx(1 / 6)
    assert mislabel.precision_at_k(s, flipped, 4) == pytest.approx(1 / 4)
    assert mislabel.precision_at_k(s, flipped, 5) == pytest.approx(2 / 5)
    scores, pos = [3.0, 1, 3, 2, 3, 1], [1, 0, 0, 1, 1, 1]
    for k in range(1, 7):
        want = expected(scores, lambda o, k=k: sum(pos[i] for i in o[:k]) / k)
        assert mislabel.precision_at_k(torch.tensor(scores), torch.tensor(pos).bool(), k) == pytest.approx(want)


def test_detection_curve_by_hand_and_over_tie_orders():
    # scores .9, .8, .8, .1 with points 2 and 3 flipped: nothing after the first point, the tied
    # pair holds one flip (half a flip each), the last point the other
    checked, found = mislabel.detection_curve(torch.tensor([0.9, 0.8, 0.8, 0.1]), torch.tensor([2, 3]))
    torch.testing.assert_close(checked, torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64))
    torch.testing.assert_close(found, torch.tensor([0, 0, 0.25, 0.5, 1], dtype=torch.float64))
    scores, pos = [2.0, 1, 2, 2, 0, 1], [0, 1, 1, 0, 1, 0]
    for j in range(7):
        want = expected(scores, lambda o, j=j: sum(pos[i] for i in o[:j]) / 3)
        assert found_at(scores, pos, j) == pytest.approx(want)


def found_at(scores, pos, j):
    return float(mislabel.detection_curve(torch.tensor(scores), torch.tensor(pos).bool())[1][j])


def test_mislabel_metrics_refuse_undefined_cases():
    s = torch.tensor([0.3, 0.1, 0.2])
    for fn in (mislabel.auroc, mislabel.auprc, mislabel.detection_curve,
               lambda s, f: mislabel.precision_at_k(s, f, 1)):
        with pytest.raises(AttrexError, match="no flipped point"):
            fn(s, torch.zeros(3, dtype=torch.bool))
        with pytest.raises(AttrexError, match="no flipped point"):
            fn(s, [])
    with pytest.raises(AttrexError, match="all 3 points are flipped"):
        mislabel.auroc(s, [0, 1, 2])
    assert mislabel.auprc(s, [0, 1, 2]) == 1  # defined: every point is a hit
    with pytest.raises(AttrexError, match="NaN"):
        mislabel.auroc(torch.tensor([0.1, float("nan"), 0.2]), [0])
    with pytest.raises(AttrexError, match=r"ids must lie in \[0, 2\]"):
        mislabel.auroc(s, [3])
    with pytest.raises(AttrexError, match=r"shape \[3\]"):
        mislabel.auroc(s, torch.tensor([True, False]))
    with pytest.raises(AttrexError, match="integer ids"):
        mislabel.auroc(s, torch.tensor([0.5]))
    with pytest.raises(AttrexError, match="vector"):
        mislabel.auroc(s[None], [0])
    for k in (0, 4, 1.5, True):
        with pytest.raises(AttrexError, match=r"k must be an integer in \[1, 3\]"):
            mislabel.precision_at_k(s, [0], k)


# ----------------------------------------------------------------------------- DualView


def test_label_poisoning_is_the_normalised_detection_area():
    # one flip (point 1) among 4, ranked second by Σ|S| = .4, .3, .2, .1: the curve 0, 0, 1, 1, 1 has
    # trapezoid area .625; the best ranking (flip first) .875, the worst (flip last) .125:
    # (.625 - .125) / (.875 - .125) = 2/3, the share of clean points ranked below the flip
    S = torch.tensor([[0.1, -0.2, 0.2, 0.05], [-0.3, 0.1, 0.0, 0.05]])
    assert dualview.label_poisoning(S, [1]) == pytest.approx(2 / 3)
    assert dualview.label_poisoning(S, [0]) == pytest.approx(1.0)
    assert dualview.label_poisoning(S, [3]) == pytest.approx(0.0)
    # with ties and many points it is the AUROC of the ranking (average ranks)
    for seed in range(4):
        scores, pos = tied_problem(seed, n=120)
        S = torch.stack([scores, -scores]) / 2  # Σ|S| = |scores|, non-negative here
        assert dualview.label_poisoning(S, pos) == pytest.approx(roc_auc_score(pos, scores), abs=1e-12)
    # a random ranking expects 0.5
    g = torch.Generator().manual_seed(0)
    flips = torch.randperm(1000, generator=g)[:100]
    vals = [dualview.label_poisoning(torch.randn(3, 1000, generator=g), flips) for _ in range(50)]
    assert abs(sum(vals) / len(vals) - 0.5) < 0.02
    with pytest.raises(AttrexError, match="no flipped point"):
        dualview.label_poisoning(S, [])
    with pytest.raises(AttrexError, match="all 4 points are flipped"):
        dualview.label_poisoning(torch.ones(2, 4), [0, 1, 2, 3])


def test_identical_class_and_subclass_by_hand():
    y_train = torch.tensor([0, 1, 1, 2])
    S = torch.tensor([[0.9, 0.1, 0.2, 0.0],    # top-1 point 0 (class 0)
                      [0.1, 0.5, 0.5, 0.0],    # tie of points 1, 2 (both class 1)
                      [0.7, 0.1, 0.7, 0.7]])   # tie of points 0, 2, 3: classes 0, 1, 2
    explained = torch.tensor([0, 1, 2])
    # rows pass with 1, 1 and 1/3 (one of three tied points has class 2)
    assert dualview.identical_class(S, y_train, explained) == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert dualview.identical_class(S, y_train, torch.tensor([1, 1, 0])) == pytest.approx((0 + 1 + 1 / 3) / 3)
    for row in range(3):  # the same through the enumeration of tie orders
        want = expected(S[row].tolist(), lambda o, row=row: float(y_train[o[0]] == explained[row]))
        assert dualview.identical_class(S[row: row + 1], y_train, explained[row: row + 1]) == pytest.approx(want)
    # subclasses: the original classes of the training and test points
    assert dualview.identical_subclass(S, torch.tensor([3, 4, 5, 6]), torch.tensor([3, 5, 6])) == pytest.approx(
        (1 + 0.5 + 1 / 3) / 3)
    with pytest.raises(AttrexError, match="integer labels"):
        dualview.identical_class(S, y_train.float(), explained)
    with pytest.raises(AttrexError, match="3 integer labels"):
        dualview.identical_class(S, y_train, explained[:2])


def test_domain_mismatch_by_hand():
    marked = torch.tensor([2, 3])  # training points 2 and 3 carry the mark
    S = torch.tensor([[0.1, 0.2, 0.9, 0.0],    # top-1 marked
                      [0.8, 0.2, 0.1, 0.0],    # top-1 unmarked
                      [0.1, 0.2, 0.5, 0.5],    # tie of two marked points
                      [0.9, 0.2, 0.1, 0.0]])   # predicted otherwise: left out
    predicted = torch.tensor([5, 5, 5, 1])
    assert dualview.domain_mismatch(S, marked, predicted, 5) == pytest.approx(2 / 3)
    assert dualview.domain_mismatch(S, marked, predicted, 1) == 0
    with pytest.raises(AttrexError, match="ignores the mark"):
        dualview.domain_mismatch(S, marked, predicted, 7)
    with pytest.raises(AttrexError, match="no marked point"):
        dualview.domain_mismatch(S, [], predicted, 5)


# ----------------------------------------------------------------------------- backdoor


def test_backdoor_metrics_by_hand_and_against_scikit_learn():
    poisoned = torch.tensor([0, 3])
    S = torch.tensor([[0.9, 0.5, 0.5, 0.1, 0.0],   # top 2: point 0 and one of 1, 2 -> 1/2
                      [0.2, 0.1, 0.0, 0.8, 0.8]])  # top 2: points 3, 4 -> 1/2
    assert backdoor.top_k_poisoned_share(S, poisoned, 2) == pytest.approx(0.5)
    assert backdoor.top_k_poisoned_share(S, poisoned, 1) == pytest.approx(0.75)  # 1, and 1/2 (3 and 4 tie)
    assert backdoor.top_k_poisoned_share(S, poisoned, 5) == pytest.approx(2 / 5)
    assert backdoor.base_rate(poisoned, 5) == pytest.approx(2 / 5)  # the top-n share
    mean = S.mean(0)
    pos = torch.tensor([True, False, False, True, False])
    assert backdoor.detection_auroc(S, poisoned) == pytest.approx(roc_auc_score(pos, mean))
    labels = torch.tensor([7, 7, 1, 7, 1])  # within class 7: points 0, 1, 3
    keep = labels == 7
    assert backdoor.detection_auroc_in_class(S, poisoned, labels, 7) == pytest.approx(
        roc_auc_score(pos[keep], mean[keep]))
    # larger, with ties
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        S = torch.randint(0, 4, (6, 150), generator=g).double()
        pos = torch.rand(150, generator=g) < 0.15
        labels = torch.where(pos, 2, torch.randint(0, 4, (150,), generator=g))
        mean, keep = S.mean(0), labels == 2
        assert backdoor.detection_auroc(S, pos) == pytest.approx(roc_auc_score(pos, mean), abs=1e-12)
        assert backdoor.detection_auroc_in_class(S, pos, labels, 2) == pytest.approx(
            roc_auc_score(pos[keep], mean[keep]), abs=1e-12)
        # the top-k share is the mean of each row's precision@k
        assert backdoor.top_k_poisoned_share(S, pos, 10) == pytest.approx(
            sum(mislabel.precision_at_k(r, pos, 10) for r in S) / len(S))
    with pytest.raises(AttrexError, match="no poisoned point"):
        backdoor.top_k_poisoned_share(S, [], 3)
    with pytest.raises(AttrexError, match="no training point is labelled with the target class 9"):
        backdoor.detection_auroc_in_class(S, pos, labels, 9)
    with pytest.raises(AttrexError, match="all .* points are poisoned"):
        backdoor.detection_auroc_in_class(S, labels == 2, labels, 2)


def test_trigger_mass_ratio_by_hand():
    heat = torch.zeros(4, 4)
    trigger = torch.zeros(4, 4, dtype=torch.bool)
    trigger[0, :2] = True                    # 2 of 16 pixels
    heat[0, 0], heat[3, 3] = 3.0, 1.0        # 3/4 of the mass on the trigger
    assert backdoor.trigger_mass_ratio(heat, trigger) == pytest.approx(0.75 / (2 / 16))
    assert backdoor.trigger_mass_ratio(torch.ones(4, 4), trigger) == pytest.approx(1.0)
    assert backdoor.trigger_mass_ratio(torch.zeros(4, 4), trigger) == 0
    with pytest.raises(AttrexError, match="non-negative"):
        backdoor.trigger_mass_ratio(-heat, trigger)
    with pytest.raises(AttrexError, match="empty"):
        backdoor.trigger_mass_ratio(heat, torch.zeros(4, 4, dtype=torch.bool))


def test_trigger_direction_takes_the_higher_median_by_hand():
    trigger = torch.zeros(4, 4, dtype=torch.bool)
    trigger[0, :2] = True  # 2 of 16 pixels: ratio = 8 x the mass share on it

    def heat(on: float) -> torch.Tensor:  # a heatmap with share ``on`` of its mass on the trigger
        h = torch.zeros(4, 4)
        h[0, 0], h[3, 3] = on, 1 - on
        return h

    # descent: ratios 0, 0, 8 (median 0); ascent: 2, 4, 0 (median 2): one strong descent pair does not decide
    direction, medians = backdoor.trigger_direction(
        {"descent": [heat(0), heat(0), heat(1)], "ascent": [heat(0.25), heat(0.5), heat(0)]}, trigger)
    assert direction == "ascent" and medians == pytest.approx({"descent": 0.0, "ascent": 2.0})
    # even counts: the mean of the two middle ratios (2 and 4 -> 3), above descent's 2.5 (1 and 4)
    direction, medians = backdoor.trigger_direction(
        {"descent": [heat(0.125), heat(0.5)], "ascent": [heat(0.25), heat(0.5)]}, trigger)
    assert direction == "ascent" and medians == pytest.approx({"descent": 2.5, "ascent": 3.0})
    assert backdoor.trigger_direction({"descent": [heat(0.5)], "ascent": [heat(0.5)]}, trigger)[0] == "descent"
    with pytest.raises(AttrexError, match="at least one heatmap"):
        backdoor.trigger_direction({"descent": [], "ascent": [heat(0.5)]}, trigger)


# ----------------------------------------------------------------------------- agreement


def test_spearman_equals_scipy_with_ties():
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 5, (4, 60), generator=g).double()
    b = a + torch.randint(0, 3, (4, 60), generator=g)
    rows = [spearmanr(r.numpy(), s.numpy()).statistic for r, s in zip(a, b, strict=True)]
    assert agreement.spearman_rows(a, b) == pytest.approx(rows, abs=1e-12)
    assert agreement.spearman(a, b) == pytest.approx(sum(rows) / 4, abs=1e-12)
    b[2] = 1.0
    assert math.isnan(agreement.spearman_rows(a, b)[2])
    with pytest.raises(AttrexError, match=r"undefined for rows \[2\]"):
        agreement.spearman(a, b)
    with pytest.raises(AttrexError, match="same shape"):
        agreement.spearman(a, b[:, :5])


def test_top_k_overlap_by_hand_and_over_tie_orders():
    a = torch.tensor([[4.0, 3, 2, 1, 0], [4.0, 3, 2, 1, 0]])
    b = torch.tensor([[0.0, 3, 2, 1, 4], [1.0, 1, 1, 0, 0]])
    # row 0: top-2 {0, 1} and {4, 1} share 1 point; row 1: b ties points 0, 1, 2 for two places (2/3
    # each), a's top 2 is {0, 1}: 2/3 + 2/3
    assert agreement.top_k_overlap_rows(a, b, 2) == pytest.approx([1.0, 4 / 3])
    assert agreement.top_k_overlap(a, b, 2) == pytest.approx((1 + 4 / 3) / 2)
    assert agreement.top_k_overlap(a, a, 5) == 5
    x, y = [2.0, 2, 1, 1, 0], [0.0, 1, 1, 1, 2]
    for k in range(1, 6):
        want = sum(len(set(o[:k]) & set(p[:k])) for o in orders(x) for p in orders(y)) / 120 ** 2
        assert agreement.top_k_overlap(torch.tensor([x]), torch.tensor([y]), k) == pytest.approx(want)


def test_the_registry_lists_every_metric_with_a_description():
    assert {"auroc", "auprc", "precision-at-k", "detection-curve", "backdoor-top-k", "backdoor-auroc",
            "backdoor-auroc-class", "identical-class", "identical-subclass", "label-poisoning",
            "domain-mismatch", "spearman", "top-k-overlap"} <= set(METRICS)
    for name, metric in METRICS.items():
        assert metric.name == name and metric.description and metric.fn.__doc__
        assert len(metric.description) < 120 and "\n" not in metric.description
    s, pos = tied_problem(1)
    assert METRICS["auroc"](s, pos) == mislabel.auroc(s, pos)
