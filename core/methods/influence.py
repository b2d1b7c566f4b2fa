"""Influence functions (Koh & Liang 2017), RelatIF (Barshan et al. 2020) and group influence.

**Score.** With ``H = (1/n) Σ_i ∇²θ ℓ(z_i; θ*)`` over the chosen parameters and damping ``λ``::

    s(z_i, z') = ∇θℓ(z'; θ*)ᵀ (H + λI)⁻¹ ∇θℓ(z_i; θ*)

``ℓ`` is the cross-entropy, with the training label for ``z_i`` and the explained class for
``z'``. Koh & Liang's ``I_up,loss(z_i, z') = −∇ℓ(z')ᵀ H⁻¹ ∇ℓ(z_i)`` is the change of the test
loss per unit of *up-weighting* ``z_i``; the score is its negation, so **positive = proponent**:
up-weighting ``z_i`` lowers the test loss, and *removing* it (up-weighting by ``−1/n``)
raises the test loss by about ``s / n``.

**RelatIF** (Barshan et al. 2020, "θ-relative influence"): ``s(z_i, z') / ‖(H + λI)⁻¹ ∇ℓ(z_i)‖``.

**Solvers** of ``(H + λI)⁻¹`` (:mod:`core.engine.ihvp`):

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

from collections.abc import Sequence
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
from core.engine.ihvp import (
    CholeskyInverse,
    MeanLoss,
    SpectralInverse,
    arnoldi,
    conjugate_gradient,
    largest_eigenvalue,
    lissa,
)
from core.errors import AttrexError
from core.methods.base import Attributor, Param, Progress, register

SOLVERS = ("exact", "cg", "lissa", "arnoldi")
CHUNK = 256

PARAMS = (
    Param("solver", "choice", "exact", "how (H + λI)⁻¹ is applied: exact (materialised Hessian, at most 4096 "
          "parameters), cg (conjugate gradients), lissa (stochastic Neumann series) or arnoldi (top-k eigenpairs)",
          choices=SOLVERS),
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
        self.solver = p["solver"]
        self.damping = float(p["damping"])
        if self.solver == "exact" and not self.small:
            raise AttrexError(f"solver 'exact' materialises the Hessian, at most {self.dense_max} parameters; subset "
                              f"{p['subset']!r} has {self.dim}: use solver cg, lissa or arnoldi, or subset 'last'")
        if self.solver in ("cg", "lissa") and not self.small and self.normalise:
            raise AttrexError(f"{self.name} needs (H + λI)⁻¹∇ℓ(z_i) for every training point: with {self.solver} over "
                              f"{self.dim} parameters that is one solve per point; use solver arnoldi, or at most "
                              f"{self.dense_max} parameters (subset 'last')")
        if self.solver == "arnoldi" and p["arnoldi_rank"] > p["arnoldi_iters"]:
            raise AttrexError(f"arnoldi_rank ({p['arnoldi_rank']}) cannot exceed arnoldi_iters ({p['arnoldi_iters']}): "
                              "each iteration yields at most one eigenpair")
        self._loss: MeanLoss | None = None
        self._layout: torch.Tensor | None = None
        self._h_idx: torch.Tensor | None = None
        self._hessian: torch.Tensor | None = None   # materialised H (at most dense_max parameters)
        self._lissa_op: torch.Tensor | None = None  # LiSSA's operator on the unit vectors, when needed
        self._scale: float | None = None            # LiSSA's scale s
        # restored from the cached precompute (see _restore)
        self._spectral: SpectralInverse | None = None
        self._chol: CholeskyInverse | None = None
        self._grad = self._ihvp = self._proj = self._norms = self._self = None
        self._blocks: GradBlocks | None = None

    # ----- plumbing -------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """How queries are answered.

        ``spectral`` (arnoldi): cached projections of the training gradients on the eigenvectors;
        ``dense`` (exact, and cg over at most :attr:`dense_max` parameters): cached
        ``(H + λI)⁻¹ ∇ℓ(z_i)`` for every training point; ``per-query`` (lissa, and cg over more
        parameters): the test gradients are solved at query time against cached training gradients.
        """
        if self.solver == "arnoldi":
            return "spectral"
        return "dense" if self.small and self.solver in ("exact", "cg") else "per-query"

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
            out.append(self._blocks_flat(blocks))
        return torch.cat(out) if out else torch.zeros(0, self.dim, dtype=self.theta.dtype)

    def _blocks_flat(self, blocks: GradBlocks, start: int = 0, stop: int | None = None) -> torch.Tensor:
        if self._layout is None:
            self._layout = _names_order_layout(self.model, self.names)
        flat = blocks.flat(start, stop)
        out = torch.empty_like(flat)
        out[:, self._layout] = flat
        return out

    def _train_gradients(self, progress: Progress | None) -> torch.Tensor:
        """All training gradients ``[n, D]`` (only when ``D`` is small)."""
        x, y = self.data.x, self.data.y
        if self.loss.on_features:
            return self.loss.grads(self.loss.inputs, y)
        parts = []
        for start in range(0, len(x), 1024):
            parts.append(self.gradients(x[start: start + 1024], y[start: start + 1024]))
            if progress:
                progress(0.3 * min(start + 1024, len(x)) / len(x), "training gradients")
        return torch.cat(parts)

    def train_gradient_sum(self, indices: torch.Tensor) -> torch.Tensor:
        """``Σ_{i ∈ indices} ∇ℓ(z_i; θ*)`` ``[D]``."""
        self.fit()
        idx = torch.as_tensor(indices).long()
        if self._grad is not None:
            return self._grad[idx].sum(0)
        total = torch.zeros(self.dim, dtype=self.theta.dtype)
        for start in range(0, len(idx), CHUNK):
            sel = idx[start: start + CHUNK]
            total += self.gradients(self.data.x[sel], self.data.y[sel]).sum(0)
        return total

    # ----- LiSSA's Hessian estimates -----------------------------------------------------------------
    def _lissa_full_batch(self) -> bool:
        b = self.hparams["lissa_batch"]
        return b == 0 or b >= len(self.hessian_indices())

    def _lissa_hvp_at(self, v: torch.Tensor, step: int) -> torch.Tensor:
        """Step ``step``'s Hessian estimate times ``v``: a seeded minibatch of the Hessian points, or all of them."""
        if self._lissa_full_batch():
            return self._hessian @ v if self._hessian is not None else self.hvp(v)
        h_idx = self.hessian_indices()
        g = torch.Generator().manual_seed(self.hparams["seed"] * 1_000_003 + step)
        return self.loss.hvp(v, h_idx[torch.randperm(len(h_idx), generator=g)[: self.hparams["lissa_batch"]]])

    def _lissa_auto_scale(self) -> float:
        """``1.5 (μ_max + λ)``, ``μ_max`` the largest eigenvalue of the steps' Hessians: of ``H`` for full-batch
        steps; for stochastic ones the largest found on 10 sampled minibatches (a minibatch holding a few
        high-curvature points can exceed ``H``'s top eigenvalue many times, and LiSSA amplifies instead of
        contracting along a direction whose step eigenvalue exceeds ``2s``)."""
        dtype, seed = self.theta.dtype, self.hparams["seed"]
        if self._lissa_full_batch():
            top = largest_eigenvalue(lambda v: self._lissa_hvp_at(v, 0), self.dim, 20,
                                     torch.Generator().manual_seed(seed), dtype)
        else:
            h_idx, b = self.hessian_indices(), self.hparams["lissa_batch"]
            top = 0.0
            for j in range(10):
                g = torch.Generator().manual_seed(seed * 7919 + 1 + j)
                sel = h_idx[torch.randperm(len(h_idx), generator=g)[:b]]
                top = max(top, largest_eigenvalue(lambda v, sel=sel: self.loss.hvp(v, sel), self.dim, 10, g, dtype))
        return 1.5 * (top + self.damping)

    def _run_lissa(self, b: torch.Tensor) -> tuple[torch.Tensor, dict]:
        p = self.hparams
        x, info = lissa(self._lissa_hvp_at, b, self.damping, self._scale, p["lissa_depth"], p["lissa_repeats"])
        return x, info.as_dict()

    def _lissa_operator(self) -> torch.Tensor:
        """LiSSA's linear operator ``P [D, D]``, run on the ``D`` unit vectors (same minibatch sequence as queries)."""
        if self._lissa_op is None:
            op, linfo = self._run_lissa(torch.eye(self.dim, dtype=self.theta.dtype))
            self._lissa_op = op
            self.info["lissa_operator"] = linfo
        return self._lissa_op

    # ----- precompute ---------------------------------------------------------------------------------
    def _compute(self, progress):
        p = self.hparams
        say = progress or (lambda fraction, message: None)
        loss = self.loss
        h_idx = self.hessian_indices()
        dtype = self.theta.dtype
        info: dict = {"parameters": self.dim, "mode": self.mode, "hessian_points": len(h_idx), "damping": self.damping}
        tensors: dict[str, torch.Tensor] = {}
        meta = {"info": info, "names": self.names, "mode": self.mode, "small": self.small}
        self._hessian = self._lissa_op = None

        if self.solver == "arnoldi":
            say(0.05, f"Arnoldi iteration ({p['arnoldi_iters']} Hessian-vector products)")
            g = torch.Generator().manual_seed(p["seed"])
            mu, vecs, ainfo = arnoldi(lambda v: loss.hvp(v, h_idx), self.dim, p["arnoldi_iters"], p["arnoldi_rank"],
                                      g, dtype)
            spectral = SpectralInverse(mu, vecs, self.damping)
            spectral.check_invertible()
            info["arnoldi"] = ainfo.as_dict()
            info.update(max_eigenvalue=float(mu.max()), min_kept_eigenvalue=float(mu.min()),
                        negative_eigenvalues=int((mu < 0).sum()), rank=len(mu))
            tensors["spectral/eigvals"], tensors["spectral/eigvecs"] = mu.contiguous(), vecs.contiguous()
            say(0.5, "training gradients in the eigenbasis")
            tensors["train/proj"] = self._project_training(spectral, progress).contiguous()
            return tensors, meta

        if not self.small:
            probe = gradient_blocks(self.model, self.names, self.data.x[:1], self.data.y[:1])
            gb = probe.width * len(self.data) * self.theta.element_size() / 1e9
            if gb > p["max_gb"]:
                raise AttrexError(f"{self.name} would cache {gb:.1f} GB of training gradients (max_gb={p['max_gb']}); "
                                  "use solver arnoldi or a smaller parameter subset")
            say(0.05, "training gradients (factored)")
            blocks = GradBlocks.cat([gradient_blocks(self.model, self.names, self.data.x[s: s + 1024],
                                                     self.data.y[s: s + 1024]) for s in range(0, len(self.data), 1024)])
            tensors.update(blocks.to_tensors("train/blocks"))
        else:
            say(0.05, "training gradients")
            grads = self._train_gradients(progress)
            tensors["train/grad"] = grads.contiguous()
            if self.solver in ("exact", "cg") or self._lissa_full_batch():
                say(0.3, "Hessian")
                self._hessian = loss.hessian(h_idx, max_dim=self.dense_max)
                info["max_eigenvalue"] = largest_eigenvalue(lambda v: self._hessian @ v, self.dim, 30,
                                                            torch.Generator().manual_seed(p["seed"]), dtype)
        if self.solver == "lissa":
            say(0.4, "LiSSA scale")
            self._scale = p["lissa_scale"] or self._lissa_auto_scale()
            info["lissa_scale"] = self._scale
            if self._hessian is not None:
                tensors["hessian"] = self._hessian.contiguous()
            if self.normalise and self.small:      # RelatIF's norms need P ∇ℓ(z_i) for every training point
                say(0.5, f"LiSSA on {self.dim} unit vectors")
                tensors["lissa/operator"] = self._lissa_operator().contiguous()
                info["lissa_operator"] = self.info.pop("lissa_operator")
            return tensors, meta
        if self.solver == "cg" and not self.small:
            return tensors, meta

        if self.solver == "exact":
            say(0.6, "Cholesky factorisation")
            chol = CholeskyInverse.from_hessian(self._hessian, self.damping)
            tensors["exact/cholesky"] = chol.factor.contiguous()
            ihvp = chol(grads.T).T
        else:
            say(0.5, f"conjugate gradients on {len(grads)} training gradients")
            h = self._hessian
            tensors["hessian"] = h.contiguous()
            parts, infos = [], []
            for start in range(0, len(grads), 2048):
                x, cinfo = conjugate_gradient(lambda v: h @ v, grads[start: start + 2048].T, self.damping,
                                              p["cg_iters"], p["cg_tol"])
                parts.append(x.T)
                infos.append(cinfo.as_dict())
                say(0.5 + 0.45 * min(start + 2048, len(grads)) / len(grads), "conjugate gradients")
            ihvp = torch.cat(parts)
            info["cg"] = {"iterations": max(i["iterations"] for i in infos),
                          "max_relative_residual": max(i["max_relative_residual"] for i in infos),
                          "converged": sum(i["converged"] for i in infos), "columns": len(grads),
                          "negative_curvature": sum(i["negative_curvature"] for i in infos)}
        tensors["train/ihvp"] = ihvp.contiguous()
        return tensors, meta

    def _project_training(self, spectral: SpectralInverse, progress: Progress | None) -> torch.Tensor:
        """Training gradients in the eigenbasis ``G Q`` ``[n, k]``, chunk by chunk (never all of ``G`` at once)."""
        x, y = self.data.x, self.data.y
        if self.loss.on_features:
            return spectral.project(self.loss.grads(self.loss.inputs, y))
        out = []
        for start in range(0, len(x), 1024):
            out.append(spectral.project(self.gradients(x[start: start + 1024], y[start: start + 1024])))
            if progress:
                progress(0.5 + 0.45 * min(start + 1024, len(x)) / len(x), "training gradients in the eigenbasis")
        return torch.cat(out)

    def _restore(self, tensors, meta):
        self._spectral = None
        if "spectral/eigvals" in tensors:
            self._spectral = SpectralInverse(tensors["spectral/eigvals"], tensors["spectral/eigvecs"], self.damping)
        self._chol = CholeskyInverse(tensors["exact/cholesky"], self.damping) if "exact/cholesky" in tensors else None
        self._grad = tensors.get("train/grad")
        self._ihvp = tensors.get("train/ihvp")
        self._proj = tensors.get("train/proj")
        self._hessian = tensors.get("hessian")
        self._lissa_op = tensors.get("lissa/operator")
        self._blocks = GradBlocks.from_tensors(tensors, "train/blocks") if "train/blocks/dense" in tensors else None
        self._scale = meta["info"].get("lissa_scale")
        self._self = None
        # ‖(H + λI)⁻¹ ∇ℓ(z_i)‖ per training point, for RelatIF
        if self._proj is not None:
            self._norms = (self._proj * self._spectral.weights).norm(dim=1)
        elif self._ihvp is not None:
            self._norms = self._ihvp.norm(dim=1)
        elif self._lissa_op is not None:
            self._norms = (self._grad @ self._lissa_op.T).norm(dim=1)
        else:
            self._norms = None

    def _validate(self, tensors, meta):
        super()._validate(tensors, meta)
        if meta.get("names") != self.names or meta.get("mode") != self.mode or meta.get("small") != self.small:
            raise ValueError("cached influence state was computed for other parameters or another solver mode")
        for key in ("train/ihvp", "train/grad"):
            if key in tensors and tensors[key].shape[1] != self.dim:
                raise ValueError(f"{key} has {tensors[key].shape[1]} columns for {self.dim} parameters")
        if not all(torch.isfinite(t).all() for t in tensors.values()):
            raise ValueError("cached influence state holds NaN or infinite values")

    # ----- the inverse ----------------------------------------------------------------------------------
    def inverse(self, b: torch.Tensor) -> torch.Tensor:
        """``(H + λI)⁻¹ b`` by the chosen solver, for ``b [D]`` or ``[D, m]`` (solver diagnostics: ``info["last_solve"]``)."""
        self.fit()
        if self._spectral is not None:
            return self._spectral(b)
        if self._chol is not None:
            return self._chol(b)
        if self.solver == "cg":
            op = (lambda v: self._hessian @ v) if self._hessian is not None else self.hvp
            x, cinfo = conjugate_gradient(op, b, self.damping, self.hparams["cg_iters"], self.hparams["cg_tol"])
            self.info["last_solve"] = cinfo.as_dict()
            return x
        x, linfo = self._run_lissa(b)
        self.info["last_solve"] = linfo
        return x

    # ----- queries --------------------------------------------------------------------------------------
    def _scores(self, x, target):
        g = self.gradients(x, target)
        if self._proj is not None:
            s = (self._spectral.project(g) * self._spectral.weights) @ self._proj.T
        elif self._ihvp is not None:
            s = g @ self._ihvp.T
        else:
            s = self._train_dot(self.inverse(g.T))
        if self.normalise:
            s = s / self._norms.clamp_min(torch.finfo(s.dtype).tiny)
        return s

    def _train_dot(self, v: torch.Tensor) -> torch.Tensor:
        """``vᵀ ∇ℓ(z_i)`` for every training point, ``[m, n]``, for solved test vectors ``v [D, m]``."""
        if self._grad is not None:
            return (self._grad @ v).T
        out = []
        for start in range(0, len(self._blocks), CHUNK):
            out.append(self._blocks_flat(self._blocks, start, start + CHUNK) @ v)
        return torch.cat(out).T

    def _self_scores(self):
        if self._proj is not None:
            s = (self._proj.pow(2) * self._spectral.weights).sum(1)
        elif self._ihvp is not None:
            s = (self._grad * self._ihvp).sum(1)
        elif self._grad is not None:
            # LiSSA over few parameters: g_iᵀ P g_i through its operator, computed once on the unit vectors
            if self._self is None:
                self._self = (self._grad * (self._grad @ self._lissa_operator().T)).sum(1)
            s = self._self
        else:
            raise AttrexError(f"self-influence with solver {self.solver} over {self.dim} parameters needs one solve per "
                              f"training point; use solver arnoldi, or at most {self.dense_max} parameters (subset 'last')")
        if self.normalise:
            s = s / self._norms.clamp_min(torch.finfo(s.dtype).tiny)
        return s


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
