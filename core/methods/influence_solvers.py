"""The solvers of the influence methods (:mod:`core.methods.influence`), one strategy class each.

A solver decides how ``(H + λI)⁻¹`` is applied (the maths is :mod:`core.engine.ihvp`) and what of
the training set the precompute caches for it; the method (:class:`~core.methods.influence.Influence`)
chooses one by its ``solver`` parameter and delegates to it. Every solver has the same protocol:

- ``mode``: how queries are answered, ``dense`` (cached ``(H + λI)⁻¹ ∇ℓ(z_i)`` for every training
  point), ``per-query`` (the test gradients are solved at query time against the cached training
  gradients) or ``spectral`` (cached projections of the training gradients on eigenvectors);
- :meth:`~Solver.check`: refuse, when the method is built, what the solver cannot do;
- :meth:`~Solver.precompute`: the tensors and diagnostics the method caches; :meth:`~Solver.restore`
  takes them back (fresh or from the cache);
- :meth:`~Solver.inverse`: ``(H + λI)⁻¹ b``; :meth:`~Solver.scores`, :meth:`~Solver.self_scores`: the
  unnormalised scores; ``norms``: ``‖(H + λI)⁻¹ ∇ℓ(z_i)‖`` per training point, for RelatIF.

The solvers, in :data:`SOLVERS`: :class:`ExactSolver` (Cholesky of the materialised Hessian),
:class:`CGSolver` (conjugate gradients), :class:`LissaSolver` (the stochastic Neumann series) and
:class:`ArnoldiSolver` (the top eigenpairs). The first three keep the training gradients
(:class:`GradientSolver`): dense ``[n, D]`` over at most ``dense_max`` parameters, factored above.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch

from core.engine.grads import GradBlocks, gradient_blocks
from core.engine.ihvp import (
    CholeskyInverse,
    SpectralInverse,
    arnoldi,
    conjugate_gradient,
    largest_eigenvalue,
    lissa,
)
from core.errors import AttrexError
from core.methods.base import Progress

CHUNK = 256  # rows of gradients formed at once

Say = Callable[[float, str], None]


class Solver(ABC):
    """How an influence method applies ``(H + λI)⁻¹``; ``method`` is the :class:`~core.methods.influence.Influence`
    it serves (its parameters, loss, gradients and Hessian-vector products)."""

    name: ClassVar[str] = ""
    grad: torch.Tensor | None = None  # the training gradients [n, D], where the solver keeps them dense

    def __init__(self, method) -> None:
        self.method = method
        self.norms: torch.Tensor | None = None  # ‖(H + λI)⁻¹ ∇ℓ(z_i)‖ per training point (RelatIF), once restored

    @property
    @abstractmethod
    def mode(self) -> str:
        """``dense``, ``per-query`` or ``spectral`` (see the module docstring); part of the cache key."""

    def check(self) -> None:
        """Refuse, when the method is built, what this solver cannot do with its parameters."""
        return None  # by default it can do everything

    @abstractmethod
    def precompute(self, tensors: dict[str, torch.Tensor], info: dict, say: Say, progress: Progress | None) -> None:
        """Add the tensors to cache to ``tensors`` and the diagnostics to ``info``."""

    @abstractmethod
    def restore(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Take over the precompute's tensors (fresh or from the cache)."""

    @abstractmethod
    def inverse(self, b: torch.Tensor) -> torch.Tensor:
        """``(H + λI)⁻¹ b`` for ``b [D]`` or ``[D, m]``."""

    @abstractmethod
    def scores(self, g: torch.Tensor) -> torch.Tensor:
        """Unnormalised scores ``[m, n]`` of the test gradients ``g [m, D]``."""

    @abstractmethod
    def self_scores(self) -> torch.Tensor:
        """Unnormalised self-influence ``[n]``."""


