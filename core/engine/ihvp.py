"""Inverse-Hessian-vector products, and the Hessian of a mean training loss to apply them to.

Everything here works on an operator given as a matrix-free *Hessian-vector product*
``hvp(V) -> H V`` with ``V`` of shape ``[D, m]`` (``m`` vectors as columns; the solvers
also accept a single vector ``[D]`` and answer in the same shape). ``H`` is symmetric; the
damping ``λ ≥ 0`` is passed to the solvers, which invert ``H + λI``:

- :class:`CholeskyInverse` -- the *exact* solver: ``H`` materialised, ``H + λI = L Lᵀ``.
- :class:`SpectralInverse` -- from eigenpairs ``H ≈ Q diag(μ) Qᵀ`` (all of them from a
  materialised ``H``, or the top ``k`` from :func:`arnoldi`): ``(H + λI)⁻¹ ≈ Q diag(1/(μ + λ)) Qᵀ``.
- :func:`conjugate_gradient` -- CG on ``(H + λI) x = b`` with one HVP per iteration, as in
  Hessian-free optimisation (Martens 2010), each column stopping at its own relative
  residual ``‖b − (H + λI) x‖ / ‖b‖ ≤ tol``; returns the residuals reached.
- :func:`lissa` -- the stochastic Neumann series of Agarwal et al. (2017), as used by Koh &
  Liang: ``v_0 = b``, ``v_{j+1} = b + (I − (H_j + λI) / s) v_j`` with ``H_j`` the Hessian
  estimate of step ``j`` (a minibatch), ``depth`` steps, averaged over ``repeats`` runs, and
  the result ``v / s``. It converges when every eigenvalue of ``H + λI`` lies in ``(0, 2s)``.
- :func:`arnoldi` -- the Arnoldi iteration of Schioppa et al. (2022), "Scaling up influence
  functions": an orthonormal Krylov basis ``W`` of ``span{w_0, H w_0, H² w_0, ...}`` (full
  re-orthogonalisation, classical Gram--Schmidt applied twice) and the Hessenberg matrix
  ``A = Wᵀ H W``; the eigenpairs of ``A`` ("distill" in the paper) give Ritz approximations of
  the top eigenpairs of ``H``, of which the ``k`` largest in absolute value are kept.

:class:`MeanLoss` builds the HVP of ``L(θ) = (1/n) Σ_i ℓ(z_i; θ)`` over a parameter subset
with ``torch.func`` (forward-over-reverse: ``jvp`` of ``grad``, ``vmap``-ed over the columns
of ``V``, accumulated over batches of samples), the per-sample gradients in the same flat
parameter order, and the exact Hessian for small parameter counts (``D`` HVPs with the unit
vectors). When the subset is the model's last linear layer ``head`` only, the training set
is pushed through ``model.features`` once and everything is computed on the cached features;
for the cross-entropy the HVP then takes its closed form, ``∇²_z ℓ = diag(p) − p pᵀ`` on the
logits ``z = W a + b`` (the same numbers as ``torch.func``, which a test checks, much faster).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from core.engine.grads import output
from core.errors import AttrexError
from core.models.architectures import penultimate

Matvec = Callable[[torch.Tensor], torch.Tensor]  # V [D, m] -> H V [D, m]


def _columns(b: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``b`` as a matrix of columns ``[D, m]``, and whether it was a single vector."""
    if b.dim() == 1:
        return b[:, None], True
    if b.dim() == 2:
        return b, False
    raise AttrexError(f"expected a vector [D] or a matrix of columns [D, m]; got shape {list(b.shape)}")


def _check_damping(damping: float) -> None:
    if not (damping >= 0 and math.isfinite(damping)):
        raise AttrexError(f"damping must be a finite number ≥ 0; got {damping!r}")


# ----- exact / spectral ---------------------------------------------------------------------------
def _checked_hessian(hessian: torch.Tensor, damping: float) -> torch.Tensor:
    """A materialised ``hessian [D, D]`` checked (square, finite, valid damping) and symmetrised in float64."""
    _check_damping(damping)
    if hessian.dim() != 2 or hessian.shape[0] != hessian.shape[1]:
        raise AttrexError(f"the Hessian must be square; got shape {list(hessian.shape)}")
    if not torch.isfinite(hessian).all():
        raise AttrexError("the Hessian holds NaN or infinite values")
    h = hessian.double()
    return (h + h.T) / 2


