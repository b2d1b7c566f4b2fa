"""Representer point selection: the last layer written as a sum over training points.

Both methods work on the penultimate features ``f_i = features(x_i)`` of the trained model,
with a constant 1 appended (``f̃_i = [f_i, 1]``, ``d' = d + 1``) so that the head's bias is a
column of the layer ``W̃ = [W | b]`` (``[K, d']``) and is decomposed together with the weights
(a head without bias: ``f̃_i = f_i``, ``d' = d``).

**RPS-L2** (``representer``; Yeh et al., NeurIPS 2018). Retrain the layer on the fixed
features to a stationary point of

    J(W̃) = (1/n) Σ_i ℓ(W̃ f̃_i, t_i) + λ ‖W̃‖²_F                  (ℓ: softmax cross-entropy)

by L-BFGS in float64, warm-started at the trained head, finished by a few Newton–CG steps
(see :func:`fit_l2_layer`). Stationarity,
``(1/n) Σ_i g_i f̃_iᵀ + 2λ W̃ = 0`` with ``g_i = ∂ℓ/∂Φ_i = softmax(Φ_i) − t_i``, gives the
representer theorem

    W̃ = Σ_i α_i f̃_iᵀ,        α_i = −(1/(2λn)) g_i          ([n, K])

so the retrained layer's logit for class ``c`` at ``x'`` is ``Σ_i α_ic f̃_iᵀ f̃(x')`` exactly
(up to the solver's residual, reported as ``relative_residual`` = ``‖W̃ − Σα_i f̃_iᵀ‖/‖W̃‖``
= ``‖∇J‖ / (2λ‖W̃‖)``, which also bounds the relative logit error). Score of training point
``i`` for class ``c``: ``α_ic · f̃_iᵀ f̃(x')``. **Bias**: the bias is the appended feature's
weight and is regularised with the weights (as in Yeh et al.'s released code); a
separately unregularised bias would not be a sum over training points, and the
decomposition would then miss the logits by ``b``. Targets ``t_i``: the training labels
(one-hot, the spec's ``ℓ(W f_i, y_i)``; default) or, with ``targets="model"``, the trained
model's softmax outputs, which keeps the retrained layer close to the model (Yeh et al.'s
code does this). Self-influence: ``α_{i,y_i} ‖f̃_i‖²`` (≥ 0 with label targets; large for
points the layer fits badly).

**RPS-LJE** (``representer-lje``; Sui, Wu & Sanner, NeurIPS 2021; influenciae eq. 5). No
retraining: from the trained layer ``Ŵ`` take one step of gradient *ascent* on the mean
training loss ``L(W) = (1/n) Σ_i ℓ(W f̃_i, y_i)`` (no regulariser),

    W* = Ŵ + η ∇L(Ŵ)          (ascent, as in the influenciae text and Sui et al.'s released code),

then expand the Jacobian to first order around ``W*``: ``∇L(Ŵ) ≈ ∇L(W*) + H (Ŵ − W*) ≈ 0``
gives the Newton-corrected layer

    W_LJE = W* − H⁻¹ ∇L(W*) = Σ_i (1/n) [W* − H⁻¹ (g_i f̃_iᵀ)],     g_i = softmax(W* f̃_i) − e_{y_i},

with ``H`` the Hessian of ``L`` over the layer at ``W*`` (``[K·d', K·d']``, materialised:
``(1/n) Σ_i (diag p_i − p_i p_iᵀ) ⊗ f̃_i f̃_iᵀ``). The softmax makes ``H`` singular along
``1_K ⊗ v`` (adding one vector to every row leaves ``L`` unchanged), so ``H + δI`` is
inverted with ``δ = damping · tr(H) / (K·d')``; since every ``g_i`` sums to zero over the
classes, ``δ`` only touches the Hessian's genuinely small eigenvalues. Score of training
point ``i`` for class ``c`` at ``x'`` (the ``i``-th term of ``(W_LJE f̃(x'))_c``):

    s_ic(x') = (1/n) [ w*_c · f̃(x') − ((H + δI)⁻¹ vec(g_i f̃_iᵀ))_c · f̃(x') ].

Sui et al. write the first term as ``Θ*/(n f_i)`` times the kernel ``f̃_iᵀ f̃(x')``: it is
the same share ``(1/n) w*_c · f̃(x')`` for every training point, so it moves all scores of a
test row equally and leaves their ranking to the second term; the terms sum over ``i`` to
the logits of ``W_LJE``, an approximation of the trained layer's (reported: the agreement of
their predictions, and ``layer_change`` = ``‖W_LJE − Ŵ‖/‖Ŵ‖``, large when ``Ŵ`` is far from
a stationary point of the unregularised loss, e.g. after training with weight decay). A query solves ``(H + δI) u = (e_c − 1/K) ⊗ f̃(x')`` with the cached
Cholesky factor (centering ``e_c`` changes nothing in exact arithmetic, see above, and keeps
the damping's null-space component out), then ``second_i = g_iᵀ U f̃_i``. Self-influence:
``s_{i,y_i}(x_i)``, first term included (as the authors' code computes it), precomputed.

**Sign convention**: positive = supports the explained class's logit (proponent); neither
paper's sign is flipped.
"""

