"""Integrated Influence (IIF; Yang, Gu & Sun): influence integrated along a path of training targets.

Notation: ``θ*`` the trained parameters (only the chosen ``subset`` varies; every other
parameter stays at ``θ*``), ``ℓ(x, ρ; θ) = −Σ_c ρ_c log softmax f(x; θ)_c`` the cross-entropy
against a target vector ``ρ`` (a one-hot ``y_i`` for the training labels), ``z' = (x', c')``
the test point with its explained class, ``n`` training points, ``K = steps``.

1. **Baseline** (``baseline="unlearn"``, paper §2.3, Eq. 12-13): ``θ' ≈ argmin_θ s·ℓ̃(z'; θ) +
   λ L_train(θ)`` by at most ``unlearn_steps`` minibatch SGD steps from ``θ*`` (learning rate
   ``unlearn_lr``, ``λ = reg``, ``L_train`` the mean training loss on a minibatch), with
   ``s = −1`` for the *proponent* baseline (unlearn ``z'``: its loss goes up) and ``s = +1``
   for the *opponent* baseline (learn ``z'`` harder), the two baselines of the paper's §3.2.
   Baseline targets ``ȳ_i = softmax f(x_i; θ')``. ``unlearn_loss="ce"`` is the paper's
   ``ℓ̃ = ℓ``; its gradient ``∝ 1 − p`` vanishes at a confidently classified test point
   (most MNIST test points: ``p = 1`` in float32), which then does not move at all, so the
   default is ``"margin"``, ``ℓ̃ = −log p/(1−p)`` (TRAK's output function, whose gradient does
   not vanish; both raise the loss of ``z'``). Unlearning stops as soon as ``p_c(z') <
   stop_prob`` (``−ℓ̃`` is unbounded and runs away within a few steps once it moves).
   ``baseline="model"`` uses ``ȳ_i = softmax f(x_i; θ*)``: the implicit baseline of the
   influence function (Lemma 2.5).
2. **Target path** ``ρ_i(t_k) = t_k y_i + (1 − t_k) ȳ_i``, ``t_k = k/K``. ``path="sparse"``
   (default, the paper's appendix E for classification) multiplies it elementwise by the
   one-hot ``y_i``, ``ρ_i(t) ← ρ_i(t) ⊙ y_i``: only the true-class entry moves, from
   ``ȳ_i[y_i]`` to 1, and the other entries are 0, so ``ℓ(x_i, ρ_i(t)) = −ρ_i(t)[y_i] log
   p_{y_i}`` (the brief's "renormalised" would undo the path -- a renormalised ``c·e_y`` is
   ``e_y`` for every ``t`` -- so, following the paper, the sparse target is not
   renormalised). ``path="dense"`` keeps the full linear path (Lemma 2.5 needs it: only the
   dense baseline ``ȳ_i = f(x_i; θ*)`` has ``∇θℓ(x_i, ȳ_i) = 0``).
3. **Models along the path** (§2.4, Eq. 16): ``θ_K = θ*`` and ``θ_k = θ_{k+1} − η
   ∇L_train(Γ(t_k))`` by one epoch of minibatch SGD (``lr``, minibatches of ``batch_size``)
   over ``epoch_samples`` randomly drawn training points with targets ``ρ(t_k)`` -- a
   subsampled epoch (2,048 of MNIST's 6,000 by default), so that a query stays in seconds
   (0 = all points); ``path_epochs`` > 1 repeats it, which brings ``θ_k`` towards the optimum
   of its targets that Eq. 1-4 assume.
4. **Influence** (Eq. 10 with the compression of Eq. 17 and the Fisher of appendix E): at
   each ``k = K..1`` with ``A`` a random projection to ``P = dim`` numbers (fixed over ``k``):
   ``G_k = A ∇θℓ(z'; θ_k)``, ``u_i = A ∇θℓ(x_i, ρ_i(t_k); θ_k)``,
   ``H_k = (1/n) Σ_i u_i u_iᵀ + λ_k I`` (``curvature="fisher"``, the paper's) or the
   Gauss-Newton matrix ``(1/n) Σ_i A J_iᵀ (Σ_c ρ_ic)(diag p_i − p_i p_iᵀ) J_i Aᵀ + λ_k I``
   (``"ggn"``; for cross-entropy it is the true Fisher, and for a linear model the exact
   Hessian), ``λ_k = damping · tr(H_k)/P``, and
   ``JΔy_i = A (∇θℓ(x_i, ρ_i(t_k); θ_k) − ∇θℓ(x_i, ρ_i(t_{k−1}); θ_k))`` (exact: ``ℓ`` is
   linear in the target). ``I(i) = −(1/n) Σ_k G_kᵀ H_k⁻¹ JΔy_i`` -- the paper's ``H`` is the
   Hessian of the summed loss, ``n`` times the mean one used here.

**Sign**: ``I(i)`` is the change of the test loss that training point ``i`` accounts for
along the path from the baseline to the training set, so ``Σ_i I(i) ≈ L(z'; θ*) − L(z';
θ')``; a proponent lowers the test loss (``I < 0``) and the score is ``−I(i)`` (positive =
proponent, the convention of every method). ``mode="proponent"`` uses the unlearning
baseline, ``"opponent"`` the learning one (read its most negative scores), and ``"both"``
runs the two and keeps the positive part of the proponent run plus the negative part of the
opponent run, so :meth:`top_k` lists what the paper's Figure 2 shows.
**Completeness**: :meth:`completeness` reports ``Σ_i I(i)``, ``L(z'; θ*) − L(z'; θ')`` and
their gap per test point; the last queries' values are kept in ``info["completeness"]``.
The identity is exact only for optimal path models and an exact Hessian, up to the Euler error
of Eq. 10: on a small logistic regression with ``path="dense"``, ``curvature="ggn"`` and
converged path models the relative gap is 0.05-0.15 at ``K = 16`` (tests/test_iif.py). The
paper's practical choices break it: sparse targets ``c·e_y`` only reweight samples and cannot
reproduce ``ȳ`` (the model trained on them is not ``θ'``), one epoch is far from an optimum,
and along the dense path the empirical Fisher of the nearly fit soft targets is tiny, which
blows ``H⁻¹`` up. With the defaults the relative gap is close to 1 (reported, not hidden).

**Self-influence** (§3.3, for mislabel detection): the test point is ``z_i`` itself with
the per-sample baseline ``θ'_i = θ* + η ∇θℓ(z_i; θ*)`` (one ascent step, ``η = unlearn_lr``;
with ``baseline="model"`` ``θ'_i = θ*``) and baseline target ``ȳ_i = softmax f(x_i; θ'_i)``.
Only sample ``i``'s target changes on its path, which moves the model by ``O(1/n)``, so the
path models stay at ``θ*``, ``G`` and ``H`` are constant and the ``K``-step sum telescopes
(exactly, ``ℓ`` being linear in the target) to ``I_i(i) = −(1/n) g_iᵀ H⁻¹ A(∇θℓ(x_i, y_i) −
∇θℓ(x_i, ȳ_i))`` at ``θ*`` with ``g_i = A∇θℓ(z_i; θ*)``. The self-score is ``−I_i(i)`` (the
paper ranks the negative self-influence).

**Cost**: the baseline depends on the test point, so a query cannot be one matrix product.
The precompute caches what does not depend on it: the training inputs of the chosen
parameters (penultimate features when ``subset`` is the head, so the body never runs again),
``p(θ*)``, the projected training gradients at ``θ*`` and the curvature ``H_K`` (step ``k = K``
is free). A query then costs ``unlearn_steps`` SGD steps, one prediction pass over the
training set, ``K − 1`` subsampled epochs, and ``K − 1`` per-sample gradient passes over the
whole training set (``C`` of them per step for ``"ggn"``) plus a ``P × P`` solve per step.
Measured costs: ``benchmarks/README.md``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from core.cache import tensor_digest
from core.engine.grads import gradient_blocks, n_params, output, select_params
from core.engine.projection import Projector
from core.errors import AttrexError
from core.methods.base import Attributor, Param, register
from core.models.architectures import penultimate

MAX_EXACT_DIM = 4096  # largest parameter count used without a projection (H is D × D)
CHUNK = 256           # samples whose flat gradients are materialised at once
PRED_BATCH = 1024     # samples per prediction batch
MEMO = 256            # query runs kept for completeness() after scores()


class _Head(nn.Module):
    """The model's last linear layer alone, fed the penultimate features (a head-only subset never re-runs the body)."""

    def __init__(self, head: nn.Linear):
        super().__init__()
        self.head = copy.deepcopy(head)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