class ArnoldiSolver(Solver):
    """The top-``k`` eigenpairs by Arnoldi iteration (Schioppa et al. 2022), the inverse taken through them only;
    the training gradients are cached projected on the ``k`` eigenvectors, so a query is a ``k``-dimensional product."""

    name = "arnoldi"
    mode = "spectral"

    def __init__(self, method) -> None:
        super().__init__(method)
        self.spectral: SpectralInverse | None = None
        self.proj: torch.Tensor | None = None  # the training gradients in the eigenbasis [n, k]

    def check(self) -> None:
        p = self.method.hparams
        if p["arnoldi_rank"] > p["arnoldi_iters"]:
            raise AttrexError(f"arnoldi_rank ({p['arnoldi_rank']}) cannot exceed arnoldi_iters ({p['arnoldi_iters']}): "
                              "each iteration yields at most one eigenpair")

    def precompute(self, tensors, info, say, progress):
        m, p = self.method, self.method.hparams
        h_idx = m.hessian_indices()
        say(0.05, f"Arnoldi iteration ({p['arnoldi_iters']} Hessian-vector products)")
        g = torch.Generator().manual_seed(p["seed"])
        mu, vecs, ainfo = arnoldi(lambda v: m.loss.hvp(v, h_idx), m.dim, p["arnoldi_iters"], p["arnoldi_rank"],
                                  g, m.theta.dtype)
        spectral = SpectralInverse(mu, vecs, m.damping)
        spectral.check_invertible()
        info["arnoldi"] = ainfo.as_dict()
        info.update(max_eigenvalue=float(mu.max()), min_kept_eigenvalue=float(mu.min()),
                    negative_eigenvalues=int((mu < 0).sum()), rank=len(mu))
        tensors["spectral/eigvals"], tensors["spectral/eigvecs"] = mu.contiguous(), vecs.contiguous()
        say(0.5, "training gradients in the eigenbasis")
        tensors["train/proj"] = m.map_training_gradients(spectral.project, progress, (0.5, 0.45),
                                                         "training gradients in the eigenbasis").contiguous()

    def restore(self, tensors, meta):
        self.spectral = SpectralInverse(tensors["spectral/eigvals"], tensors["spectral/eigvecs"], self.method.damping)
        self.proj = tensors["train/proj"]
        self.norms = (self.proj * self.spectral.weights).norm(dim=1)

    def inverse(self, b):
        return self.spectral(b)

    def scores(self, g):
        return (self.spectral.project(g) * self.spectral.weights) @ self.proj.T

    def self_scores(self):
        return (self.proj.pow(2) * self.spectral.weights).sum(1)


class GradientSolver(Solver):
    """A solver that keeps the training gradients: dense ``[n, D]`` over at most ``dense_max`` parameters (with
    the materialised Hessian where :attr:`wants_hessian`), factored (:class:`GradBlocks`) above. With the
    solved training gradients ``(H + λI)⁻¹ ∇ℓ(z_i)`` cached (``ihvp``), a query is one matrix product; without,
    the test gradients are solved per query and dotted with the training gradients."""

    def __init__(self, method) -> None:
        super().__init__(method)
        self.grad = self.ihvp = self.hessian = None
        self.blocks: GradBlocks | None = None

    @property
    def mode(self) -> str:
        return "dense" if self.method.small else "per-query"

    @property
    def wants_hessian(self) -> bool:
        """Whether the precompute materialises ``H`` (over at most ``dense_max`` parameters)."""
        return True

    def check(self) -> None:
        m = self.method
        if not m.small and m.normalise:
            raise AttrexError(f"{m.name} needs (H + λI)⁻¹∇ℓ(z_i) for every training point: with {self.name} over "
                              f"{m.dim} parameters that is one solve per point; use solver arnoldi, or at most "
                              f"{m.dense_max} parameters (subset 'last')")

    def cache_gradients(self, tensors, info, say, progress) -> torch.Tensor | None:
        """Cache the training gradients (and materialise ``H`` where wanted); the dense ones, or ``None`` when factored."""
        m, p = self.method, self.method.hparams
        self.hessian = None
        if not m.small:
            probe = gradient_blocks(m.model, m.names, m.data.x[:1], m.data.y[:1])
            gb = probe.width * len(m.data) * m.theta.element_size() / 1e9
            if gb > p["max_gb"]:
                raise AttrexError(f"{m.name} would cache {gb:.1f} GB of training gradients (max_gb={p['max_gb']}); "
                                  "use solver arnoldi or a smaller parameter subset")
            say(0.05, "training gradients (factored)")
            blocks = GradBlocks.cat([gradient_blocks(m.model, m.names, m.data.x[s: s + 1024], m.data.y[s: s + 1024])
                                     for s in range(0, len(m.data), 1024)])
            tensors.update(blocks.to_tensors("train/blocks"))
            return None
        say(0.05, "training gradients")
        grads = m.map_training_gradients(lambda g: g, progress, (0.0, 0.3), "training gradients")
        tensors["train/grad"] = grads.contiguous()
        if self.wants_hessian:
            say(0.3, "Hessian")
            self.hessian = m.loss.hessian(m.hessian_indices(), max_dim=m.dense_max)
            info["max_eigenvalue"] = largest_eigenvalue(lambda v: self.hessian @ v, m.dim, 30,
                                                        torch.Generator().manual_seed(p["seed"]), m.theta.dtype)
        return grads

    def restore(self, tensors, meta):
        self.grad = tensors.get("train/grad")
        self.ihvp = tensors.get("train/ihvp")
        self.hessian = tensors.get("hessian")
        self.blocks = GradBlocks.from_tensors(tensors, "train/blocks") if "train/blocks/dense" in tensors else None
        self.norms = self.ihvp.norm(dim=1) if self.ihvp is not None else None

    def scores(self, g):
        if self.ihvp is not None:
            return g @ self.ihvp.T
        return self.train_dot(self.inverse(g.T))

    def train_dot(self, v: torch.Tensor) -> torch.Tensor:
        """``vᵀ ∇ℓ(z_i)`` for every training point, ``[m, n]``, for solved test vectors ``v [D, m]``."""
        if self.grad is not None:
            return (self.grad @ v).T
        out = []
        for start in range(0, len(self.blocks), CHUNK):
            out.append(self.method.blocks_flat(self.blocks, start, start + CHUNK) @ v)
        return torch.cat(out).T

    def self_scores(self):
        if self.ihvp is not None:
            return (self.grad * self.ihvp).sum(1)
        m = self.method
        raise AttrexError(f"self-influence with solver {self.name} over {m.dim} parameters needs one solve per "
                          f"training point; use solver arnoldi, or at most {m.dense_max} parameters (subset 'last')")