from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F

from core.errors import AttrexError
from core.methods.base import Attributor, Param, Progress, register
from core.models.architectures import penultimate
from core.models.training import predict

log = logging.getLogger("attrex.methods.representer")
BATCH = 500


def penultimate_with_bias(model: torch.nn.Module, x: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    """Penultimate features ``[N, d']`` in float64 (eval mode), with a constant 1 appended when the head
    has a bias (``d' = d + 1``; else ``d' = d``)."""
    f = penultimate(model, x, batch).double()
    if model.head.bias is None:
        return f
    return torch.cat([f, torch.ones(len(f), 1, dtype=torch.float64)], 1)


def head_matrix(model: torch.nn.Module) -> torch.Tensor:
    """The trained last layer ``[K, d']`` float64: ``[W | b]``, or ``W`` for a head without bias."""
    w = model.head.weight.detach().double()
    if model.head.bias is None:
        return w.clone()
    return torch.cat([w, model.head.bias.detach().double()[:, None]], 1)


def agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Share of rows whose argmax agrees."""
    return float((logits_a.argmax(1) == logits_b.argmax(1)).double().mean()) if len(logits_a) else float("nan")


class LastLayerMethod(Attributor):
    """Shared plumbing: penultimate features of the training set and surrogate diagnostics."""

    def _train_features(self, progress: Progress | None = None) -> torch.Tensor:
        if progress:
            progress(0.0, "penultimate features")
        return penultimate_with_bias(self.model, self.data.x)

    def _test_split(self) -> torch.Tensor | None:
        """The scenario's test inputs when the training data came from a scenario (for diagnostics)."""
        sc = self.data.scenario
        return getattr(sc, "x_test", None) if sc is not None else None

    def _agreement_info(self, layer: torch.Tensor, feats: torch.Tensor, prefix: str) -> dict:
        """Prediction agreement of ``feats @ layer.T`` with the model on the training (and test) inputs.

        The model's own logits are ``feats @ head.T`` (its head applied to the same features), so no
        second forward pass is needed.
        """
        head = head_matrix(self.model)
        info = {f"{prefix}_agreement_train": agreement(feats @ layer.T, feats @ head.T)}
        x_test = self._test_split()
        if x_test is not None and len(x_test):
            ft = penultimate_with_bias(self.model, x_test)
            info[f"{prefix}_agreement_test"] = agreement(ft @ layer.T, ft @ head.T)
        return info

    def _validate(self, tensors, meta):
        super()._validate(tensors, meta)
        width = self.model.head.in_features + (self.model.head.bias is not None)
        feats = tensors.get("train/features")
        if feats is None or feats.shape != (len(self.data), width):
            raise ValueError(f"cached features must have shape [{len(self.data)}, {width}]")


# ----- RPS-L2 ---------------------------------------------------------------------------------
LAMBDA = Param("lmbda", "float", 3e-3, "L2 weight λ of the retrained last layer (objective (1/n)Σℓ + λ‖W‖²)",
               low=1e-8, high=10.0, log=True)
TARGETS = Param("targets", "choice", "labels", "targets of the retraining: the training labels, or the model's "
                "softmax outputs (keeps the retrained layer close to the model)", choices=("labels", "model"))
GRAD_TOL = Param("tol", "float", 1e-7, "stop when ‖∇J‖ ≤ tol · 2λ‖W‖ (= the relative decomposition residual)",
                 low=1e-12, high=1e-2, log=True)
MAX_ITER = Param("max_iter", "int", 5000, "most L-BFGS iterations", low=10, high=100000, log=True)


def fit_l2_layer(feats: torch.Tensor, targets: torch.Tensor, lmbda: float, init: torch.Tensor,
                 tol: float = 1e-7, max_iter: int = 5000) -> tuple[torch.Tensor, dict]:
    """Minimise ``J(W) = (1/n) Σ_i CE(W f_i, t_i) + λ‖W‖²`` over ``W [K, d']`` in float64.

    ``feats [n, d']``, ``targets [n, K]`` (rows are probability vectors), ``init [K, d']``.
    L-BFGS (strong Wolfe line search; at most ``max_iter`` iterations) until the gradient is
    within ``√tol`` of the goal, then Newton–CG steps to ``tol`` (exact Hessian-vector
    products; a step is accepted when it lowers ‖∇J‖, which near the optimum converges
    quadratically, where L-BFGS's line search can no longer resolve the last digits of ``J``). Returns ``W`` and
    diagnostics: ``iterations`` (L-BFGS), ``newton_steps``, ``objective``, ``grad_norm``
    (Frobenius) and ``converged`` (``grad_norm ≤ tol · 2λ‖W‖``).
    """
    n = len(feats)

    def value_grad(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logp = (feats @ w.T).log_softmax(1)
        value = -(targets * logp).sum() / n + lmbda * w.pow(2).sum()
        probs = logp.exp()
        return value, (probs - targets).T @ feats / n + 2 * lmbda * w, probs

    def hvp(probs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        z = probs * (feats @ v.T)                                        # (diag p − p pᵀ)(V f_i), row by row
        return (z - probs * z.sum(1, keepdim=True)).T @ feats / n + 2 * lmbda * v

    def done(w: torch.Tensor, g: torch.Tensor, tolerance: float = tol) -> bool:
        return float(g.norm()) <= tolerance * 2 * lmbda * float(w.norm())

    w = init.clone().double().requires_grad_(False)
    param = w.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([param], lr=1.0, max_iter=25, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=0.0, tolerance_change=0.0)

    def closure() -> torch.Tensor:
        value, grad, _ = value_grad(param.detach())
        param.grad = grad
        return value

    iterations, last = 0, float("inf")
    while iterations < max_iter:
        opt.param_groups[0]["max_iter"] = min(25, max_iter - iterations)
        opt.step(closure)
        iterations = opt.state[param]["n_iter"]
        value, grad, _ = value_grad(param.detach())
        if done(param.detach(), grad, math.sqrt(tol)) or float(value) >= last - 1e-14 * abs(last):
            break
        last = float(value)
    w = param.detach().clone()
    value, grad, probs = value_grad(w)
    newton = 0
    while not done(w, grad) and newton < 30:
        newton += 1
        step, r = torch.zeros_like(w), -grad                            # CG on H s = −∇J
        d, rr = r.clone(), float((r * r).sum())
        for _ in range(500):
            hd = hvp(probs, d)
            a = rr / float((d * hd).sum())
            step, r = step + a * d, r - a * hd
            rr_new = float((r * r).sum())
            if rr_new <= 1e-8 * float((grad * grad).sum()):
                break
            d, rr = r + (rr_new / rr) * d, rr_new
        t, improved = 1.0, False
        while t > 1e-6:
            v2, g2, p2 = value_grad(w + t * step)
            if float(g2.norm()) < float(grad.norm()):
                w, value, grad, probs, improved = w + t * step, v2, g2, p2, True
                break
            t /= 2
        if not improved:
            break
    info = {"iterations": int(iterations), "newton_steps": newton, "objective": float(value),
            "grad_norm": float(grad.norm()), "converged": done(w, grad)}
    return w, info


@register
class RepresenterL2(LastLayerMethod):
    """Representer points (Yeh et al. 2018) of an L2-regularised retraining of the last layer; see the module docstring."""

    name = "representer"
    title = "Representer points (L2)"
    description = ("Retrains the last layer with an L2 penalty to a stationary point, where it is exactly a sum "
                   "over training points: score = α_ic · f_iᵀ f(x'), α_i = −∂ℓ/∂Φ_i / (2λn).")
    reference = "Yeh et al., Representer point selection for explaining deep neural networks, NeurIPS 2018"
    params = (LAMBDA, TARGETS, GRAD_TOL, MAX_ITER)
    version = "1"

    def _compute(self, progress: Progress | None):
        t0 = time.perf_counter()
        p = self.hparams
        feats = self._train_features(progress)
        n, k = len(feats), self.data.n_classes
        if p["targets"] == "labels":
            targets = F.one_hot(self.data.y.long(), k).double()
        else:
            targets = predict(self.model, self.data.x).double().softmax(1)
        if progress:
            progress(0.2, "retraining the last layer (L-BFGS)")
        t1 = time.perf_counter()
        w, solver = fit_l2_layer(feats, targets, p["lmbda"], head_matrix(self.model), p["tol"], p["max_iter"])
        solve_seconds = time.perf_counter() - t1
        g = (feats @ w.T).softmax(1) - targets
        alpha = -g / (2 * p["lmbda"] * n)
        w_rep = alpha.T @ feats
        residual = float((w_rep - w).norm() / w.norm().clamp_min(1e-300))
        if not solver["converged"]:
            log.warning("representer: L-BFGS stopped at ‖∇J‖ = %.3g (relative residual %.3g)",
                        solver["grad_norm"], residual)
        info = {"lmbda": p["lmbda"], "targets": p["targets"], **solver, "relative_residual": residual,
                "solve_seconds": solve_seconds,
                "retrained_train_accuracy": float(((feats @ w.T).argmax(1) == self.data.y).double().mean())}
        info.update(self._agreement_info(w, feats, "retrained"))
        tensors = {"train/features": feats, "train/alpha": alpha, "layer": w}
        return tensors, {"info": info, "fit_seconds": time.perf_counter() - t0}

    def _restore(self, tensors, meta):
        self._feats = tensors["train/features"].double()
        self._alpha = tensors["train/alpha"].double()
        self.layer = tensors["layer"].double()  # the retrained [W | b], [K, d + 1]

    def _validate(self, tensors, meta):
        super()._validate(tensors, meta)
        if tensors.get("train/alpha") is None or tensors["train/alpha"].shape != (len(self.data), self.data.n_classes):
            raise ValueError("cached α has the wrong shape")

    def _scores(self, x, target):
        kernel = penultimate_with_bias(self.model, x) @ self._feats.T             # [m, n]: f̃(x')ᵀ f̃_i
        return (kernel * self._alpha[:, target].T).float()                # α_{i,c} f̃_iᵀ f̃(x')

    def _self_scores(self):
        own = self._alpha.gather(1, self.data.y.long()[:, None]).squeeze(1)
        return (own * self._feats.pow(2).sum(1)).float()


# ----- RPS-LJE --------------------------------------------------------------------------------
LR = Param("lr", "float", 1e-2, "step η of the one gradient-ascent step W* = Ŵ + η∇L(Ŵ) (0: expand at Ŵ itself)",
           low=0.0, high=10.0)
DAMPING = Param("damping", "float", 1e-3, "δ added to the Hessian, relative to its mean eigenvalue tr(H)/(K·d')",
                low=1e-10, high=1.0, log=True)


MAX_HESSIAN = 8192  # last-layer parameters (K·d'): the Hessian takes 8·(K·d')² bytes, 512 MiB at this size


def lje_hessian(feats: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Hessian of ``(1/n) Σ_i CE(W f_i, ·)`` over ``vec(W)`` (row-major ``[K, d']``), ``[K·d', K·d']``.

    ``H = (1/n) Σ_i (diag p_i − p_i p_iᵀ) ⊗ f_i f_iᵀ`` for ``feats [n, d']`` and ``probs [n, K]``
    (it does not depend on the labels).
    """
    n, d = feats.shape
    k = probs.shape[1]
    h = torch.zeros(k * d, k * d, dtype=torch.float64)
    for c in range(k):
        h[c * d:(c + 1) * d, c * d:(c + 1) * d] = (feats * probs[:, c: c + 1]).T @ feats
    for start in range(0, n, 2048):
        v = (probs[start: start + 2048, :, None] * feats[start: start + 2048, None, :]).reshape(-1, k * d)
        h -= v.T @ v
    return h / n


@register
class RepresenterLJE(LastLayerMethod):
    """Representer points by local Jacobian expansion (Sui et al. 2021); see the module docstring."""

    name = "representer-lje"
    title = "Representer points (LJE)"
    description = ("No retraining: one gradient-ascent step from the trained last layer, then a Newton step back "
                   "with the layer's Hessian, written as a sum over training points (local Jacobian expansion).")
    reference = ("Sui, Wu & Sanner, Representer point selection via local Jacobian expansion for post-hoc "
                 "classifier explanation of deep neural networks and ensemble models, NeurIPS 2021")
    params = (LR, DAMPING)
    version = "1"

    def _compute(self, progress: Progress | None):
        t0 = time.perf_counter()
        p = self.hparams
        k = self.data.n_classes
        size = k * (self.model.head.in_features + (self.model.head.bias is not None))
        if size > MAX_HESSIAN:
            raise AttrexError(f"the last layer has {size} parameters; representer-lje materialises its Hessian "
                              f"and accepts at most {MAX_HESSIAN}")
        feats = self._train_features(progress)
        n, d = feats.shape
        onehot = F.one_hot(self.data.y.long(), k).double()
        w_hat = head_matrix(self.model)
        grad_hat = ((feats @ w_hat.T).softmax(1) - onehot).T @ feats / n
        w_star = w_hat + p["lr"] * grad_hat                                  # one step of gradient ascent
        probs = (feats @ w_star.T).softmax(1)
        g = probs - onehot                                                   # ∂ℓ_i/∂Φ_i at W*, [n, K]
        if progress:
            progress(0.2, f"Hessian of the last layer ({k * d} parameters)")
        h = lje_hessian(feats, probs)
        delta = p["damping"] * float(h.diagonal().sum()) / (k * d)
        h.diagonal().add_(delta)
        chol, fail = torch.linalg.cholesky_ex(h)
        if int(fail):
            raise AttrexError(f"the damped Hessian is not positive definite (damping={p['damping']}); raise the damping")
        grad_star = g.T @ feats / n
        step = torch.cholesky_solve(grad_star.reshape(-1, 1), chol).reshape(k, d)
        w_lje = w_star - step
        self._feats, self._g, self._chol, self._w_star = feats, g, chol, w_star
        if progress:
            progress(0.5, "self-influence")
        own = torch.cat([self._score_rows(feats[s: s + 512], self.data.y[s: s + 512].long(), rows=slice(s, s + 512))
                         for s in range(0, n, 512)])
        info = {"lr": p["lr"], "damping": p["damping"], "damping_absolute": delta,
                "grad_norm_trained": float(grad_hat.norm()), "grad_norm_expanded": float(grad_star.norm()),
                "newton_step_norm": float(step.norm()), "layer_change": float((w_lje - w_hat).norm() / w_hat.norm())}
        info.update(self._agreement_info(w_lje, feats, "lje"))
        tensors = {"train/features": feats, "train/grad": g, "train/self": own, "hessian_cholesky": chol,
                   "w_star": w_star, "w_lje": w_lje}
        return tensors, {"info": info, "fit_seconds": time.perf_counter() - t0}

    def _restore(self, tensors, meta):
        self._feats = tensors["train/features"].double()
        self._g = tensors["train/grad"].double()
        self._self = tensors["train/self"].float()
        self._chol = tensors["hessian_cholesky"].double()
        self._w_star = tensors["w_star"].double()
        self.layer = tensors["w_lje"].double()  # W_LJE = W* − H⁻¹∇L(W*), [K, d + 1]

    def _validate(self, tensors, meta):
        super()._validate(tensors, meta)
        kd = self.data.n_classes * (self.model.head.in_features + (self.model.head.bias is not None))
        if tensors.get("hessian_cholesky") is None or tensors["hessian_cholesky"].shape != (kd, kd):
            raise ValueError("cached Hessian factor has the wrong shape")

    def _score_rows(self, ft: torch.Tensor, target: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """Scores ``[m, n]`` for test features ``ft [m, d']`` and classes ``target [m]``; with ``rows``, only
        each test row's own training point (``ft`` are then the training features ``rows``), ``[m]``."""
        k, d = self._w_star.shape
        m = len(ft)
        e = F.one_hot(target, k).double() - 1.0 / k                          # centred class indicator
        rhs = (e[:, :, None] * ft[:, None, :]).reshape(m, k * d).T
        u = torch.cholesky_solve(rhs, self._chol).T.reshape(m, k, d)        # mat((H + δI)⁻¹ (e_c ⊗ f̃(x')))
        first = (self._w_star[target] * ft).sum(1)                           # w*_c · f̃(x')
        n = len(self._feats)
        if rows is not None:
            second = torch.einsum("tk,tka,ta->t", self._g[rows], u, self._feats[rows])
            return (first - second) / n
        second = (torch.einsum("tka,ia->tik", u, self._feats) * self._g[None]).sum(-1)   # g_iᵀ U f̃_i
        return (first[:, None] - second) / n

    def _scores(self, x, target):
        return self._score_rows(penultimate_with_bias(self.model, x), target).float()

    def _self_scores(self):
        return self._self
