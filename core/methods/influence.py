"""Influence functions (Koh & Liang 2017), RelatIF (Barshan et al. 2020) and group influence.

**Score.** With ``H = (1/n) Σ_i ∇²θ ℓ(z_i; θ*)`` over the chosen parameters and damping ``λ``::

    s(z_i, z') = ∇θℓ(z'; θ*)ᵀ (H + λI)⁻¹ ∇θℓ(z_i; θ*)

``ℓ`` is the cross-entropy, with the training label for ``z_i`` and the explained class for
``z'``. Koh & Liang's ``I_up,loss(z_i, z') = −∇ℓ(z')ᵀ H⁻¹ ∇ℓ(z_i)`` is the change of the test
loss per unit of *up-weighting* ``z_i``; the score is its negation, so **positive = proponent**:
up-weighting ``z_i`` lowers the test loss, and *removing* it (up-weighting by ``−1/n``)
raises the test loss by about ``s / n``.

**RelatIF** (Barshan et al. 2020, "θ-relative influence"): ``s(z_i, z') / ‖(H + λI)⁻¹ ∇ℓ(z_i)‖``.

**Solvers** of ``(H + λI)⁻¹`` (the maths in :mod:`core.engine.ihvp`), one strategy class each in
:mod:`core.methods.influence_solvers`, chosen by the ``solver`` parameter:

- ``exact``: the Hessian is materialised (at most :attr:`Influence.dense_max` parameters) and
  ``H + λI`` factored by Cholesky (it must be positive definite: raise the damping otherwise);
- ``cg``: conjugate gradients; ``lissa``: the stochastic Neumann series;
- ``arnoldi``: the top-``k`` eigenpairs by Arnoldi iteration (Schioppa et al. 2022), the
  inverse taken through those eigenvalues only; the training gradients are cached projected
  on the ``k`` eigenvectors, so a query is a ``k``-dimensional product.

With at most :attr:`Influence.dense_max` parameters (the last layer: 1,290 for the MNIST CNN)
``exact`` and ``cg`` are run once at fit time on every training gradient -- a Cholesky solve,
or CG column by column against the materialised Hessian -- and ``(H + λI)⁻¹ ∇ℓ(z_i)`` is
cached: a query is one matrix product. ``lissa`` solves for the test gradients at query time
(one series per query batch, against cached training gradients); its self-influence runs the
series once on the ``D`` unit vectors -- LiSSA is linear in its input for a fixed minibatch
sequence, so this yields its operator ``P`` and ``∇ℓ(z_i)ᵀ P ∇ℓ(z_i)`` for every ``i`` -- which
costs ``D`` times a query (RelatIF with LiSSA does it at fit). Over more parameters ``cg`` and
``lissa`` solve per query against cached factored training gradients; self-influence and
RelatIF would need one solve per training point and are refused (use ``arnoldi``).

**Group influence** (:func:`group_influence`): the predicted change of the test loss when a
group of training points is removed, first order (Koh et al. 2019) or second order (Basu,
You & Feizi 2020).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch

from core.cache import make_key
from core.engine.grads import (
    GradBlocks,
    _factorable_linears,
    dense_names,
    gradient_blocks,
    n_params,
    select_params,
)
from core.engine.ihvp import MeanLoss
from core.errors import AttrexError
from core.methods.base import Attributor, Param, Progress, register
from core.methods.influence_solvers import CHUNK, SOLVERS, Solver

PARAMS = (
    Param("solver", "choice", "exact", "how (H + λI)⁻¹ is applied: exact (materialised Hessian, at most 4096 "
          "parameters), cg (conjugate gradients), lissa (stochastic Neumann series) or arnoldi (top-k eigenpairs)",
          choices=tuple(SOLVERS)),
    Param("subset", "text", "last", "parameters of the Hessian and gradients: last (the head), all, or "
          "comma-separated parameter-name prefixes (e.g. extractor.6,head)"),
    Param("damping", "float", 1e-3, "λ added to the Hessian's diagonal (the model's weight decay makes H + λI the "
          "Hessian of the regularised training loss); must be ≥ 0", low=0.0, high=1e4),
    Param("hessian_points", "int", 0, "training points the Hessian averages over (a seeded random subset; 0 = all). "
          "Over all parameters of a CNN, a few hundred keep cg/lissa/arnoldi affordable", low=0, high=10**9),
    Param("cg_iters", "int", 100, "CG: most iterations (one Hessian-vector product each)", low=1, high=100000, log=True),
    Param("cg_tol", "float", 1e-5, "CG: stop a solve at this relative residual ‖b − (H+λI)x‖/‖b‖",
          low=1e-12, high=1.0, log=True),
    Param("lissa_depth", "int", 1000, "LiSSA: steps of the series", low=1, high=10**6, log=True),
    Param("lissa_repeats", "int", 1, "LiSSA: independent runs averaged", low=1, high=1000),
    Param("lissa_scale", "float", 0.0, "LiSSA: scale s (must exceed half the largest eigenvalue of every step's "
          "H + λI); 0 = automatic, 1.5 × the largest eigenvalue found on 10 sampled minibatches", low=0.0, high=1e12),
    Param("lissa_batch", "int", 256, "LiSSA: training points per stochastic Hessian-vector product (0 = all)",
          low=0, high=10**9, log=False),
    Param("arnoldi_rank", "int", 100, "Arnoldi: eigenpairs kept (largest |eigenvalue|)", low=1, high=100000, log=True),
    Param("arnoldi_iters", "int", 200, "Arnoldi: iterations (Hessian-vector products); at least the rank",
          low=1, high=100000, log=True),
    Param("seed", "int", 0, "seed of LiSSA's minibatches, Arnoldi's start vector and the Hessian subset",
          low=0, high=2**31 - 1),
    Param("max_gb", "float", 2.0, "largest cache of training gradients allowed, in GB", low=0.01, high=64.0, log=True),
)


def _names_order_layout(model: torch.nn.Module, names: list[str]) -> torch.Tensor:
    """For each column of :meth:`GradBlocks.flat`, its index in the flat ``names`` order of :class:`MeanLoss`.

    ``GradBlocks.flat`` puts the non-linear parameters first (in ``dense_names`` order), then each
    linear layer as its ``[out, in (+1 for the bias)]`` outer product, row-major.
    """
    params = dict(model.named_parameters())
    offsets, pos = {}, 0
    for n in names:
        offsets[n] = torch.arange(pos, pos + params[n].numel()).view(params[n].shape)
        pos += params[n].numel()
    parts = [offsets[n].reshape(-1) for n in dense_names(model, names)]
    for mname, _module, w, b in _factorable_linears(model, names):
        cols = ([offsets[f"{mname}.weight"]] if w else []) + ([offsets[f"{mname}.bias"][:, None]] if b else [])
        parts.append(torch.cat(cols, 1).reshape(-1))
    return torch.cat(parts)


@register
class Influence(Attributor):
    """Koh & Liang's influence function; see the module docstring for the score, its sign and the solvers."""

    name = "influence"
    title = "Influence functions"
    description = ("Test-loss gradient times the inverse damped Hessian times the training-loss gradient (Koh & Liang): "
                   "how much up-weighting each training point lowers the test loss. Solvers: exact, CG, LiSSA, "
                   "Arnoldi. exact and cg (up to 4096 parameters) cache the inverse-Hessian-transformed training "
                   "gradients and arnoldi their projections on the top eigenvectors, so a query is a matrix product; "
                   "lissa, and cg over more parameters, solve once per query batch (seconds to minutes).")
    reference = "Koh & Liang, Understanding black-box predictions via influence functions, ICML 2017"
    params = PARAMS
    version = "1"
    normalise: ClassVar[bool] = False
    dense_max: ClassVar[int] = 4096  # at most this many parameters: the Hessian is materialised / solved at fit

    def __init__(self, trained, data, cache=None, **params):
        super().__init__(trained, data, cache=cache, **params)
        p = self.hparams
        self.names = select_params(self.model, p["subset"])
        self.dim = n_params(self.model, self.names)
        self.small = self.dim <= self.dense_max
        self.damping = float(p["damping"])
        self.solver: Solver = SOLVERS[p["solver"]](self)
        self.solver.check()
        self._loss: MeanLoss | None = None
        self._layout: torch.Tensor | None = None
        self._h_idx: torch.Tensor | None = None

    # ----- plumbing -------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """How queries are answered: ``dense``, ``per-query`` or ``spectral`` (see :mod:`core.methods.influence_solvers`)."""
        return self.solver.mode

    def cache_key(self) -> str:
        parts = {"method": self.name, "params": self.hparams, "model": self.trained.key, "data": self.data.key,
                 "names": self.names, "mode": self.mode, "small": self.small}
        return make_key(parts, f"{self.name}-{self.version}")

    @property
    def loss(self) -> MeanLoss:
        """The mean training loss over the chosen parameters (features cached for a head-only subset)."""
        if self._loss is None:
            self._loss = MeanLoss(self.model, self.names, self.data.x, self.data.y)
        return self._loss

    @property
    def theta(self) -> torch.Tensor:
        """The trained parameters ``θ*`` ``[D]`` in the flat order of every vector here."""
        return self.loss.theta

    def hessian_indices(self) -> torch.Tensor:
        """Training points the Hessian averages over (all, or a seeded random subset of ``hessian_points``)."""
        if self._h_idx is None:
            n, k = len(self.data), self.hparams["hessian_points"]
            if k == 0 or k >= n:
                self._h_idx = torch.arange(n)
            else:
                g = torch.Generator().manual_seed(self.hparams["seed"])
                self._h_idx = torch.randperm(n, generator=g)[:k].sort().values
        return self._h_idx

    def hvp(self, v: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        """``H v`` (undamped) for ``v [D]`` or ``[D, m]``: the mean over ``indices``, by default the Hessian points."""
        return self.loss.hvp(v, self.hessian_indices() if indices is None else indices)

    def gradients(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss gradients ``[N, D]`` (flat order of :attr:`theta`) of inputs ``x`` with classes ``target``."""
        loss = self.loss
        if loss.on_features:
            return loss.grads(loss.represent(x), target)
        out = []
        for start in range(0, len(x), CHUNK):
            blocks = gradient_blocks(self.model, self.names, x[start: start + CHUNK], target[start: start + CHUNK])
            out.append(self.blocks_flat(blocks))
        return torch.cat(out) if out else torch.zeros(0, self.dim, dtype=self.theta.dtype)

    def blocks_flat(self, blocks: GradBlocks, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows ``start:stop`` of factored gradients as flat gradients ``[rows, D]`` (flat order of :attr:`theta`)."""
        if self._layout is None:
            self._layout = _names_order_layout(self.model, self.names)
        flat = blocks.flat(start, stop)
        out = torch.empty_like(flat)
        out[:, self._layout] = flat
        return out

    def map_training_gradients(self, fn: Callable[[torch.Tensor], torch.Tensor], progress: Progress | None,
                               at: tuple[float, float], message: str) -> torch.Tensor:
        """``fn`` of the training gradients, 1,024 rows at a time (never all of them at once but on the head's
        cached features); progress from ``at[0]`` over ``at[1]``."""
        x, y = self.data.x, self.data.y
        if self.loss.on_features:
            return fn(self.loss.grads(self.loss.inputs, y))
        out = []
        for start in range(0, len(x), 1024):
            out.append(fn(self.gradients(x[start: start + 1024], y[start: start + 1024])))
            if progress:
                progress(at[0] + at[1] * min(start + 1024, len(x)) / len(x), message)
        return torch.cat(out)

    def train_gradient_sum(self, indices: torch.Tensor) -> torch.Tensor:
        """``Σ_{i ∈ indices} ∇ℓ(z_i; θ*)`` ``[D]``."""
        self.fit()
        idx = torch.as_tensor(indices).long()
        if self.solver.grad is not None:
            return self.solver.grad[idx].sum(0)
        total = torch.zeros(self.dim, dtype=self.theta.dtype)
        for start in range(0, len(idx), CHUNK):
            sel = idx[start: start + CHUNK]
            total += self.gradients(self.data.x[sel], self.data.y[sel]).sum(0)
        return total

    # ----- precompute ---------------------------------------------------------------------------------
    def _compute(self, progress):
        say = progress or (lambda fraction, message: None)
        info: dict = {"parameters": self.dim, "mode": self.mode, "hessian_points": len(self.hessian_indices()),
                      "damping": self.damping}
        tensors: dict[str, torch.Tensor] = {}
        self.solver.precompute(tensors, info, say, progress)
        return tensors, {"info": info, "names": self.names, "mode": self.mode, "small": self.small}

    def _restore(self, tensors, meta):
        self.solver.restore(tensors, meta)

    def _validate(self, tensors, meta):
        super()._validate(tensors, meta)
        if meta.get("names") != self.names or meta.get("mode") != self.mode or meta.get("small") != self.small:
            raise ValueError("cached influence state was computed for other parameters or another solver mode")
        for key in ("train/ihvp", "train/grad"):
            if key in tensors and tensors[key].shape[1] != self.dim:
                raise ValueError(f"{key} has {tensors[key].shape[1]} columns for {self.dim} parameters")
        if not all(torch.isfinite(t).all() for t in tensors.values()):
            raise ValueError("cached influence state holds NaN or infinite values")

    # ----- the inverse and the queries ------------------------------------------------------------------
    def inverse(self, b: torch.Tensor) -> torch.Tensor:
        """``(H + λI)⁻¹ b`` by the chosen solver, for ``b [D]`` or ``[D, m]`` (solver diagnostics: ``info["last_solve"]``)."""
        self.fit()
        return self.solver.inverse(b)

    def _normalised(self, s: torch.Tensor) -> torch.Tensor:
        return s / self.solver.norms.clamp_min(torch.finfo(s.dtype).tiny) if self.normalise else s

    def _scores(self, x, target):
        return self._normalised(self.solver.scores(self.gradients(x, target)))

    def _self_scores(self):
        return self._normalised(self.solver.self_scores())


@register
class RelatIF(Influence):
    """Barshan et al.'s θ-relative influence: the influence score divided by ``‖(H + λI)⁻¹ ∇ℓ(z_i)‖``."""

    name = "relatif"
    title = "RelatIF"
    description = ("Influence divided by the norm of the training point's inverse-Hessian-transformed gradient "
                   "(θ-relative influence), so points that move all parameters a lot do not dominate every "
                   "explanation. Same solvers as influence functions.")
    reference = "Barshan et al., RelatIF: identifying explanatory training examples via relative influence, AISTATS 2020"
    normalise = True


# ----- group influence ------------------------------------------------------------------------------
def _group_indices(groups, n: int) -> list[torch.Tensor]:
    """Index tensors of the groups: from a list of index sets, or from group ids ``[n]`` (``-1`` = none)."""
    if isinstance(groups, torch.Tensor):
        if groups.dim() != 1 or len(groups) != n or torch.is_floating_point(groups) or groups.dtype == torch.bool:
            raise AttrexError(f"groups as a tensor must hold one integer group id per training point ([{n}], -1 = in "
                              f"no group); got shape {list(groups.shape)} of {groups.dtype}. A list of index sets "
                              "is the other form")
        ids = groups.long()
        if (ids < -1).any():
            raise AttrexError("group ids must be ≥ 0 (or -1 for a point in no group)")
        return [(ids == g).nonzero().squeeze(1) for g in range(int(ids.max()) + 1)]
    return [torch.as_tensor(g).long().reshape(-1) for g in groups]


def group_influence(
    method: Influence, groups: torch.Tensor | Sequence[Sequence[int] | torch.Tensor], x_test: torch.Tensor,
    target: torch.Tensor | int | None = None, order: int = 2, l2_regularised: bool = False,
) -> torch.Tensor:
    """Predicted change of each test loss when each group is removed, ``ΔL [n_test, n_groups]``.

    ``ΔL = ℓ(z'; θ*_{−U}) − ℓ(z'; θ*)``: positive = removing the group raises the test loss,
    i.e. the group as a whole is a proponent (the sign of the method's scores).
    ``groups``: a list of index sets, or one group id per training point ``[n]`` (``-1`` = in
    no group; groups ``0..max``). ``method``: a (fitted or not) :class:`Influence`, whose
    solver and damping ``λ`` are used. ``n`` = training points, ``U`` a group, ``p = |U|/n``,
    ``H`` the damped Hessian ``(1/n) Σ_i ∇²ℓ_i + λI``, ``g_i`` the training gradients.

    The damping is read as every training point's share of a quadratic term, so the
    per-sample Hessian is ``∇²ℓ_i + λI``. ``l2_regularised=True`` says that the model was
    trained to the minimum of ``(1/n) Σ_i ℓ_i + (λ/2)‖θ‖²`` (a convex model with L2 weight
    ``λ``): every point's share of the regulariser goes with it, so ``g_i`` becomes
    ``∇ℓ_i + λθ*``; otherwise (``False``) the damping is a proximal term ``(λ/2)‖θ − θ*‖²``
    that has no gradient at ``θ*``.

    - ``order=1`` (Koh et al. 2019): the sum of the individual influences,
      ``ΔL₁ = (1/n) ∇ℓ(z')ᵀ H⁻¹ Σ_{i∈U} g_i`` -- with ``l2_regularised=False`` this is
      ``(1/n) Σ_{i∈U} s(z_i, z')`` of the method's scores (exactly so for a symmetric inverse:
      exact, arnoldi; up to the solver's tolerance for cg, whose training side is solved apart).
    - ``order=2``: Basu, You & Feizi (ICML 2020), Theorem 1, the second-order group influence
      on the parameters ``I⁽²⁾(U) = I′(U) + I″(U)`` with
      ``I′(U) = (1 − 2p) / ((1 − p)² n) · H⁻¹ Σ_{i∈U} g_i`` and
      ``I″(U) = 1 / ((1 − p)² n²) · Σ_{j∈U} H⁻¹ ∇²ℓ_j H⁻¹ Σ_{i∈U} g_i``, and
      ``ΔL₂ = ∇ℓ(z')ᵀ I⁽²⁾(U)``. It is the expansion of the exact removal
      ``θ*_{−U} − θ* ≈ (H − H_U / n)⁻¹ Σ_U g_i / n`` (``H_U = Σ_{j∈U} ∇²ℓ_j``, third derivatives
      dropped) to first order in the deviation ``H_U − |U| H`` of the group's curvature from
      the average, so it accounts for the renormalisation by ``1/(1 − p)`` and for the
      correlation between the group's points that the sum of individual influences ignores.
    """
    if order not in (1, 2):
        raise AttrexError(f"order must be 1 or 2; got {order!r}")
    if not isinstance(method, Influence):
        raise AttrexError(f"group influence needs an influence method; got {type(method).__name__}")
    n = len(method.data)
    idx_list = _group_indices(groups, n)
    if not idx_list:
        raise AttrexError("no group given")
    for j, idx in enumerate(idx_list):
        if len(idx) == 0:
            raise AttrexError(f"group {j} is empty")
        if idx.min() < 0 or idx.max() >= n:
            raise AttrexError(f"group {j} holds indices outside [0, {n - 1}]")
        if len(idx.unique()) != len(idx):
            raise AttrexError(f"group {j} lists a training point twice")
        if len(idx) >= n:
            raise AttrexError(f"group {j} holds every training point: nothing would be left to train on")
    x, target = method.prepare_inputs(x_test, target)
    method.fit()
    lam = method.damping
    g_test = method.gradients(x, target)                     # [m, D]
    s_test = method.inverse(g_test.T)                        # [D, m] = (H + λI)⁻¹ ∇ℓ(z')
    out = torch.zeros(len(x), len(idx_list), dtype=g_test.dtype)
    for j, idx in enumerate(idx_list):
        size = len(idx)
        g_sum = method.train_gradient_sum(idx)               # Σ_U g_i
        if l2_regularised:
            g_sum = g_sum + size * lam * method.theta
        first = (s_test.T @ g_sum) / n                       # (1/n) ∇ℓ(z')ᵀ H⁻¹ Σ_U g_i
        if order == 1:
            out[:, j] = first
            continue
        p = size / n
        v = method.inverse(g_sum)                            # H⁻¹ Σ_U g_i
        hu_v = size * (method.hvp(v, idx) + lam * v)         # H_U v = Σ_{j∈U} (∇²ℓ_j + λI) v
        cross = s_test.T @ hu_v                              # ∇ℓ(z')ᵀ H⁻¹ H_U H⁻¹ Σ_U g_i
        out[:, j] = (1 - 2 * p) / (1 - p) ** 2 * first + cross / ((1 - p) ** 2 * n ** 2)
    return out