class ExactSolver(GradientSolver):
    """The Hessian materialised (at most ``dense_max`` parameters) and ``H + λI`` factored by Cholesky (it must be
    positive definite: raise the damping otherwise); the solved training gradients are cached."""

    name = "exact"
    mode = "dense"

    def __init__(self, method) -> None:
        super().__init__(method)
        self.chol: CholeskyInverse | None = None

    def check(self) -> None:
        m = self.method
        if not m.small:
            raise AttrexError(f"solver 'exact' materialises the Hessian, at most {m.dense_max} parameters; subset "
                              f"{m.hparams['subset']!r} has {m.dim}: use solver cg, lissa or arnoldi, or subset 'last'")

    def precompute(self, tensors, info, say, progress):
        grads = self.cache_gradients(tensors, info, say, progress)
        say(0.6, "Cholesky factorisation")
        chol = CholeskyInverse.from_hessian(self.hessian, self.method.damping)
        tensors["exact/cholesky"] = chol.factor.contiguous()
        tensors["train/ihvp"] = chol(grads.T).T.contiguous()

    def restore(self, tensors, meta):
        super().restore(tensors, meta)
        self.chol = CholeskyInverse(tensors["exact/cholesky"], self.method.damping)

    def inverse(self, b):
        return self.chol(b)


class CGSolver(GradientSolver):
    """Conjugate gradients: over at most ``dense_max`` parameters run once at fit time, column by column against
    the materialised Hessian, on every training gradient (cached solved); over more, per query."""

    name = "cg"

    def precompute(self, tensors, info, say, progress):
        grads = self.cache_gradients(tensors, info, say, progress)
        if grads is None:
            return
        p, h = self.method.hparams, self.hessian
        say(0.5, f"conjugate gradients on {len(grads)} training gradients")
        tensors["hessian"] = h.contiguous()
        parts, infos = [], []
        for start in range(0, len(grads), 2048):
            x, cinfo = conjugate_gradient(lambda v: h @ v, grads[start: start + 2048].T, self.method.damping,
                                          p["cg_iters"], p["cg_tol"])
            parts.append(x.T)
            infos.append(cinfo.as_dict())
            say(0.5 + 0.45 * min(start + 2048, len(grads)) / len(grads), "conjugate gradients")
        tensors["train/ihvp"] = torch.cat(parts).contiguous()
        info["cg"] = {"iterations": max(i["iterations"] for i in infos),
                      "max_relative_residual": max(i["max_relative_residual"] for i in infos),
                      "converged": sum(i["converged"] for i in infos), "columns": len(grads),
                      "negative_curvature": sum(i["negative_curvature"] for i in infos)}

    def inverse(self, b):
        m = self.method
        op = (lambda v: self.hessian @ v) if self.hessian is not None else m.hvp
        x, cinfo = conjugate_gradient(op, b, m.damping, m.hparams["cg_iters"], m.hparams["cg_tol"])
        m.info["last_solve"] = cinfo.as_dict()
        return x


