#!/usr/bin/env python3
"""Cross-check attrex's metrics (core/metrics) against quanda's, on the same score matrices.

Run with the python of the separate venv that ``make crosscheck`` builds (``.venv-quanda``:
quanda 0.5.0 pins captum < 0.9, hence numpy < 2, so it never goes into the project's venv).
attrex's ``core.metrics`` is imported from this checkout; it needs only torch.

For every attrex metric with a counterpart in quanda, both are computed on seeded synthetic
inputs (several sizes, integer scores with many ties, and a realistic-looking case) and
compared. quanda is called through its metric classes, with a dummy model (an identity
linear layer fed one-hot "predictions") and a dataset of ``(x, label)`` items where the
classes want them; its correlation is quanda.utils.functions.correlations.spearman_rank_corr.
Where the two definitions coincide on an input, the values must agree within 1e-6
("agree", else "FAIL"). Where they differ on it (ties, quanda's index offset, another
normalisation), the row is "differs" with the reason, and the same comparison is repeated on
a tie-free version of the input (its ranks), where the definitions coincide again.

    .venv-quanda/bin/python -m tools.quanda_check          # a table
    .venv-quanda/bin/python -m tools.quanda_check --json   # one JSON document

Exit status 0 only if every coinciding pair agrees within 1e-6.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402  (after OMP_NUM_THREADS)

torch.set_num_threads(1)

TOL = 1e-6
OFFSET = 1e-4  # quanda's SelfInfluenceRanking adds OFFSET * index to the scores before sorting


def _import_core_metrics():
    """Import core.metrics; return it and the top-level packages it pulled in beyond torch and the stdlib."""
    before = {m.split(".")[0] for m in sys.modules}
    import core.metrics as cm

    extra = sorted({m.split(".")[0] for m in sys.modules} - before - {"core"} - set(sys.stdlib_module_names))
    return cm, [m for m in extra if not m.startswith("_")]


_core_metrics, CORE_EXTRA_IMPORTS = _import_core_metrics()
from core.metrics import agreement, backdoor, dualview, lds, mislabel  # noqa: E402


def _import_quanda():
    """quanda and the pieces used, with its import-time chatter (transformers, lightning) kept quiet."""
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        from quanda.metrics.downstream_eval import (
            ClassDetectionMetric,
            MislabelingDetectionMetric,
            ShortcutDetectionMetric,
            SubclassDetectionMetric,
        )
        from quanda.metrics.ground_truth import LinearDatamodelingMetric
        from quanda.metrics.heuristics import MixedDatasetsMetric
        from quanda.utils.functions.correlations import spearman_rank_corr
    from importlib.metadata import version

    return dict(version=version("quanda"), ClassDetection=ClassDetectionMetric,
                SubclassDetection=SubclassDetectionMetric, MislabelingDetection=MislabelingDetectionMetric,
                ShortcutDetection=ShortcutDetectionMetric, MixedDatasets=MixedDatasetsMetric,
                LinearDatamodeling=LinearDatamodelingMetric, spearman_rank_corr=spearman_rank_corr)


# ---------------------------------------------------------------------------------------------
# quanda, driven with a dummy model and label-only datasets


class Items(torch.utils.data.Dataset):
    """``(x, label)`` items: all that quanda's metrics read from a training set here is the label."""

    def __init__(self, labels):
        self.labels = [int(v) for v in torch.as_tensor(labels).tolist()]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.zeros(1), self.labels[i]


def dummy_model(n_classes: int) -> torch.nn.Module:
    """An identity linear layer: fed ``one_hot(pred)``, it "predicts" ``pred`` (for quanda's prediction filters)."""
    m = torch.nn.Linear(n_classes, n_classes, bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.eye(n_classes))
    return m