@dataclass
class _Run:
    """One test point's integrated influence under one baseline."""

    influence: torch.Tensor  # [n] I(i); the score is -I(i)
    loss_model: float        # L(z'; θ*)
    loss_baseline: float     # L(z'; θ')
    unlearn_steps: int       # SGD steps the baseline took

    @property
    def delta(self) -> float:
        return self.loss_model - self.loss_baseline


def damped(h: torch.Tensor, damping: float) -> tuple[torch.Tensor, float]:
    """``h + λI`` (float64) with ``λ = damping · tr(h)/P``, and ``λ``."""
    h = h.double()
    lam = damping * float(h.diagonal().sum()) / h.shape[0]
    return h + lam * torch.eye(h.shape[0], dtype=h.dtype), lam


@register
class IntegratedInfluence(Attributor):
    name = "integrated-influence"
    title = "Integrated Influence (IIF)"
    description = ("Influence accumulated along a path of training targets from a baseline (the model after "
                   "unlearning the test point) to the training labels, with models retrained along the path and a "
                   "projected Fisher. The baseline depends on the test point, so every query runs a short "
                   "unlearning, K−1 subsampled epochs and K−1 gradient passes over the training set: seconds per "
                   "test point.")
    reference = "Yang, Gu & Sun, Integrated Influence: Data Attribution with Baseline, 2025"
    version = "1"
    self_is_diagonal = False  # the self-score's baseline is one ascent step on z_i, a query's unlearns the test point
    query_batch = 16
    params = (
        Param("mode", "choice", "proponent", "baseline of the queries: proponent (unlearn the test point), "
              "opponent (learn it harder) or both (proponents from the first run, opponents from the second)",
              choices=("proponent", "opponent", "both")),
        Param("steps", "int", 3, "K: points on the target path (K = 1 with baseline=model and path=dense is the "
              "influence function)", low=1, high=32),
        Param("baseline", "choice", "unlearn", "baseline targets: unlearn (softmax of the model after unlearning "
              "the test point) or model (softmax of the trained model: the influence function's baseline)",
              choices=("unlearn", "model")),
        Param("path", "choice", "sparse", "target path: sparse (only the true-class entry moves, the paper's "
              "choice for classification) or dense (the full linear path)", choices=("sparse", "dense")),
        Param("curvature", "choice", "fisher", "H: fisher (empirical, Σ u uᵀ, the paper's) or ggn "
              "(Gauss-Newton / true Fisher; the exact Hessian for a linear model; C gradient passes)",
              choices=("fisher", "ggn")),
        Param("subset", "text", "last", "parameters that vary: last (the head; fast), all, or comma-separated "
              "parameter-name prefixes"),
        Param("projection", "choice", "gaussian", "compression A: gaussian (N(0, 1/P)), sparse (count sketch) or "
              "none (exact; at most 4096 parameters)", choices=("gaussian", "sparse", "none")),
        Param("dim", "int", 256, "P: columns of the compression A (the paper uses 256)", low=8, high=8192, log=True),
        Param("damping", "float", 1e-3, "added to H as damping · tr(H)/P · I (relative to its mean eigenvalue)",
              low=0.0, high=10.0),
        Param("lr", "float", 0.01, "η: SGD learning rate of the epochs along the path", low=0.0, high=10.0),
        Param("epoch_samples", "int", 2048, "training points per path epoch (drawn at random; 0 = all)",
              low=0, high=10_000_000),
        Param("path_epochs", "int", 1, "epochs per point of the path (the paper: 1; more bring θ_k closer to the "
              "optimum of its targets, which the completeness of Eq. 1 assumes)", low=1, high=10_000),
        Param("batch_size", "int", 64, "minibatch of the path epochs and of the unlearning", low=1, high=65536),
        Param("unlearn_steps", "int", 50, "SGD steps of the unlearning baseline", low=0, high=100_000),
        Param("unlearn_lr", "float", 0.001, "learning rate of the unlearning, and η of the self-influence "
              "baseline θ* + η∇ℓ(z_i)", low=0.0, high=10.0),
        Param("unlearn_loss", "choice", "margin", "test loss ℓ̃ of the unlearning: ce (the paper's Eq. 12; its "
              "gradient vanishes at a confidently fit test point, which then barely moves) or margin "
              "(−log p/(1−p), whose gradient does not vanish)", choices=("margin", "ce")),
        Param("stop_prob", "float", 0.1, "the unlearning (proponent baseline) stops once the explained class's "
              "probability at the test point falls below this (0 = always run unlearn_steps); −ℓ(z') is unbounded "
              "and runs away within a few steps once it moves", low=0.0, high=1.0),
        Param("reg", "float", 0.5, "λ of the unlearning objective −ℓ(z') + λ L_train (the paper uses 0.5 on "
              "MNIST)", low=0.0, high=1e4),
        Param("seed", "int", 0, "seed of the compression and of the minibatch draws", low=0, high=2**31 - 1),
    )

    def __init__(self, trained, data, cache=None, **params):
        super().__init__(trained, data, cache=cache, **params)
        p = self.hparams
        self.names = select_params(self.model, p["subset"])
        self.head_only = all(n.startswith("head.") for n in self.names) and isinstance(
            getattr(self.model, "head", None), nn.Linear)
        self._work = (_Head(self.model.head) if self.head_only else copy.deepcopy(self.model)).eval()
        for name, param in self._work.named_parameters():
            param.requires_grad_(name in self.names)
        self.n_grad = n_params(self._work, self.names)
        if p["projection"] == "none" and self.n_grad > MAX_EXACT_DIM:
            raise AttrexError(f"integrated-influence without a projection works with a {self.n_grad} × "
                              f"{self.n_grad} curvature; at most {MAX_EXACT_DIM} parameters are allowed (use "
                              "projection='gaussian' or a smaller subset)")
        self._proj = None if p["projection"] == "none" else Projector(self.n_grad, p["dim"], p["seed"], p["projection"])
        self._theta = {n: q.detach().clone() for n, q in self._work.named_parameters() if n in self.names}
        self._memo: dict[tuple, _Run] = {}

    # ----- the model restricted to the chosen parameters ---------------------------------------
    @property
    def out_dim(self) -> int:
        """``P`` (``D`` without a projection)."""
        return self.n_grad if self._proj is None else self.hparams["dim"]

    def work_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the restricted model takes: penultimate features ``[N, d]`` for a head subset, else ``x``."""
        if not self.head_only:
            return x
        return penultimate(self.model, x, PRED_BATCH)

    def _logits(self, theta: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, C]`` of the restricted model with the chosen parameters set to ``theta`` (differentiable)."""
        return functional_call(self._work, theta, (x,))

    @torch.no_grad()
    def _predict(self, theta: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._logits(theta, x[i: i + PRED_BATCH]) for i in range(0, len(x), PRED_BATCH)])

    def _module(self, theta: dict[str, torch.Tensor]) -> nn.Module:
        m = copy.deepcopy(self._work)
        params = dict(m.named_parameters())
        with torch.no_grad():
            for n, v in theta.items():
                params[n].copy_(v)
        return m.eval()

    def _grads(self, module: nn.Module, x: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
        """``A ∇θ ℓ`` ``[N, P]`` per sample over the chosen parameters (``kind`` ``ce`` or ``soft``)."""
        out = []
        for s in range(0, len(x), CHUNK):
            flat = gradient_blocks(module, self.names, x[s: s + CHUNK], target[s: s + CHUNK], kind, CHUNK).flat()
            out.append(flat if self._proj is None else self._proj(flat))
        return torch.cat(out) if out else torch.zeros(0, self.out_dim)

    def _curvature(self, module: nn.Module, x: torch.Tensor, u: torch.Tensor, probs: torch.Tensor,
                   mass: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Damped ``H`` ``[P, P]`` (float64) and its ``λ``: empirical Fisher of ``u`` ``[n, P]`` or the Gauss-Newton matrix.

        ``probs`` ``[n, C]`` are the model's probabilities, ``mass`` ``[n]`` the target sums ``Σ_c ρ_ic``
        (the Hessian of ``−Σ ρ_c log p_c`` in the logits is ``(Σρ)(diag p − ppᵀ)``).
        """
        n = len(x)
        if self.hparams["curvature"] == "fisher":
            u = u.double()
            h = u.T @ u / n
        else:
            h = torch.zeros(self.out_dim, self.out_dim, dtype=torch.float64)
            for c in range(probs.shape[1]):
                gc = self._grads(module, x, torch.full((n,), c, dtype=torch.long), "ce").double()
                gc = gc * (mass.double() * probs[:, c].double()).clamp_min(0).sqrt()[:, None]
                h += gc.T @ gc
            h /= n
        return damped(h, self.hparams["damping"])

    # ----- precompute ---------------------------------------------------------------------------
    def _compute(self, progress):
        x, y = self.data.x, self.data.y
        n = len(y)
        if progress:
            progress(0.0, "inputs and predictions")
        inputs = self.work_inputs(x)
        star = self._module(self._theta)
        p_star = self._predict(self._theta, inputs).softmax(-1)
        if progress:
            progress(0.2, "training gradients at θ*")
        g = self._grads(star, inputs, y, "ce")                              # [n, P] = A∇ℓ(z_i; θ*)
        if progress:
            progress(0.5, "curvature at θ*")
        h_k, lam = self._curvature(star, inputs, g, p_star, torch.ones(n))
        chol, bad = torch.linalg.cholesky_ex(h_k)
        if bad:
            raise AttrexError(f"the curvature at θ* is singular (rank-deficient Fisher over {self.out_dim} "
                              f"dimensions, damping={self.hparams['damping']}); use damping > 0")
        # self-influence (§3.3): per-sample ascent baseline, telescoped path at θ*
        if progress:
            progress(0.7, "self-influence baselines")
        p_self = self._ascent_probs(inputs, y) if self.hparams["baseline"] == "unlearn" else p_star
        onehot = F.one_hot(y, p_star.shape[1]).to(p_star.dtype)
        if self.hparams["path"] == "sparse":
            jac = (1.0 - p_self.gather(1, y[:, None])) * g
        else:
            jac = self._grads(star, inputs, onehot - p_self, "soft")
        hinv_g = torch.cholesky_solve(g.double().T, chol).T                 # [n, P] H⁻¹ g_i
        self_influence = -(hinv_g * jac.double()).sum(1) / n
        tensors = {"train/p": p_star.float(), "train/g": g.float().contiguous(), "train/self": (-self_influence).float(),
                   "curvature/chol": chol.contiguous()}
        if self.head_only:
            tensors["train/inputs"] = inputs.float().contiguous()
        eig = torch.linalg.eigvalsh(h_k)
        info = {"parameters": self.n_grad, "compressed_dim": self.out_dim, "head_only": self.head_only,
                "params": self.names, "curvature_condition": float(eig.max() / eig.min()) if float(eig.min()) > 0 else None,
                "damping_lambda": lam,
                "self_influence_positive_share": float((-self_influence > 0).float().mean())}
        return tensors, {"params": self.names, "head_only": self.head_only, "info": info}

    def _ascent_probs(self, inputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``softmax f(x_i; θ* + η ∇θℓ(z_i; θ*))`` ``[n, C]``: each sample after one ascent step on its own loss."""
        eta = self.hparams["unlearn_lr"]
        frozen = {n: q.detach() for n, q in self._work.named_parameters() if n not in self._theta}
        buffers = dict(self._work.named_buffers())

        def loss(theta, xi, yi):
            logits = functional_call(self._work, (theta, frozen, buffers), (xi.unsqueeze(0),))
            return F.cross_entropy(logits, yi.unsqueeze(0))

        def shifted(theta, xi, yi):
            step = grad(loss)(theta, xi, yi)
            moved = {k: theta[k] + eta * step[k] for k in theta}
            return functional_call(self._work, (moved, frozen, buffers), (xi.unsqueeze(0),)).squeeze(0)

        fn = vmap(shifted, in_dims=(None, 0, 0))
        chunk = max(1, min(CHUNK, (1 << 26) // max(self.n_grad, 1)))
        out = [fn(self._theta, inputs[s: s + chunk], y[s: s + chunk]).detach() for s in range(0, len(y), chunk)]
        return torch.cat(out).softmax(-1)

    def _validate(self, tensors, meta):
        super()._validate(tensors, meta)
        if meta.get("params") != self.names or meta.get("head_only") != self.head_only:
            raise ValueError("cached integrated-influence state was computed for other parameters")
        if tensors["train/g"].shape[1] != self.out_dim or tensors["curvature/chol"].shape != (self.out_dim,) * 2:
            raise ValueError("cached integrated-influence state has another compressed dimension")

    def _restore(self, tensors, meta):
        self._p_star = tensors["train/p"]
        self._g_star = tensors["train/g"]
        self._self = tensors["train/self"]
        self._chol_k = tensors["curvature/chol"]
        # the cache holds the head's inputs as float32; the head computes in its own dtype
        self._inputs = tensors["train/inputs"].to(self.model.head.weight.dtype) if self.head_only else self.data.x
        self._memo.clear()

    # ----- one query ----------------------------------------------------------------------------
    def _sgd(self, theta: dict[str, torch.Tensor], steps: list[torch.Tensor], loss_fn, lr: float,
             stop=None) -> tuple[dict[str, torch.Tensor], int]:
        """Plain SGD over the chosen parameters, one step per index batch in ``steps``; stops early when ``stop(θ)``.

        Returns the parameters and the number of steps taken.
        """
        theta = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        keys, taken = list(theta), 0
        for idx in steps:
            with torch.enable_grad():
                grads = torch.autograd.grad(loss_fn(theta, idx), [theta[k] for k in keys])
            with torch.no_grad():
                for k, gk in zip(keys, grads, strict=True):
                    theta[k] -= lr * gk
            taken += 1
            if stop is not None and stop(theta):
                break
        return {k: v.detach() for k, v in theta.items()}, taken

    def _baseline(self, z: torch.Tensor, c: torch.Tensor, sign: float) -> tuple[dict[str, torch.Tensor], int]:
        """``θ' ≈ argmin sign·ℓ(z'; θ) + reg·L_train(θ)`` by at most ``unlearn_steps`` minibatch SGD steps from ``θ*``.

        Unlearning (``sign < 0``) stops once ``p_c(z') < stop_prob``; returns ``θ'`` and the steps taken.
        """
        p = self.hparams
        n = len(self.data)
        gen = torch.Generator().manual_seed(p["seed"] + 7919)
        batches = [torch.randint(0, n, (min(p["batch_size"], n),), generator=gen) for _ in range(p["unlearn_steps"])]
        y, inputs, reg = self.data.y, self._inputs, p["reg"]

        def loss(theta, idx):
            logits = self._logits(theta, z)
            test = F.cross_entropy(logits, c) if p["unlearn_loss"] == "ce" else -output("margin", logits, c).sum()
            train = F.cross_entropy(self._logits(theta, inputs[idx]), y[idx]) if reg > 0 else 0.0
            return sign * test + reg * train

        def unlearned(theta) -> bool:
            with torch.no_grad():
                return float(self._logits(theta, z).softmax(-1)[0, c[0]]) < p["stop_prob"]

        stop = unlearned if sign < 0 and p["stop_prob"] > 0 else None
        return self._sgd(self._theta, batches, loss, p["unlearn_lr"], stop)

    def _targets(self, base_probs: torch.Tensor, t: float) -> torch.Tensor:
        """``ρ(t)`` ``[n, C]``: linear from the baseline targets to the labels, sparse or dense."""
        onehot = F.one_hot(self.data.y, base_probs.shape[1]).to(base_probs.dtype)
        rho = t * onehot + (1.0 - t) * base_probs
        return rho * onehot if self.hparams["path"] == "sparse" else rho

    def _epoch(self, theta: dict[str, torch.Tensor], rho: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        """``path_epochs`` (subsampled) SGD epochs on the training inputs with targets ``rho``: ``θ_k`` from ``θ_{k+1}``."""
        p = self.hparams
        n = len(self.data)
        m = n if p["epoch_samples"] == 0 else min(p["epoch_samples"], n)
        gen = torch.Generator().manual_seed(p["seed"] * 1009 + k)
        batches = [idx for _ in range(p["path_epochs"]) for idx in torch.randperm(n, generator=gen)[:m].split(p["batch_size"])]
        inputs = self._inputs

        def loss(theta, idx):
            return output("soft", self._logits(theta, inputs[idx]), rho[idx]).mean()

        return self._sgd(theta, batches, loss, p["lr"])[0]

    def _run(self, x1: torch.Tensor, c1: torch.Tensor, sign: float) -> _Run:
        """Integrated influence ``I`` ``[n]`` of one test point ``x1`` ``[1, ...]`` for class ``c1`` ``[1]``."""
        key = (tensor_digest(x1), int(c1), sign)
        if key in self._memo:
            return self._memo[key]
        p = self.hparams
        K, n = p["steps"], len(self.data)
        y, inputs = self.data.y, self._inputs
        z = self.work_inputs(x1)
        if p["baseline"] == "unlearn":
            theta_b, taken = self._baseline(z, c1, sign)
            base_probs = self._predict(theta_b, inputs).softmax(-1)
        else:
            theta_b, base_probs, taken = self._theta, self._p_star, 0
        with torch.no_grad():
            loss_model = float(F.cross_entropy(self._logits(self._theta, z), c1))
            loss_base = float(F.cross_entropy(self._logits(theta_b, z), c1))
        rho = {k: self._targets(base_probs, k / K) for k in range(K + 1)}
        thetas = {K: self._theta}
        for k in range(K - 1, 0, -1):
            thetas[k] = self._epoch(thetas[k + 1], rho[k], k)
        influence = torch.zeros(n, dtype=torch.float64)
        for k in range(K, 0, -1):
            module = self._module(thetas[k])
            g_test = self._grads(module, z, c1, "ce").double()             # [1, P]
            if k == K:
                g_train = self._g_star                                       # A∇ℓ(x_i, y_i; θ*) = u_i(t_K)
                v = torch.cholesky_solve(g_test.T, self._chol_k)             # H_K⁻¹ G_K  [P, 1]
            if self.hparams["path"] == "sparse":
                if k < K:
                    g_train = self._grads(module, inputs, y, "ce")
                mass_k = rho[k].gather(1, y[:, None]).squeeze(1)             # c_k,i: ℓ(x_i, ρ_i) = c_k,i ℓ(z_i)
                mass_prev = rho[k - 1].gather(1, y[:, None]).squeeze(1)
                u = mass_k[:, None] * g_train if k < K else g_train
                jac = (mass_k - mass_prev)[:, None] * g_train
            else:
                mass_k = torch.ones(n)
                u = g_train if k == K else self._grads(module, inputs, rho[k], "soft")
                jac = self._grads(module, inputs, rho[k] - rho[k - 1], "soft")
            if k < K:
                probs = self._predict(thetas[k], inputs).softmax(-1)
                h = self._curvature(module, inputs, u, probs, mass_k)[0]
                v, bad = torch.linalg.solve_ex(h, g_test.T)
                if bad:
                    raise AttrexError(f"the curvature at path step {k} is singular; use damping > 0")
            influence -= (jac.double() @ v).squeeze(1) / n
        run = _Run(influence, loss_model, loss_base, taken)
        if len(self._memo) >= MEMO:
            self._memo.pop(next(iter(self._memo)))
        self._memo[key] = run
        return run

    def _runs(self, x: torch.Tensor, target: torch.Tensor, sign: float) -> list[_Run]:
        return [self._run(x[i: i + 1], target[i: i + 1], sign) for i in range(len(x))]

    def _record(self, runs: list[_Run], mode: str) -> None:
        recent = [{"mode": mode, "sum_influence": float(r.influence.sum()), "delta_loss": r.delta,
                   "gap": float(r.influence.sum()) - r.delta, "unlearn_steps": r.unlearn_steps} for r in runs]
        self.info["completeness"] = (self.info.get("completeness", []) + recent)[-8:]

    # ----- queries ------------------------------------------------------------------------------
    def _scores(self, x, target):
        mode = self.hparams["mode"]
        if mode in ("proponent", "opponent"):
            runs = self._runs(x, target, -1.0 if mode == "proponent" else 1.0)
            self._record(runs, mode)
            return torch.stack([-r.influence for r in runs]).float()
        pro = self._runs(x, target, -1.0)
        opp = self._runs(x, target, 1.0)
        self._record(pro, "proponent")
        self._record(opp, "opponent")
        s_pro = torch.stack([-r.influence for r in pro])
        s_opp = torch.stack([-r.influence for r in opp])
        return (s_pro.clamp_min(0) + s_opp.clamp_max(0)).float()

    def completeness(self, x: torch.Tensor, target: torch.Tensor | int | None = None,
                     mode: str | None = None) -> dict[str, torch.Tensor]:
        """Completeness of the attribution, per test row ``[n_test]`` each.

        ``sum_influence = Σ_i I(i)``, ``delta_loss = L(z'; θ*) − L(z'; θ')``, ``gap`` their
        difference, ``relative_gap = |gap| / |delta_loss|``, and the two losses. ``mode``:
        ``proponent`` or ``opponent`` baseline (default: the method's mode; ``proponent`` when
        it is ``both``). Runs already made by :meth:`scores` are reused.
        """
        mode = mode or ("proponent" if self.hparams["mode"] == "both" else self.hparams["mode"])
        if mode not in ("proponent", "opponent"):
            raise AttrexError(f"mode must be proponent or opponent; got {mode!r}")
        x, target = self.prepare_inputs(x, target)
        self.fit()
        runs = self._runs(x, target, -1.0 if mode == "proponent" else 1.0)
        self._record(runs, mode)
        total = torch.tensor([float(r.influence.sum()) for r in runs], dtype=torch.float64)
        delta = torch.tensor([r.delta for r in runs], dtype=torch.float64)
        return {"sum_influence": total, "delta_loss": delta, "gap": total - delta,
                "relative_gap": (total - delta).abs() / delta.abs().clamp_min(1e-12),
                "loss_model": torch.tensor([r.loss_model for r in runs], dtype=torch.float64),
                "loss_baseline": torch.tensor([r.loss_baseline for r in runs], dtype=torch.float64)}

    def _self_scores(self):
        return self._self.clone()


