"""DualView: a Crammer–Singer multiclass SVM on the penultimate features, explained by its duals.

The last layer is replaced by the SVM (Yolcu et al., "DualView"; Crammer & Singer 2001) on
the features ``x_i = [f_i, 1]`` (``[n, d']``, the 1 standing in for the head's bias; no 1 when
the head has no bias):

    primal   min_W ½‖W‖² + C Σ_i ξ_i   s.t.  w_{y_i}·x_i − w_c·x_i ≥ 1 − ξ_i  (c ≠ y_i),  ξ_i ≥ 0,
    dual     max_α Σ_{i, c≠y_i} α_ic − ½‖W(α)‖²   s.t.  α_ic ≥ 0,  Σ_c α_ic ≤ C,
             w_c = Σ_i β_ic x_i,   β_ic = Σ_{c'≠y_i} α_ic' if c = y_i, else −α_ic.

The dual is solved for real by the sequential dual method of Keerthi et al. (KDD 2008, "A
sequential dual method for large scale multi-class linear SVMs"): visit the samples in a
random order; for sample ``i`` with the others fixed the dual is the small QP over its
``K`` coordinates ``b = β_i``

    min_b ½ A_i ‖b‖² + Σ_c B_c b_c   s.t.  Σ_c b_c = 0,  b_c ≤ C·[c = y_i],
    A_i = ‖x_i‖²,  B_c = w_c·x_i + [c ≠ y_i] − A_i β_ic,

whose solution ``b_c = min(C·[c = y_i], (θ − B_c)/A_i)`` has its multiplier ``θ`` found by
sorting ``D_c = B_c + A_i C·[c = y_i]`` (closed form; the Crammer–Singer fixed point). ``W``
is updated in place after each sample. Samples that cannot move (``β_i = 0`` and margin
constraint met: the sub-QP's solution is 0) are left out of the sweeps (exact shrinking: the
margins of all samples are recomputed, vectorised, before each round of 1–10 sweeps over the
others; more sweeps per round when few can move). After each round the primal ``P(W(α))``
and the dual ``D(α)`` are evaluated on all samples; the solver stops at the relative duality
gap ``(P − D)/|P| ≤ tol`` and reports both, the gap and whether it got there.

**Attribution** of training point ``i`` to class ``c`` at ``x'``:
``DV_c(i, x') = β_ic · x_iᵀ x'`` (``x' = [f(x'), 1]``; ``[m, n]`` per query, one matrix product
with the cached support vectors' features); summed over ``i`` it is the SVM's logit
``w_c·x'``. Only points on or inside the margin have ``β_i ≠ 0`` (support vectors), so the
explanation is sparse; a larger ``C`` (harder margin) gives fewer of them (the DualView
paper's appendix B; it sweeps ``C`` on a log scale). **Sign**: positive = the point pushes
the explained class's score up (proponent), as in the paper. For the explained class
``c = y_i`` of a support vector ``β_ic > 0``; for another class ``β_ic ≤ 0``.
**Self-influence**: ``DV_{y_i}(i, x_i) = β_{i,y_i} ‖x_i‖²`` (≥ 0; 0 for non-support vectors,
largest for margin violators, whose ``β_{i,y_i} = C``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from core.errors import AttrexError
from core.methods.base import Param, Progress, register
from core.methods.representer import LastLayerMethod, penultimate_with_bias

log = logging.getLogger("attrex.methods.dualview")


@dataclass
class SVMSolution:
    """The dual solution: ``beta [n, K]`` (``β`` above), ``weights [K, d']`` = ``βᵀ X`` and the solver's record."""

    beta: np.ndarray
    weights: np.ndarray
    primal: float
    dual: float
    gap: float          # relative duality gap (P − D) / |P|
    epochs: int
    seconds: float
    converged: bool


def cs_objectives(x: np.ndarray, y: np.ndarray, beta: np.ndarray, weights: np.ndarray, c: float) -> tuple[float, float]:
    """Primal ``½‖W‖² + C Σ_i max(0, max_{m≠y_i}(1 + w_m·x_i) − w_{y_i}·x_i)`` and dual ``−β·E − ½‖W‖²``.

    ``E_im = [m ≠ y_i]``; with ``β_im = −α_im`` (``m ≠ y_i``) the dual is ``Σ α_im − ½‖W‖²``.
    """
    n = len(y)
    rows = np.arange(n)
    s = x @ weights.T
    s_own = s[rows, y].copy()
    s[rows, y] = -np.inf
    hinge = np.maximum(0.0, 1.0 + s.max(1) - s_own)
    half_sq = 0.5 * float((weights * weights).sum())
    primal = half_sq + c * float(hinge.sum())
    dual = -half_sq - float(beta.sum() - beta[rows, y].sum())
    return primal, dual


def _margin_violation(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``max_{m≠y_i}(1 + w_m·x_i) − w_{y_i}·x_i`` per sample, ``[n]`` (> 0: inside the margin)."""
    rows = np.arange(len(y))
    s = x @ weights.T
    own = s[rows, y].copy()
    s[rows, y] = -np.inf
    return 1.0 + s.max(1) - own


def _sweep(x: np.ndarray, labels: list[int], beta: list[list[float]], weights: np.ndarray, sq_norms: list[float],
           order: list[int], c: float) -> None:
    """One pass of the sequential dual method over the samples ``order``: ``beta`` and ``weights`` in place.

    ``beta`` is held as Python lists during the solve: scalar arithmetic on a sample's ``K``
    coordinates is much faster than numpy calls on arrays this small; only ``W x_i`` and
    the update of ``W`` use numpy.
    """
    k = weights.shape[0]
    for i in order:
        a = sq_norms[i]
        yi = labels[i]
        if a <= 0:
            # x_i = 0 (possible only without the constant 1): an LP in β_i whose optimum puts the whole
            # budget C on one other class; W does not change
            if k > 1:
                new = [0.0] * k
                new[(yi + 1) % k], new[yi] = -c, c
                beta[i] = new
            continue
        xi = x[i]
        old = beta[i]
        b = [s + 1.0 - a * o for s, o in zip((weights @ xi).tolist(), old, strict=True)]
        b[yi] -= 1.0                                   # B_m = g_m − A β_m,  g_m = w_m·x_i + [m ≠ y_i]
        ac = a * c
        d = b.copy()
        d[yi] += ac                                    # D_m = B_m + A C_m
        ds = sorted(d, reverse=True)
        acc, r = ds[0] - ac, 1
        while r < k and acc < r * ds[r]:               # θ_r = (Σ_{top r} D − A C)/r below D_(r+1): one more free
            acc += ds[r]
            r += 1
        theta = acc / r
        new = [min(0.0, (theta - bm) / a) for bm in b]
        new[yi] = 0.0
        new[yi] = -sum(new)          # = min(C, (θ − B_y)/A) up to rounding, so that Σ_m β_im = 0 exactly
        if new != old:
            beta[i] = new
            weights += np.multiply.outer(np.subtract(new, old), xi)


def solve_crammer_singer(x: np.ndarray, y: np.ndarray, n_classes: int, c: float, tol: float = 1e-4,
                         max_epochs: int = 1000, seed: int = 0, progress: Progress | None = None) -> SVMSolution:
    """Solve the Crammer–Singer dual by the sequential dual method (see the module docstring).

    ``x [n, d']`` float64 features (append the constant yourself), ``y [n]`` labels in
    ``[0, n_classes)``, ``c > 0``. Returns ``β [n, K]`` with ``W = βᵀ x`` recomputed exactly
    from the duals, the primal and dual objectives, their relative gap and the sweeps done
    (``epochs``: sweeps over the samples that could move).
    """
    if not c > 0:
        raise AttrexError(f"C must be positive; got {c!r}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    n, k = len(y), n_classes
    rows: list[list[float]] = [[0.0] * k for _ in range(n)]    # β, row by row (see _sweep)
    beta = np.zeros((n, k))
    weights = np.zeros((k, x.shape[1]))
    sq_norms = np.einsum("ij,ij->i", x, x).tolist()
    labels = y.tolist()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    primal, dual, gap, epoch, evaluations = math.inf, -math.inf, math.inf, 0, 0
    first_gap = None
    while epoch < max_epochs:
        # exact shrinking: a sample with β_i = 0 that meets its margin is at its sub-QP's optimum
        active = np.flatnonzero((beta != 0).any(1) | (_margin_violation(x, y, weights) > 0))
        # once the active set is small, several sweeps over it per full evaluation (the evaluation costs O(n))
        inner = int(np.clip(n // max(4 * len(active), 1), 1, 10))
        for _ in range(min(inner, max_epochs - epoch)):
            epoch += 1
            rng.shuffle(active)
            _sweep(x, labels, rows, weights, sq_norms, active.tolist(), c)
        evaluations += 1
        beta[:] = rows
        if evaluations % 10 == 0:
            weights[:] = beta.T @ x                     # undo the drift of the in-place updates
        primal, dual = cs_objectives(x, y, beta, weights, c)
        gap = (primal - dual) / max(abs(primal), 1e-300)
        if progress:
            first_gap = first_gap or max(gap, tol * 1.0001)
            done = math.log(first_gap / max(gap, tol)) / math.log(first_gap / tol)
            progress(min(max(done, 0.0), 1.0), f"SVM dual sweep {epoch}: relative duality gap {gap:.2e}")
        if gap <= tol:
            break
    weights = beta.T @ x
    primal, dual = cs_objectives(x, y, beta, weights, c)
    gap = (primal - dual) / max(abs(primal), 1e-300)
    return SVMSolution(beta, weights, primal, dual, gap, epoch, time.perf_counter() - t0, bool(gap <= tol))


@register
class DualView(LastLayerMethod):
    """DualView (Yolcu et al.): sparse attributions from the duals of a multiclass SVM surrogate head."""

    name = "dualview"
    title = "DualView"
    description = ("Replaces the last layer by a Crammer–Singer multiclass SVM on the penultimate features, solved "
                   "in the dual; score = β_ic · f_iᵀ f(x'), nonzero only for support vectors (sparse), summing to "
                   "the SVM's logit. Larger C: harder margin, fewer support vectors.")
    reference = ("Yolcu, Wiegand, Samek & Lapuschkin, DualView: data attribution from the dual perspective (2024); "
                 "solver: Keerthi et al., A sequential dual method for large scale multi-class linear SVMs, KDD 2008")
    params = (
        Param("C", "float", 1e-2, "SVM cost C (larger: harder margin, fewer support vectors, longer solve)",
              low=1e-8, high=1e4, log=True),
        # 1e-4: decision values within 2.4e-4 of scikit-learn's (liblinear) on the MNIST CNN's features,
        # 1.6x the solve time of 1e-3, which leaves 2e-3 (and 1.2-1.7% on Fashion-MNIST and CIFAR-10)
        Param("tol", "float", 1e-4, "stop at this relative duality gap (P − D)/P", low=1e-8, high=0.5, log=True),
        Param("max_epochs", "int", 2000, "most sweeps over the training set", low=1, high=100000, log=True),
        Param("seed", "int", 0, "seed of the order in which samples are visited", low=0, high=2**31 - 1),
    )
    version = "1"

    def _compute(self, progress: Progress | None):
        t0 = time.perf_counter()
        p = self.hparams
        feats = self._train_features(progress)
        y = self.data.y.long()
        sol = solve_crammer_singer(feats.numpy(), y.numpy(), self.data.n_classes, p["C"], p["tol"],
                                   p["max_epochs"], p["seed"], progress)
        if not sol.converged:
            log.warning("dualview: stopped after %d sweeps at relative duality gap %.3g (tol %.3g)",
                        sol.epochs, sol.gap, p["tol"])
        beta = torch.from_numpy(sol.beta)
        weights = torch.from_numpy(sol.weights)
        support = (beta != 0).any(1)
        per_class = torch.bincount(y[support], minlength=self.data.n_classes)
        at_bound = support & (beta.gather(1, y[:, None]).squeeze(1) >= p["C"] * (1 - 1e-9))
        info = {
            "C": p["C"], "primal": sol.primal, "dual": sol.dual, "duality_gap": sol.gap, "tol": p["tol"],
            "converged": sol.converged, "epochs": sol.epochs, "solve_seconds": sol.seconds,
            "support_vectors": int(support.sum()), "support_share": float(support.double().mean()),
            "support_vectors_per_class": per_class.tolist(), "support_vectors_at_bound": int(at_bound.sum()),
            "surrogate_train_accuracy": float(((feats @ weights.T).argmax(1) == y).double().mean()),
        }
        info.update(self._agreement_info(weights, feats, "surrogate"))
        tensors = {"train/features": feats, "train/beta": beta}
        return tensors, {"info": info, "fit_seconds": time.perf_counter() - t0}

    def _validate(self, tensors, meta):
        super()._validate(tensors, meta)
        beta = tensors.get("train/beta")
        if beta is None or beta.shape != (len(self.data), self.data.n_classes):
            raise ValueError("cached duals have the wrong shape")

    def _restore(self, tensors, meta):
        feats = tensors["train/features"].double()
        self.beta = tensors["train/beta"].double()                # [n, K], sparse by rows
        self.weights = self.beta.T @ feats                        # the SVM's [W | b], [K, d + 1]
        self.support = (self.beta != 0).any(1).nonzero().squeeze(1)
        self._sv_feats = feats[self.support].contiguous()          # [n_sv, d + 1]
        self._sv_beta = self.beta[self.support].contiguous()       # [n_sv, K]
        self._self = (self.beta.gather(1, self.data.y.long()[:, None]).squeeze(1) * feats.pow(2).sum(1)).float()

    def _scores(self, x, target):
        ft = penultimate_with_bias(self.model, x)                                     # [m, d + 1]
        out = torch.zeros(len(x), len(self.data), dtype=torch.float64)
        out[:, self.support] = (ft @ self._sv_feats.T) * self._sv_beta[:, target].T   # β_{i,c} x_iᵀ x'
        return out.float()

    def _self_scores(self):
        return self._self