@dataclass
class SpectralInverse:
    """``(H + λI)⁻¹`` through eigenpairs of ``H``: ``Q diag(1/(μ + λ)) Qᵀ``.

    ``eigvals [k]`` and orthonormal ``eigvecs [D, k]``. With ``k = D`` (from
    :meth:`from_hessian`) this is the exact inverse; with the top ``k`` from :func:`arnoldi`
    it is Schioppa et al.'s low-rank inverse, which ignores the directions outside the
    Krylov-found eigenspace (they contribute nothing, instead of ``1/λ``).
    """

    eigvals: torch.Tensor
    eigvecs: torch.Tensor
    damping: float

    @classmethod
    def from_hessian(cls, hessian: torch.Tensor, damping: float) -> SpectralInverse:
        """Eigendecomposition (in float64) of a materialised symmetric ``hessian [D, D]``."""
        h = _checked_hessian(hessian, damping)
        mu, q = torch.linalg.eigh(h)
        out = cls(mu.to(hessian.dtype), q.to(hessian.dtype), float(damping))
        out.check_invertible()
        return out

    def check_invertible(self) -> None:
        """Refuse a (numerically) singular ``H + λI`` with a message saying what to change."""
        shifted = self.eigvals.double() + self.damping
        scale = max(float(self.eigvals.abs().max()) if len(self.eigvals) else 0.0, self.damping, 1e-30)
        if len(shifted) and float(shifted.abs().min()) <= 1e-10 * scale:
            raise AttrexError(f"H + λI is singular (an eigenvalue of H is {float(self.eigvals[shifted.abs().argmin()]):.3g} "
                              f"and λ = {self.damping:g}); increase the damping")

    @property
    def weights(self) -> torch.Tensor:
        """``1 / (μ + λ)`` per kept eigenpair ``[k]``."""
        return 1.0 / (self.eigvals + self.damping)

    def project(self, g: torch.Tensor) -> torch.Tensor:
        """Coordinates of row vectors ``g [N, D]`` in the eigenbasis: ``g Q`` ``[N, k]``."""
        return g @ self.eigvecs

    def __call__(self, b: torch.Tensor) -> torch.Tensor:
        """``(H + λI)⁻¹ b`` for ``b [D]`` or ``[D, m]``."""
        cols, single = _columns(b)
        x = self.eigvecs @ (self.weights[:, None] * (self.eigvecs.T @ cols))
        return x[:, 0] if single else x


@dataclass
class CholeskyInverse:
    """``(H + λI)⁻¹`` through the Cholesky factor ``L`` (``L Lᵀ = H + λI``) of a materialised Hessian.

    The *exact* solver: the factor is computed in float64 and applied by two triangular solves.
    ``H + λI`` must be positive definite (the influence function's assumption); otherwise
    :meth:`from_hessian` raises :class:`AttrexError` naming the smallest eigenvalue.
    """

    factor: torch.Tensor
    damping: float

    @classmethod
    def from_hessian(cls, hessian: torch.Tensor, damping: float) -> CholeskyInverse:
        h = _checked_hessian(hessian, damping)
        h = h + damping * torch.eye(len(h), dtype=torch.float64)
        factor, status = torch.linalg.cholesky_ex(h)
        if int(status) != 0:
            low = float(torch.linalg.eigvalsh(h)[0]) - damping
            raise AttrexError(f"H + λI is not positive definite: the smallest eigenvalue of H is {low:.3g} and λ = "
                              f"{damping:g}; increase the damping above {max(-low, 0):.3g}, or use solver arnoldi")
        return cls(factor, float(damping))

    def __call__(self, b: torch.Tensor) -> torch.Tensor:
        """``(H + λI)⁻¹ b`` for ``b [D]`` or ``[D, m]`` (in ``b``'s dtype, computed in float64)."""
        cols, single = _columns(b)
        x = torch.cholesky_solve(cols.double(), self.factor).to(cols.dtype)
        return x[:, 0] if single else x