def one_hot(pred: torch.Tensor, n_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(pred.long(), n_classes).float()


def q_class_detection(Q, scores, train_labels, test_targets, s, pred=None, n_classes=None) -> float:
    n_classes = n_classes or int(max(torch.as_tensor(train_labels).max(), torch.as_tensor(test_targets).max())) + 1
    m = Q["ClassDetection"](model=dummy_model(n_classes), train_dataset=Items(train_labels), s=s,
                            filter_by_prediction=pred is not None)
    m.update(scores, torch.as_tensor(test_targets).long(),
             test_data=None if pred is None else one_hot(pred, n_classes))
    return m.compute()["score"]


def q_subclass_detection(Q, scores, train_labels, train_sub, test_sub, s=1) -> float:
    m = Q["SubclassDetection"](model=dummy_model(2), train_dataset=Items(train_labels),
                               train_subclass_labels=torch.as_tensor(train_sub).long(), s=s)
    m.update(scores, torch.as_tensor(test_sub).long())
    return m.compute()["score"]


def q_mislabeling(Q, ranking: torch.Tensor, positive: torch.Tensor) -> tuple[float, torch.Tensor]:
    """quanda's mislabeling detection score and curve for a precomputed per-point score."""
    n = len(ranking)
    m = Q["MislabelingDetection"](model=dummy_model(2), train_dataset=Items(torch.zeros(n)),
                                  mislabeling_indices=torch.nonzero(positive).flatten().tolist(),
                                  precomputed_self_influence=ranking.double())
    out = m.compute()
    return out["score"], out["curve"].double()


def q_normalised_area(Q, ranking: torch.Tensor, positive: torch.Tensor) -> float:
    """quanda's mislabeling area with the curve's (0, 0) start restored, normalised between the
    areas quanda gives the worst and the best rankings (the DualView normalisation)."""
    n = len(ranking)

    def area(r):
        score, curve = q_mislabeling(Q, r, positive)
        return score + float(curve[0]) / (2 * n)

    worst, best = area(-positive.double()), area(positive.double())
    return (area(ranking) - worst) / (best - worst)


def q_shortcut(Q, scores, marked, mark_class, train_labels, test_labels, pred, n_classes) -> float:
    m = Q["ShortcutDetection"](model=dummy_model(n_classes), train_dataset=Items(train_labels),
                               shortcut_indices=torch.nonzero(marked).flatten().tolist(), shortcut_cls=mark_class)
    m.update(scores, test_data=one_hot(pred, n_classes), test_labels=torch.as_tensor(test_labels).long())
    return m.compute()["score"]


def q_mixed(Q, scores, adversarial, train_labels, pred=None, label=None, n_classes=2) -> float:
    m = Q["MixedDatasets"](model=dummy_model(n_classes), train_dataset=Items(train_labels),
                           adversarial_indices=adversarial.long(), filter_by_prediction=pred is not None,
                           adversarial_label=label)
    if pred is None:
        m.update(scores)
    else:
        m.update(scores, test_data=one_hot(pred, n_classes), test_labels=torch.zeros(len(scores)).long())
    return m.compute()["score"]


def q_spearman(Q, a, b) -> float:
    return float(Q["spearman_rank_corr"](a, b).mean())


def q_lds(Q, scores, subset_ids, logits, targets) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        m = Q["LinearDatamodeling"](model=dummy_model(logits.shape[-1]), train_dataset=Items(torch.zeros(scores.shape[1])),
                                    m=len(subset_ids), subset_ids=subset_ids,
                                    subset_ckpt_filenames=[f"unused_{j}" for j in range(len(subset_ids))],
                                    cache_dir=tmp)
        m.update(scores, targets.long(), test_data=torch.zeros(len(scores), 1),
                 subset_logits={j: logits[j] for j in range(len(subset_ids))})
        return m.compute()["score"]


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass
class Case:
    name: str
    S: torch.Tensor              # [n_test, n_train] scores for the explained class
    S2: torch.Tensor             # a second method's scores (Spearman)
    v: torch.Tensor              # [n_train] per-point suspicion score (self-influence)
    n_classes: int
    y: torch.Tensor              # training labels
    explained: torch.Tensor      # explained class per test row
    train_sub: torch.Tensor      # subclass of each training point (superclass = y)
    test_sub: torch.Tensor       # original subclass of each test row
    flipped: torch.Tensor        # bool [n_train]
    poisoned: torch.Tensor       # bool [n_train], all in target_class
    target_class: int
    trig_pred: torch.Tensor      # prediction of each triggered test row (rows of S)
    marked: torch.Tensor         # bool [n_train], all in mark_class
    mark_class: int
    stamp_pred: torch.Tensor     # prediction of each stamped test row (rows of S)
    stamp_labels: torch.Tensor   # true class of each stamped test row (never mark_class)
    subset_ids: list             # LDS subsets (training ids)
    logits: torch.Tensor         # [M, n_test, n_classes] subset models' logits
    k: int                       # top-k size for backdoor-top-k


def make_case(name: str, kind: str, n_test: int, n_train: int, n_classes: int, seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    def randint(lo, hi, *shape):
        return torch.randint(lo, hi, shape, generator=g)

    y = (torch.arange(n_train) % n_classes)[torch.randperm(n_train, generator=g)]
    explained = randint(0, n_classes, n_test)
    train_sub, test_sub = 2 * y + randint(0, 2, n_train), 2 * explained + randint(0, 2, n_test)
    flipped = torch.zeros(n_train, dtype=torch.bool)
    flipped[torch.randperm(n_train, generator=g)[: max(2, n_train // 10)]] = True
    target_class, mark_class = 0, n_classes - 1
    in_target = torch.nonzero(y == target_class).flatten()
    poisoned = torch.zeros(n_train, dtype=torch.bool)
    poisoned[in_target[torch.randperm(len(in_target), generator=g)[: max(1, len(in_target) // 3)]]] = True
    in_mark = torch.nonzero(y == mark_class).flatten()
    marked = torch.zeros(n_train, dtype=torch.bool)
    marked[in_mark[torch.randperm(len(in_mark), generator=g)[: max(1, len(in_mark) // 3)]]] = True
    other = randint(0, n_classes - 1, n_test)  # a class other than mark_class
    stamp_pred = torch.where(rand(n_test) < 0.6, torch.full((n_test,), mark_class), other)
    stamp_pred[0] = mark_class
    stamp_labels = randint(0, n_classes - 1, n_test)
    trig_pred = torch.where(rand(n_test) < 0.7, torch.full((n_test,), target_class), randint(1, n_classes, n_test))
    trig_pred[0] = target_class

    if kind == "gauss":
        S = randn(n_test, n_train)
        S2 = S + 0.7 * randn(n_test, n_train)
        v = randn(n_train) + 1.5 * flipped
    elif kind == "int":  # a few integer levels: ties everywhere
        S = randint(-3, 4, n_test, n_train).double()
        S2 = (S + randint(-1, 2, n_test, n_train)).clamp(-3, 3)
        v = randint(0, 6, n_train).double() + 2 * flipped
    elif kind == "rounded":  # Gaussian scores rounded to integers: ties, but mostly away from the top
        S = (2 * randn(n_test, n_train)).round()
        S2 = (S + 1.5 * randn(n_test, n_train)).round()
        v = (2 * randn(n_train)).round() + 3 * flipped
    elif kind == "realistic":
        # TracIn-like: lr * <grad test, grad train> with class-structured gradients, mislabelled
        # points with larger gradients, float32 as a method returns them; |S| ~ 3e-3, self-influence ~ 2e-2.
        d, lr = 32, 1e-2
        mu = randn(n_classes, d)
        true_y = y.clone()
        true_y[flipped] = (y[flipped] + 1 + randint(0, n_classes - 1, int(flipped.sum()))) % n_classes
        G_train = mu[true_y] + 0.8 * randn(n_train, d)
        G_train[flipped] *= 1.1
        G_test = mu[explained] + 0.8 * randn(n_test, d)
        S = (lr / d * G_test @ G_train.T).float().double()
        S2 = (S + 0.5 * S.std() * randn(n_test, n_train)).float().double()
        v = (lr / d * (G_train ** 2).sum(1)).float().double()
    else:
        raise ValueError(kind)

    n_sub = 12
    subset_ids = [torch.randperm(n_train, generator=g)[: n_train // 2].tolist() for _ in range(n_sub)]
    mask = torch.zeros(n_sub, n_train, dtype=torch.bool)
    for j, ids in enumerate(subset_ids):
        mask[j, ids] = True
    pred_out = mask.double() @ S.T  # [M, n_test]
    logits = randn(n_sub, n_test, n_classes)
    boost = (pred_out - pred_out.mean(0)) / pred_out.std(0).clamp_min(1e-12)
    logits[torch.arange(n_sub)[:, None], torch.arange(n_test)[None, :], explained[None, :]] += boost
    return Case(name, S, S2, v, n_classes, y, explained, train_sub, test_sub, flipped, poisoned, target_class,
                trig_pred, marked, mark_class, stamp_pred, stamp_labels, subset_ids, logits,
                k=min(5, n_train - 1))


CASES = [
    ("small (6x20, gaussian)", "gauss", 6, 20, 2, 1),
    ("medium (50x400, gaussian)", "gauss", 50, 400, 5, 2),
    ("ties (40x60, integers -3..3)", "int", 40, 60, 3, 3),
    ("ties (50x400, rounded gaussian)", "rounded", 50, 400, 5, 4),
    ("realistic (100x1000, TracIn-like, |S| ~ 3e-3)", "realistic", 100, 1000, 10, 5),
]


# ---------------------------------------------------------------------------------------------
# when the definitions coincide on an input


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Distinct ranks 0..n-1 along the last axis (ties broken by position): a tie-free, well-spaced version of x."""
    return x.argsort(dim=-1, stable=True).argsort(dim=-1).double()


def topk_boundary_ties(S: torch.Tensor, k: int) -> int:
    """Rows where the k-th and (k+1)-th largest scores are equal (the top k is then not unique)."""
    if k >= S.shape[-1]:
        return 0
    top = S.topk(k + 1, dim=-1).values
    return int((top[..., k - 1] == top[..., k]).sum())


def ranking_issues(v: torch.Tensor) -> str:
    """Why quanda's ranking (score + 1e-4 * index, sorted) may not be the score order; '' if it must be."""
    srt = v.sort(descending=True).values
    gaps = srt[:-1] - srt[1:]
    ties = int((gaps == 0).sum())
    if ties:
        return f"{ties} tied neighbours in the ranked scores"
    if float(gaps.min()) <= OFFSET * (len(v) - 1):
        moved = int((v.argsort(descending=True, stable=True)
                     != (v + OFFSET * torch.arange(len(v), dtype=v.dtype)).argsort(descending=True, stable=True)).sum())
        return (f"smallest score gap {float(gaps.min()):.2g} <= 1e-4 * (n - 1): quanda's index offset "
                f"moves {moved} of {len(v)} ranking positions")
    return ""


REASONS = {
    "topk": "ties at the top-k boundary: quanda keeps torch.topk's pick among the tied points; attrex counts each "
            "tied point by its chance of falling in the top k (the expectation under random tie-breaking)",
    "offset": "quanda ranks by score + 1e-4 * index (its work-around for unstable sorting): tied points go "
              "last-index-first and scores closer than 1e-4 * their index distance are reordered; attrex spreads a "
              "tied group's hits evenly over it and never reorders",
    "norm": "quanda's mislabeling score is the raw area under the detection curve without its (0, 0) start, "
            "divided by n (random ~0.5, best 1 - m/(2n)); attrex's label poisoning normalises the area (with (0, 0)) "
            "between the worst and best rankings, which equals AUROC (random 0.5, best 1)",
    "shortcut": "quanda's shortcut detection is the mean per-row AUPRC of the marked training points; attrex's domain "
                "mismatch is the top-1 hit rate (the DualView paper's definition); compared here as a pair of "
                "different metrics on the same rows",
    "constant": "a constant row or column: attrex gives it no ranking (Spearman raises, LDS leaves it out); torchmetrics "
                "returns ~0 through its eps",
}


# ---------------------------------------------------------------------------------------------
# the comparisons


@dataclass
class Row:
    metric: str          # attrex's name (core.metrics.METRICS)
    counterpart: str     # quanda's piece, and what of attrex's metric it is compared with
    case: str
    variant: str         # "as given", or "tie-free (ranks)": the same comparison on the ranks of the input
    attrex: float
    quanda: float
    abs_diff: float
    coincide: bool
    status: str          # agree | FAIL | differs
    reason: str = ""
    detail: dict = field(default_factory=dict)


class Checker:
    def __init__(self, Q):
        self.Q = Q
        self.rows: list[Row] = []

    def add(self, metric, counterpart, case, a, q, issue: str = "", reason_key: str = "", detail=None,
            variant: str = "as given"):
        a_t, q_t = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(q, dtype=torch.float64)
        diff = float((a_t - q_t).abs().max())
        coincide = not issue
        status = ("agree" if diff <= TOL else "FAIL") if coincide else "differs"
        reason = "" if coincide else (f"{issue}; {REASONS[reason_key]}" if reason_key else issue)
        scalar = a_t.numel() == 1
        self.rows.append(Row(metric, counterpart, case, variant, float(a_t) if scalar else float("nan"),
                             float(q_t) if scalar else float("nan"), diff, coincide, status, reason, detail or {}))

    def tiebreak_mc(self, fn: Callable, S: torch.Tensor, cols: list, seed: int, reps: int = 200) -> dict:
        """quanda's value averaged over random orders of the training columns: the expectation under random
        tie-breaking that attrex's tie rule computes exactly (Monte Carlo, with its standard error)."""
        g = torch.Generator().manual_seed(seed)
        vals = []
        for _ in range(reps):
            p = torch.randperm(S.shape[-1], generator=g)
            vals.append(fn(S[..., p], *[c[p] for c in cols]))
        t = torch.tensor(vals, dtype=torch.float64)
        return {"quanda_random_tiebreak_mean": float(t.mean()), "mc_se": float(t.std() / math.sqrt(reps)),
                "mc_reps": reps}

    # -- top-1 / top-k --------------------------------------------------------------------------

    def class_detection_family(self, c: Case):
        Q = self.Q
        free = dict(variant="tie-free (ranks)")

        def ident(S, y):
            return (dualview.identical_class(S, y, c.explained),
                    q_class_detection(Q, S, y, c.explained, s=1, n_classes=c.n_classes))

        def subcl(S, sub, y):
            return dualview.identical_subclass(S, sub, c.test_sub), q_subclass_detection(Q, S, y, sub, c.test_sub)

        def topk(S, pois):
            return (backdoor.top_k_poisoned_share(S, pois, c.k),
                    q_class_detection(Q, S, pois.long(), torch.ones(len(S)).long(), s=c.k))

        def dom(S, marked, y):
            labels = torch.where(marked, torch.tensor(c.mark_class), torch.tensor(-1))
            return (dualview.domain_mismatch(S, marked, c.stamp_pred, c.mark_class),
                    q_class_detection(Q, S, labels, torch.full((len(S),), c.mark_class), s=1, pred=c.stamp_pred,
                                      n_classes=c.n_classes))

        rows_marked = c.stamp_pred == c.mark_class
        specs = [
            ("identical-class", "ClassDetectionMetric(s=1)", ident, [c.y], lambda S: S, 1),
            ("identical-subclass", "SubclassDetectionMetric(s=1)", subcl, [c.train_sub, c.y], lambda S: S, 1),
            ("backdoor-top-k", f"ClassDetectionMetric(s={c.k}), labels = poisoned (k={c.k})", topk, [c.poisoned],
             lambda S: S, c.k),
            ("domain-mismatch", "ClassDetectionMetric(s=1, filter_by_prediction), labels = marked", dom,
             [c.marked, c.y], lambda S: S[rows_marked], 1),
        ]
        for metric, counterpart, fn, cols, rows_of, k in specs:
            a, q = fn(c.S, *cols)
            n_tied = topk_boundary_ties(rows_of(c.S), k)
            detail = {}
            if n_tied and c.S.shape[0] * c.S.shape[1] <= 5000:
                detail = self.tiebreak_mc(lambda S, *cs, fn=fn: fn(S, *cs)[1], c.S, cols, seed=len(self.rows))
                detail["attrex_within_4se"] = abs(detail["quanda_random_tiebreak_mean"] - a) <= 4 * detail["mc_se"] + 1e-12
            self.add(metric, counterpart, c.name, a, q,
                     issue=f"{n_tied} test rows with a tie at the top-{k} boundary" if n_tied else "",
                     reason_key="topk", detail=detail)
            if n_tied:
                a, q = fn(ranks(c.S), *cols)
                self.add(metric, counterpart, c.name, a, q, **free)

        # precision@k on the per-point score, k = the number of flipped points
        k = int(c.flipped.sum())

        def prec(v):
            return (mislabel.precision_at_k(v, c.flipped, k),
                    q_class_detection(Q, v[None], c.flipped.long(), torch.ones(1).long(), s=k))

        a, q = prec(c.v)
        n_tied = topk_boundary_ties(c.v[None], k)
        counterpart = f"ClassDetectionMetric(s={k}), one row, labels = flipped (k={k})"
        self.add("precision-at-k", counterpart, c.name, a, q,
                 issue="a tie at the top-k boundary" if n_tied else "", reason_key="topk")
        if n_tied:
            a, q = prec(ranks(c.v))
            self.add("precision-at-k", counterpart, c.name, a, q, **free)

    # -- rankings of training points: detection curve, areas, AUROCs ------------------------------

    def ranking_family(self, c: Case):
        Q = self.Q
        free = dict(variant="tie-free (ranks)")
        in_class = c.y == c.target_class
        specs = [  # metric, what quanda is given, attrex's value from (ranking vector), the vector, positives
            ("auroc", "self-influence", lambda v, pos: mislabel.auroc(v, pos), c.v, c.flipped),
            ("label-poisoning", "sum_test |S|", lambda v, pos: dualview.label_poisoning(v[None], pos),
             c.S.abs().sum(0), c.flipped),
            ("backdoor-auroc", "mean_test S", lambda v, pos: backdoor.detection_auroc(v[None], pos),
             c.S.mean(0), c.poisoned),
            ("backdoor-auroc-class", "mean_test S, target-class columns",
             lambda v, pos: backdoor.detection_auroc(v[None], pos), c.S.mean(0)[in_class], c.poisoned[in_class]),
        ]
        # label-poisoning takes the matrix: check that the 1-row form used on the ranked vector is the same thing
        assert dualview.label_poisoning(c.S, c.flipped) == dualview.label_poisoning(c.S.abs().sum(0)[None], c.flipped)
        assert backdoor.detection_auroc(c.S, c.poisoned) == backdoor.detection_auroc(c.S.mean(0)[None], c.poisoned)
        assert backdoor.detection_auroc_in_class(c.S, c.poisoned, c.y, c.target_class) == \
            backdoor.detection_auroc(c.S.mean(0)[in_class][None], c.poisoned[in_class])

        for metric, given, attrex_fn, vec, pos in specs:
            counterpart = f"MislabelingDetectionMetric({given}), area normalised worst..best"
            issue = ranking_issues(vec)
            self.add(metric, counterpart, c.name, attrex_fn(vec, pos), q_normalised_area(Q, vec, pos),
                     issue=issue, reason_key="offset")
            if issue:
                r = ranks(vec)
                self.add(metric, counterpart, c.name, attrex_fn(r, pos), q_normalised_area(Q, r, pos), **free)

        # the label-poisoning score as each library reports it
        vec = c.S.abs().sum(0)
        self.add("label-poisoning", "MislabelingDetectionMetric(sum_test |S|) score, as reported", c.name,
                 dualview.label_poisoning(c.S, c.flipped), q_mislabeling(Q, vec, c.flipped)[0],
                 issue="different normalisation", reason_key="norm")

        # the detection curve itself, and its area in quanda's convention
        def curve_pair(v):
            checked, found = mislabel.detection_curve(v, c.flipped)
            q_score, q_curve = q_mislabeling(Q, v, c.flipped)
            n = len(v)
            a_area = float(torch.trapezoid(found, checked)) - float(found[1]) / (2 * n)
            return found[1:], q_curve, a_area, q_score

        for variant, v in [("as given", c.v)] + ([("tie-free (ranks)", ranks(c.v))] if ranking_issues(c.v) else []):
            issue = ranking_issues(v)
            a_curve, q_curve, a_area, q_area = curve_pair(v)
            self.add("detection-curve", "MislabelingDetectionMetric(self-influence) curve, points j = 1..n",
                     c.name, a_curve, q_curve, issue=issue, reason_key="offset", variant=variant)
            self.add("detection-curve", "MislabelingDetectionMetric score vs the curve's area - found(1)/2n",
                     c.name, a_area, q_area, issue=issue, reason_key="offset", variant=variant)

    # -- per-row AUPRC (shortcut detection, mixed datasets) ---------------------------------------

    def auprc_family(self, c: Case):
        Q = self.Q
        rows = c.stamp_pred == c.mark_class
        a = sum(mislabel.auprc(r, c.marked) for r in c.S[rows]) / int(rows.sum())
        q = q_shortcut(Q, c.S, c.marked, c.mark_class, c.y, c.stamp_labels, c.stamp_pred, c.n_classes)
        self.add("auprc", "ShortcutDetectionMetric vs mean auprc of marked, stamped rows predicted as mark",
                 c.name, a, q)
        self.add("domain-mismatch", "ShortcutDetectionMetric (AUPRC, not top-1)", c.name,
                 dualview.domain_mismatch(c.S, c.marked, c.stamp_pred, c.mark_class), q,
                 issue="different metrics", reason_key="shortcut")

        rows = c.trig_pred == c.target_class
        a = sum(mislabel.auprc(r, c.poisoned) for r in c.S[rows]) / int(rows.sum())
        q = q_mixed(Q, c.S, c.poisoned, c.y, pred=c.trig_pred, label=c.target_class, n_classes=c.n_classes)
        self.add("auprc", "MixedDatasetsMetric vs mean auprc of poisoned, triggered rows predicted as target",
                 c.name, a, q)
        self.add("auprc", "MixedDatasetsMetric, one row (torcheval's binary_auprc), flipped points", c.name,
                 mislabel.auprc(c.v, c.flipped), q_mixed(Q, c.v[None], c.flipped, torch.zeros(len(c.v))))

    # -- correlations ----------------------------------------------------------------------------

    def correlation_family(self, c: Case):
        Q = self.Q
        const = int(((c.S == c.S[:, :1]).all(1) | (c.S2 == c.S2[:, :1]).all(1)).sum())
        a = agreement.spearman(c.S, c.S2) if not const else float("nan")
        self.add("spearman", "spearman_rank_corr (ModelRandomizationMetric's correlation)", c.name, a,
                 q_spearman(Q, c.S, c.S2), issue=f"{const} constant rows" if const else "", reason_key="constant")
        mask = torch.zeros(len(c.subset_ids), c.S.shape[1], dtype=torch.bool)
        for j, ids in enumerate(c.subset_ids):
            mask[j, ids] = True
        outputs = torch.stack([lds.margin(c.logits[j], c.explained) for j in range(len(c.subset_ids))])
        pred = lds.predicted_outputs(c.S, mask)
        const = int(((pred == pred[:1]).all(0) | (outputs == outputs[:1]).all(0)).sum())
        self.add("lds", "LinearDatamodelingMetric(subset_ids, subset_logits)", c.name,
                 lds.lds(c.S, mask, outputs), q_lds(Q, c.S, c.subset_ids, c.logits, c.explained),
                 issue=f"{const} constant columns" if const else "", reason_key="constant")


NO_COUNTERPART = {
    "attrex metrics without a quanda counterpart": {
        "top-k-overlap": "overlap of two methods' top-k; quanda's TopKCardinalityMetric counts distinct top-k "
                         "training points across the test points of one method",
        "trigger-mass": "a feature-attribution heatmap measure; quanda evaluates training-data attribution only",
        "backdoor-base-rate": "the poisoned share of the training set (a constant of the scenario)",
    },
    "quanda metrics without an attrex counterpart": {
        "TopKCardinalityMetric": "distinct top-k training points across test points (Barshan et al. 2020)",
        "ModelRandomizationMetric": "needs an explainer re-run on a randomised model; only its correlation "
                                    "(spearman_rank_corr) is compared, against attrex's spearman",
        "RecallAtKMetric, MRRMetric, TailPatchMetric": "fact tracing for language models",
        "ClassDetectionMetric(s > 1) on class labels": "attrex's identical class is top-1 only (s > 1 is used "
                                                      "here for backdoor-top-k and precision-at-k)",
    },
}


# ---------------------------------------------------------------------------------------------


def run() -> dict:
    Q = _import_quanda()
    ck = Checker(Q)
    for name, kind, n_test, n_train, n_classes, seed in CASES:
        c = make_case(name, kind, n_test, n_train, n_classes, seed)
        ck.class_detection_family(c)
        ck.ranking_family(c)
        ck.auprc_family(c)
        ck.correlation_family(c)
    rows = ck.rows
    max_diff: dict[str, float] = {}
    for r in rows:
        if r.coincide:
            max_diff[r.metric] = max(max_diff.get(r.metric, 0.0), r.abs_diff)
    differences = sorted({r.reason.split("; ", 1)[-1] for r in rows if r.status == "differs"})
    import numpy

    return {
        "quanda_version": Q["version"], "torch_version": torch.__version__, "numpy_version": numpy.__version__,
        "tolerance": TOL,
        "core_metrics_extra_imports": CORE_EXTRA_IMPORTS,
        "ok": all(r.status != "FAIL" for r in rows),
        "counts": {s: sum(r.status == s for r in rows) for s in ("agree", "FAIL", "differs")},
        "max_abs_diff_where_coinciding": max_diff,
        "definitional_differences": differences,
        "no_counterpart": NO_COUNTERPART,
        "comparisons": [asdict(r) for r in rows],
    }


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def print_table(doc: dict) -> None:
    def fmt(x):
        return f"{'(curve)':>9}" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:9.6f}"

    print(f"attrex core.metrics vs quanda {doc['quanda_version']} (torch {doc['torch_version']}, "
          f"numpy {doc['numpy_version']}); tolerance {doc['tolerance']:g}")
    print(f"core.metrics imports beyond torch and the stdlib: {doc['core_metrics_extra_imports'] or 'none'}")
    print("rows marked '  tie-free' repeat the row above on the ranks of its input")
    case = None
    for r in doc["comparisons"]:
        if r["case"] != case:
            case = r["case"]
            print(f"\n== {case}")
            print(f"   {'attrex metric':<22} {'quanda counterpart':<68} {'attrex':>9} {'quanda':>9} {'|diff|':>8}  status")
        metric = r["metric"] if r["variant"] == "as given" else "  tie-free"
        print(f"   {metric:<22} {r['counterpart'][:68]:<68} {fmt(r['attrex'])} {fmt(r['quanda'])} "
              f"{r['abs_diff']:8.1e}  {r['status']}")
        if r["status"] == "differs":
            print(f"      why: {r['reason'].split('; ', 1)[0]}")
        d = r["detail"]
        if d.get("mc_reps"):
            print(f"      quanda over {d['mc_reps']} random column orders: {d['quanda_random_tiebreak_mean']:.6f} "
                  f"+- {d['mc_se']:.6f} (attrex's exact expectation {r['attrex']:.6f}: "
                  f"{'consistent' if d['attrex_within_4se'] else 'NOT within 4 s.e.'})")
    print("\nmax |attrex - quanda| where the definitions coincide (all cases, as given and tie-free):")
    for m, d in doc["max_abs_diff_where_coinciding"].items():
        print(f"   {m:<22} {d:.1e}")
    print("\ndefinitional differences found:")
    for d in doc["definitional_differences"]:
        print(f"   - {d}")
    for title, items in doc["no_counterpart"].items():
        print(f"\n{title}:")
        for k, v in items.items():
            print(f"   - {k}: {v}")
    c = doc["counts"]
    print(f"\n{c['agree']} agree, {c['FAIL']} fail, {c['differs']} differ by definition -> "
          f"{'OK' if doc['ok'] else 'FAILED'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = ap.parse_args(argv)
    try:
        doc = _json_safe(run())
    except ImportError as e:
        print(f"cannot import quanda's metrics ({e}): run this with .venv-quanda/bin/python (make crosscheck)",
              file=sys.stderr)
        return 2
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        print_table(doc)
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