class LissaSolver(GradientSolver):
    """The stochastic Neumann series, solved for the test gradients at query time (one series per query batch).

    Its self-influence runs the series once on the ``D`` unit vectors -- LiSSA is linear in its input for a
    fixed minibatch sequence, so this yields its operator ``P`` and ``∇ℓ(z_i)ᵀ P ∇ℓ(z_i)`` for every ``i`` --
    which costs ``D`` times a query (RelatIF with LiSSA does it at fit).
    """

    name = "lissa"
    mode = "per-query"

    def __init__(self, method) -> None:
        super().__init__(method)
        self.operator: torch.Tensor | None = None  # LiSSA's operator on the unit vectors, when needed
        self.scale: float | None = None            # LiSSA's scale s
        self._self: torch.Tensor | None = None

    @property
    def full_batch(self) -> bool:
        b = self.method.hparams["lissa_batch"]
        return b == 0 or b >= len(self.method.hessian_indices())

    @property
    def wants_hessian(self) -> bool:
        return self.full_batch

    def hvp_at(self, v: torch.Tensor, step: int) -> torch.Tensor:
        """Step ``step``'s Hessian estimate times ``v``: a seeded minibatch of the Hessian points, or all of them."""
        m = self.method
        if self.full_batch:
            return self.hessian @ v if self.hessian is not None else m.hvp(v)
        h_idx = m.hessian_indices()
        g = torch.Generator().manual_seed(m.hparams["seed"] * 1_000_003 + step)
        return m.loss.hvp(v, h_idx[torch.randperm(len(h_idx), generator=g)[: m.hparams["lissa_batch"]]])

    def auto_scale(self) -> float:
        """``1.5 (μ_max + λ)``, ``μ_max`` the largest eigenvalue of the steps' Hessians: of ``H`` for full-batch
        steps; for stochastic ones the largest found on 10 sampled minibatches (a minibatch holding a few
        high-curvature points can exceed ``H``'s top eigenvalue many times, and LiSSA amplifies instead of
        contracting along a direction whose step eigenvalue exceeds ``2s``)."""
        m = self.method
        dtype, seed = m.theta.dtype, m.hparams["seed"]
        if self.full_batch:
            top = largest_eigenvalue(lambda v: self.hvp_at(v, 0), m.dim, 20, torch.Generator().manual_seed(seed), dtype)
        else:
            h_idx, b = m.hessian_indices(), m.hparams["lissa_batch"]
            top = 0.0
            for j in range(10):
                g = torch.Generator().manual_seed(seed * 7919 + 1 + j)
                sel = h_idx[torch.randperm(len(h_idx), generator=g)[:b]]
                top = max(top, largest_eigenvalue(lambda v, sel=sel: m.loss.hvp(v, sel), m.dim, 10, g, dtype))
        return 1.5 * (top + m.damping)

    def run(self, b: torch.Tensor) -> tuple[torch.Tensor, dict]:
        p = self.method.hparams
        x, info = lissa(self.hvp_at, b, self.method.damping, self.scale, p["lissa_depth"], p["lissa_repeats"])
        return x, info.as_dict()

    def unit_operator(self) -> torch.Tensor:
        """LiSSA's linear operator ``P [D, D]``, run on the ``D`` unit vectors (same minibatch sequence as queries)."""
        if self.operator is None:
            m = self.method
            op, linfo = self.run(torch.eye(m.dim, dtype=m.theta.dtype))
            self.operator = op
            m.info["lissa_operator"] = linfo
        return self.operator

    def precompute(self, tensors, info, say, progress):
        m = self.method
        self.operator = None
        self.cache_gradients(tensors, info, say, progress)
        say(0.4, "LiSSA scale")
        self.scale = m.hparams["lissa_scale"] or self.auto_scale()
        info["lissa_scale"] = self.scale
        if self.hessian is not None:
            tensors["hessian"] = self.hessian.contiguous()
        if m.normalise and m.small:      # RelatIF's norms need P ∇ℓ(z_i) for every training point
            say(0.5, f"LiSSA on {m.dim} unit vectors")
            tensors["lissa/operator"] = self.unit_operator().contiguous()
            info["lissa_operator"] = m.info.pop("lissa_operator")

    def restore(self, tensors, meta):
        super().restore(tensors, meta)
        self.operator = tensors.get("lissa/operator")
        self.scale = meta["info"].get("lissa_scale")
        self._self = None
        if self.operator is not None:
            self.norms = (self.grad @ self.operator.T).norm(dim=1)

    def inverse(self, b):
        x, linfo = self.run(b)
        self.method.info["last_solve"] = linfo
        return x

    def self_scores(self):
        if self.grad is None:
            return super().self_scores()  # refused: one solve per training point
        if self._self is None:  # g_iᵀ P g_i through its operator, computed once on the unit vectors
            self._self = (self.grad * (self.grad @ self.unit_operator().T)).sum(1)
        return self._self


SOLVERS: dict[str, type[Solver]] = {s.name: s for s in (ExactSolver, CGSolver, LissaSolver, ArnoldiSolver)}