# ----- conjugate gradient -------------------------------------------------------------------------
@dataclass
class CGInfo:
    """What CG reached: iterations run, per-column relative residual ``‖b − (H+λI)x‖/‖b‖`` (recomputed
    at the end), columns that met ``tol``, and columns stopped by non-positive curvature ``pᵀ(H+λI)p ≤ 0``."""

    iterations: int
    relative_residual: torch.Tensor
    converged: int
    negative_curvature: int

    def as_dict(self) -> dict:
        r = self.relative_residual
        return {"iterations": self.iterations, "max_relative_residual": float(r.max()) if len(r) else 0.0,
                "median_relative_residual": float(r.median()) if len(r) else 0.0,
                "converged": self.converged, "columns": len(r), "negative_curvature": self.negative_curvature}


def conjugate_gradient(
    hvp: Matvec, b: torch.Tensor, damping: float = 0.0, max_iter: int = 100, tol: float = 1e-6,
    x0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, CGInfo]:
    """Solve ``(H + λI) x = b`` by conjugate gradients, every column of ``b [D, m]`` independently.

    One batched HVP per iteration on the columns still running. A column stops when its
    relative residual is at most ``tol``, or when it meets non-positive curvature (``H + λI``
    not positive definite along the search direction -- possible for a non-convex model; the
    iterate so far is kept and the column counted in ``negative_curvature``).
    Returns ``x`` (same shape as ``b``) and a :class:`CGInfo`.
    """
    _check_damping(damping)
    if max_iter < 1 or not tol > 0:
        raise AttrexError(f"CG needs max_iter ≥ 1 and tol > 0; got {max_iter}, {tol}")
    cols, single = _columns(b)

    def op(v: torch.Tensor) -> torch.Tensor:
        return hvp(v) + damping * v

    x = torch.zeros_like(cols) if x0 is None else _columns(x0)[0].clone()
    r = cols - op(x) if x0 is not None else cols.clone()
    p = r.clone()
    rs = (r * r).sum(0)
    b_norm = cols.norm(dim=0).clamp_min(torch.finfo(cols.dtype).tiny)
    active = rs.sqrt() > tol * b_norm
    negative = torch.zeros(cols.shape[1], dtype=torch.bool)
    it = 0
    while it < max_iter and bool(active.any()):
        it += 1
        idx = active.nonzero().squeeze(1)
        p_a = p[:, idx]
        ap = op(p_a)
        curv = (p_a * ap).sum(0)
        bad = curv <= 0
        if bool(bad.any()):
            negative[idx[bad]] = True
            active[idx[bad]] = False
        good = ~bad
        idx, p_a, ap, curv = idx[good], p_a[:, good], ap[:, good], curv[good]
        if len(idx) == 0:
            break
        alpha = rs[idx] / curv
        x[:, idx] += alpha * p_a
        r[:, idx] -= alpha * ap
        rs_new = (r[:, idx] ** 2).sum(0)
        p[:, idx] = r[:, idx] + (rs_new / rs[idx].clamp_min(torch.finfo(cols.dtype).tiny)) * p_a
        rs[idx] = rs_new
        active[idx] = rs_new.sqrt() > tol * b_norm[idx]
    residual = (cols - op(x)).norm(dim=0) / b_norm
    info = CGInfo(it, residual, int((residual <= tol * 1.0001).sum()), int(negative.sum()))
    return (x[:, 0] if single else x), info


# ----- LiSSA ---------------------------------------------------------------------------------------
@dataclass
class LissaInfo:
    """Scale used, steps run, and the last step's relative change ``‖v_d − v_{d−1}‖ / ‖v_d‖`` (max over
    columns and repeats; it shrinks like ``(1 − (μ_min + λ)/s)^d`` when the series converges)."""

    scale: float
    depth: int
    repeats: int
    last_relative_change: float

    def as_dict(self) -> dict:
        return {"scale": self.scale, "depth": self.depth, "repeats": self.repeats,
                "last_relative_change": self.last_relative_change}


def lissa(
    hvp_at: Callable[[torch.Tensor, int], torch.Tensor], b: torch.Tensor, damping: float, scale: float,
    depth: int, repeats: int = 1,
) -> tuple[torch.Tensor, LissaInfo]:
    """LiSSA estimate of ``(H + λI)⁻¹ b`` for ``b [D]`` or ``[D, m]`` (see the module docstring).

    ``hvp_at(V, step)`` applies step ``step``'s Hessian estimate (``step = r·depth + j`` for
    repeat ``r``, depth ``j``): a minibatch HVP for the stochastic algorithm, or the full
    ``H V`` for the deterministic one. The same estimate is applied to every column, so the
    result is linear in ``b``: running it on the unit vectors gives the LiSSA operator itself.
    Raises :class:`AttrexError` when the series diverges (``scale`` too small, or ``H + λI``
    with a negative eigenvalue).
    """
    _check_damping(damping)
    if not (scale > 0 and math.isfinite(scale)):
        raise AttrexError(f"LiSSA scale must be a positive number; got {scale!r}")
    if depth < 1 or repeats < 1:
        raise AttrexError(f"LiSSA needs depth ≥ 1 and repeats ≥ 1; got {depth}, {repeats}")
    cols, single = _columns(b)
    total = torch.zeros_like(cols)
    change = 0.0
    b_norm = cols.norm(dim=0).clamp_min(torch.finfo(cols.dtype).tiny)
    for rep in range(repeats):
        v = cols.clone()
        for j in range(depth):
            new = cols + v - (hvp_at(v, rep * depth + j) + damping * v) / scale
            if j == depth - 1:
                change = max(change, float(((new - v).norm(dim=0) / new.norm(dim=0).clamp_min(1e-30)).max()))
            v = new
            if j % 50 == 49 and not (torch.isfinite(v).all() and float((v.norm(dim=0) / b_norm).max()) < 1e12):
                raise AttrexError(
                    f"LiSSA diverged after {j + 1} steps (scale {scale:g}, damping {damping:g}): the scale must "
                    "exceed half the largest eigenvalue of H + λI, and H + λI must be positive definite "
                    "(increase lissa_scale or the damping)")
        total += v / scale
    x = total / repeats
    if not torch.isfinite(x).all():
        raise AttrexError(f"LiSSA diverged (scale {scale:g}, damping {damping:g}); increase the scale or the damping")
    return (x[:, 0] if single else x), LissaInfo(float(scale), depth, repeats, change)


# ----- Arnoldi ---------------------------------------------------------------------------------------
@dataclass
class ArnoldiInfo:
    """Iterations run (fewer than asked when the Krylov space became invariant), and the largest relative
    Ritz residual estimate ``|A[n, n−1]| · |y_n| / |μ|`` of a kept eigenpair (0 = exact eigenpairs)."""

    iterations: int
    max_ritz_residual: float
    eigenvalues: list[float]

    def as_dict(self) -> dict:
        return {"iterations": self.iterations, "max_ritz_residual": self.max_ritz_residual,
                "top_eigenvalues": self.eigenvalues[:10], "smallest_kept_eigenvalue": min(self.eigenvalues, default=0.0)}


def arnoldi(
    hvp: Matvec, dim: int, n_iter: int, top_k: int, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32, start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, ArnoldiInfo]:
    """Top-``k`` eigenpairs (by absolute eigenvalue) of the symmetric ``H`` by ``n_iter`` Arnoldi steps.

    Returns ``eigvals [k]`` (descending by absolute value), ``eigvecs [D, k]`` (orthonormal
    columns, the Ritz vectors ``W y``) and an :class:`ArnoldiInfo`. The start vector is
    ``N(0, I)`` from ``generator`` unless ``start [D]`` is given. ``n_iter`` is capped at ``dim``.
    """
    if n_iter < 1 or top_k < 1:
        raise AttrexError(f"Arnoldi needs n_iter ≥ 1 and top_k ≥ 1; got {n_iter}, {top_k}")
    n_iter = min(n_iter, dim)
    basis = torch.zeros(n_iter + 1, dim, dtype=dtype)
    h = torch.zeros(n_iter + 1, n_iter, dtype=torch.float64)
    w = torch.randn(dim, generator=generator, dtype=dtype) if start is None else start.to(dtype).clone()
    basis[0] = w / w.norm()
    n = n_iter
    for i in range(n_iter):
        u = hvp(basis[i][:, None])[:, 0].to(dtype)
        if not torch.isfinite(u).all():
            raise AttrexError("the Hessian-vector product returned NaN or infinite values")
        scale = float(u.norm())
        coef = torch.zeros(i + 1, dtype=torch.float64)
        for _ in range(2):  # classical Gram--Schmidt, twice
            c = basis[: i + 1] @ u
            u = u - basis[: i + 1].T @ c
            coef += c.double()
        h[: i + 1, i] = coef
        norm = float(u.norm())
        h[i + 1, i] = norm
        if norm <= 1e-10 * max(scale, 1e-30):  # invariant subspace: the Ritz pairs are exact
            n = i + 1
            break
        basis[i + 1] = u / norm
    square = h[:n, :n]
    mu, y = torch.linalg.eigh((square + square.T) / 2)
    order = mu.abs().argsort(descending=True)[: min(top_k, n)]
    mu, y = mu[order], y[:, order]
    vecs = basis[:n].T @ y.to(dtype)
    ritz = (h[n, n - 1].abs() * y[n - 1].abs() / mu.abs().clamp_min(1e-300)) if n < dim else torch.zeros(len(mu))
    info = ArnoldiInfo(n, float(ritz.max()) if len(ritz) else 0.0, [float(m) for m in mu])
    return mu.to(dtype), vecs, info


def largest_eigenvalue(hvp: Matvec, dim: int, n_iter: int = 20, generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float32) -> float:
    """The largest eigenvalue of the symmetric ``H`` (a Ritz value: it approaches from below)."""
    mu, _, _ = arnoldi(hvp, dim, n_iter, min(n_iter, dim), generator, dtype)
    return float(mu.max())


# ----- the mean training loss over a parameter subset -------------------------------------------
class MeanLoss:
    """``L(θ) = (1/n) Σ_i ℓ(z_i; θ)`` over the parameters ``names`` of ``model``; ``θ`` flat ``[D]``.

    The flat order is ``names`` in order, each parameter flattened row-major (so the last
    linear layer is ``head.weight`` ``[K·d]`` then ``head.bias`` ``[K]``). ``ℓ`` is the output
    ``kind`` of :func:`core.engine.grads.output` (the cross-entropy by default) against
    ``target``. The model is used in eval mode at its current weights ``θ*``; the other
    parameters and the buffers are held fixed.

    ``batch`` samples and ``columns`` vectors go through one ``vmap``-ed HVP call.
    ``inputs`` are what the loss is evaluated on: the raw inputs, or -- when every chosen
    parameter belongs to ``model.head`` and the model has ``features`` -- the penultimate
    features, computed once on first use (:meth:`represent` does the same for other inputs).
    """

    def __init__(self, model: nn.Module, names: Sequence[str], x: torch.Tensor, target: torch.Tensor,
                 kind: str = "ce", batch: int | None = None, columns: int | None = None):
        if len(x) != len(target) or len(x) == 0:
            raise AttrexError(f"the loss needs as many targets as inputs (got {len(x)} and {len(target)})")
        self.model = model.eval()
        self.names = list(names)
        self.kind = kind
        all_params = dict(model.named_parameters())
        unknown = [n for n in self.names if n not in all_params]
        if unknown or not self.names:
            raise AttrexError(f"unknown parameters {unknown} (or none chosen)")
        self.shapes = [all_params[n].shape for n in self.names]
        self.sizes = [all_params[n].numel() for n in self.names]
        self.theta = torch.cat([all_params[n].detach().reshape(-1) for n in self.names])
        self.frozen = {n: p.detach() for n, p in all_params.items() if n not in self.names}
        self.buffers = {n: b.detach() for n, b in model.named_buffers()}
        self.on_features = (all(n.startswith("head.") for n in self.names) and hasattr(model, "features")
                            and isinstance(getattr(model, "head", None), nn.Linear))
        self.batch = batch or (2048 if self.on_features else 512)
        self._x = x
        self._inputs: torch.Tensor | None = None
        self._probs: torch.Tensor | None = None
        self.target = target
        # vectors pushed through one vmap-ed HVP call: its memory grows with the columns times the
        # activations of a batch (forward and tangent), held here to about 2**27 numbers
        self.columns = columns or max(1, min(256, (1 << 27) // (self.batch * self._activation_numel())))

    # ----- representation and parameters ---------------------------------------------------------
    @torch.no_grad()
    def _activation_numel(self) -> int:
        """Numbers one sample produces across the model's layers (a forward pass on one input, hooked)."""
        if self.on_features:
            return 4 * self.model.head.out_features + self.model.head.in_features
        count = [0]

        def hook(module, inputs, out):
            if isinstance(out, torch.Tensor):
                count[0] += out.numel()

        leaves = [m for m in self.model.modules() if not list(m.children())]
        handles = [m.register_forward_hook(hook) for m in leaves]
        try:
            self.model(self._x[:1])
        finally:
            for h in handles:
                h.remove()
        return max(1, 3 * count[0])

    @property
    def dim(self) -> int:
        return int(self.theta.numel())

    def __len__(self) -> int:
        return len(self.target)

    @property
    def inputs(self) -> torch.Tensor:
        """The training inputs as the loss sees them (features computed on first use, then kept)."""
        if self._inputs is None:
            self._inputs = self.represent(self._x)
        return self._inputs

    @torch.no_grad()
    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """What the loss sees of ``x``: its penultimate features (head-only subsets) or ``x`` itself."""
        if not self.on_features:
            return x
        return penultimate(self.model, x, 1024)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat ``θ [D]`` as ``{name: tensor}`` in the parameters' shapes."""
        return {n: t.view(s) for n, t, s in zip(self.names, theta.split(self.sizes), self.shapes, strict=True)}

    def losses(self, theta: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample losses ``[b]`` at parameters ``theta`` for represented ``inputs``."""
        params = self.unflatten(theta)
        if self.on_features:
            w = params.get("head.weight", self.frozen.get("head.weight"))
            b = params.get("head.bias", self.frozen.get("head.bias"))
            logits = F.linear(inputs, w, b)
        else:
            logits = functional_call(self.model, (params, self.frozen, self.buffers), (inputs,))
        return output(self.kind, logits, target)

    # ----- gradients -------------------------------------------------------------------------------
    def grads(self, inputs: torch.Tensor | None = None, target: torch.Tensor | None = None,
              chunk: int = 256) -> torch.Tensor:
        """Per-sample gradients ``[N, D]`` at ``θ*`` of represented ``inputs`` (default: the training set)."""
        inputs = self.inputs if inputs is None else inputs
        target = self.target if target is None else target

        def one(theta, xi, ti):
            return self.losses(theta, xi.unsqueeze(0), ti.unsqueeze(0)).sum()

        g = vmap(grad(one), in_dims=(None, 0, 0))
        parts = [g(self.theta, inputs[i: i + chunk], target[i: i + chunk]) for i in range(0, len(inputs), chunk)]
        return torch.cat(parts) if parts else torch.zeros(0, self.dim, dtype=self.theta.dtype)

    # ----- curvature -------------------------------------------------------------------------------
    @property
    def closed_form(self) -> bool:
        """Whether :meth:`hvp` uses the closed form of the cross-entropy Hessian of a linear head."""
        return self.on_features and self.kind == "ce"

    def hvp(self, v: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        """``(1/|I|) Σ_{i∈I} ∇²ℓ(z_i; θ*) v`` for ``v [D]`` or ``[D, m]``; ``I`` = ``indices`` or all samples.

        Through the network: ``torch.func`` forward-over-reverse (``jvp`` of ``grad``),
        ``vmap``-ed over the columns. For the cross-entropy of a linear head ``z = W a + b``
        on cached features the same product is computed in closed form, ``∇²_z ℓ = diag(p) − p pᵀ``:
        ``u = ΔW a + Δb``, ``w = p ⊙ u − p (pᵀu)``, and the product is ``(w aᵀ, w)`` averaged.
        """
        cols, single = _columns(v)
        if cols.shape[0] != self.dim:
            raise AttrexError(f"vectors must have {self.dim} rows; got {list(cols.shape)}")
        idx = torch.arange(len(self)) if indices is None else torch.as_tensor(indices).long()
        if len(idx) == 0:
            raise AttrexError("a Hessian over no sample")
        cols = cols.to(self.theta.dtype)
        out = torch.zeros_like(cols)
        for start in range(0, len(idx), self.batch):
            sel = idx[start: start + self.batch]
            if self.closed_form:
                out += self._head_hvp_sum(cols, self.inputs[sel], self.probs[sel])
            else:
                out += self._func_hvp_sum(cols, self.inputs[sel], self.target[sel])
        out /= len(idx)
        return out[:, 0] if single else out

    def _func_hvp_sum(self, cols: torch.Tensor, xb: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
        """``Σ_{i∈batch} ∇²ℓ_i V`` by ``torch.func`` (forward-over-reverse), ``columns`` vectors per call."""

        def total(theta):
            return self.losses(theta, xb, tb).sum()

        def hv(vec):
            return jvp(grad(total), (self.theta,), (vec,))[1]

        batched = vmap(hv, in_dims=1, out_dims=1)
        return torch.cat([batched(cols[:, c: c + self.columns]) for c in range(0, cols.shape[1], self.columns)], 1)

    @property
    def probs(self) -> torch.Tensor:
        """Softmax outputs ``[n, K]`` of the linear head on the training features (closed form only; cached)."""
        if self._probs is None:
            head = self.model.head
            with torch.no_grad():
                self._probs = F.linear(self.inputs, head.weight, head.bias).softmax(-1)
        return self._probs

    def _head_hvp_sum(self, cols: torch.Tensor, feats: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """``Σ_{i∈batch} ∇²ℓ_i V`` for the cross-entropy of the linear head, in closed form (``V [D, m]``)."""
        head = self.model.head
        k, d = head.out_features, head.in_features
        p = probs.T
        parts = self.unflatten_columns(cols)                                   # name -> [m, *shape]
        m = cols.shape[1]
        u = torch.zeros(m, k, len(feats), dtype=cols.dtype)                   # logit directions [m, K, b]
        if "head.weight" in parts:
            u += (parts["head.weight"].reshape(m * k, d) @ feats.T).view(m, k, -1)
        if "head.bias" in parts:
            u += parts["head.bias"].view(m, k, 1)
        wv = p * u - p * (p * u).sum(1, keepdim=True)                          # (diag p − p pᵀ) u
        out = []
        for n in self.names:
            if n == "head.weight":
                out.append((wv.reshape(m * k, -1) @ feats).view(m, k * d))
            elif n == "head.bias":
                out.append(wv.sum(2))
        return torch.cat(out, 1).T

    def unflatten_columns(self, cols: torch.Tensor) -> dict[str, torch.Tensor]:
        """Columns ``[D, m]`` as ``{name: [m, *shape]}``."""
        m = cols.shape[1]
        return {n: t.T.reshape(m, *s) for n, t, s in zip(self.names, cols.split(self.sizes), self.shapes, strict=True)}

    def hessian(self, indices: torch.Tensor | None = None, max_dim: int = 8192) -> torch.Tensor:
        """The mean Hessian ``[D, D]`` over ``indices`` (default all), from ``D`` HVPs with the unit vectors."""
        if self.dim > max_dim:
            raise AttrexError(f"materialising the Hessian of {self.dim} parameters would take {self.dim ** 2 * 4 / 1e9:.1f} GB; "
                              f"at most {max_dim} parameters (use an iterative solver)")
        eye = torch.eye(self.dim, dtype=self.theta.dtype)
        h = self.hvp(eye, indices)
        return (h + h.T) / 2
