"""TRAK (Park et al. 2023): attributions from a linearised, randomly projected model, ensembled.

For one ensemble member (a checkpoint of a trained model) with parameters ``θ``:

- output function ``m(z) = log(p_y / (1 − p_y))`` of a sample ``z = (x, y)`` (the "margin",
  ``z[y] − logsumexp_{c≠y} z[c]``; for a test point ``y`` is the explained class);
- features ``φ(z) = R ∇θ m(z)`` ``[P]``: the gradient over the chosen parameters, randomly
  projected to ``P = dim`` numbers (:class:`~core.engine.projection.Projector`, sparse count
  sketch by default, ``O(D)`` per gradient; ``gaussian`` is the paper's JL projection;
  ``none`` keeps the exact gradient, ``P = D``);
- ``Φ`` ``[n, P]`` stacks the training features, ``Q = diag(1 − p_i)`` with ``p_i`` the
  probability of training point ``i``'s own label;
- ``τ(z') = φ(z')ᵀ (ΦᵀΦ + λI)⁻¹ Φᵀ Q`` ``[n]``.

The ensemble (``checkpoints`` × ``models``) is combined as in the paper's Algorithm 1 and in
the reference implementation: ``τ(z') = (1/M Σ_m φ_m(z')ᵀ (Φ_mᵀΦ_m + λI)⁻¹ Φ_mᵀ) · diag(Q̄)``
with ``Q̄ = 1/M Σ_m Q_m`` (the two factors are averaged separately, which METHODS.md's
shorthand "averaged over an ensemble" leaves open). Member ``j`` (models outer, checkpoints
inner, the given model first) projects with seed ``seed + j``, so members' projections are
independent, as in TRAK.

**Sign**: TRAK's ``τ_i(z')`` estimates how much training point ``i`` raises the margin of
the explained class at ``z'`` (the effect of removing it is ``−τ_i``), so a positive score
already means *proponent* (lowers the test loss): no negation. Self-scores
``τ_i(z_i) = φ_iᵀ(ΦᵀΦ + λI)⁻¹φ_i (1 − p_i) ≥ 0`` (a leverage score times ``1 − p_i``).

**Ridge** ``λ = damping · tr(ΦᵀΦ)/P`` (relative to the mean eigenvalue, so it does not depend
on the gradient scale); ``damping = 0`` (TRAK's default) uses the pseudo-inverse, computed
from the eigendecomposition in float64 with eigenvalues below ``1e-10`` of the largest
dropped. With a Gaussian projection of ``P ≥ D`` dimensions (or ``projection="none"``) and
``damping = 0`` the result equals the unprojected TRAK exactly: the pseudo-inverse is
invariant to an injective linear map of the features.

Differences from the reference implementation ``traker`` (checked in tests/test_trak.py, which
agrees with it to float32 precision given the same projection): traker's default score
computer divides each member's ``(ΦᵀΦ)⁻¹`` by its mean absolute entry before averaging (a
per-member weight for float16 storage; the paper has none, so neither has this) and inverts
in float32 without a pseudo-inverse.

``Q`` matters: on a model that fits its training set (the default MNIST CNN has ``p_i = 1`` in
float32 for ~30% of the points and ``1 − p_i < 1e-4`` for ~80% at its last checkpoint), the
top proponents are the training points it fits least, often of another class (top-1 same
class ~0.2 with the last checkpoint, ~0.4 with all five), while ``φ(z')ᵀ(ΦᵀΦ)⁻¹Φᵀ`` alone
ranks same-class points first. Earlier checkpoints (``checkpoints="all"``) and models
trained on subsets keep ``Q`` informative, which is why the paper ensembles.

Cost: the precompute is one per-sample gradient pass over the training set per member; a
query is a gradient and a projection per member, then one ``[b, P] @ [P, n]`` product per
member against the cached ``Φ_m (Φ_mᵀΦ_m + λI)⁻¹`` (``n × P`` floats per member). Measured
costs: ``benchmarks/README.md``.
"""

from __future__ import annotations

import dataclasses

import torch

from core.engine.grads import gradient_blocks, n_params, rows_within, select_params
from core.engine.projection import Projector
from core.errors import AttrexError
from core.methods.base import Attributor, Param, register
from core.models.training import predict

PINV_RTOL = 1e-10     # eigenvalues of ΦᵀΦ below this share of the largest count as zero (damping = 0)
MAX_EXACT_DIM = 8192  # largest parameter count TRAK inverts without a projection
CHUNK = 256           # samples whose flat gradients are materialised at once


def ridge_inverse(gram: torch.Tensor, damping: float) -> tuple[torch.Tensor, dict]:
    """``(gram + λI)⁻¹`` (float64) with ``λ = damping · tr(gram)/P``; the pseudo-inverse when ``damping == 0``.

    ``gram`` ``[P, P]`` symmetric positive semi-definite. Returns the inverse and diagnostics
    (effective ``λ``, numerical rank, condition number of what was inverted).
    """
    gram = gram.double()
    evals, evecs = torch.linalg.eigh(gram)
    evals = evals.clamp_min(0.0)
    top = float(evals.max()) if evals.numel() else 0.0
    lam = damping * float(evals.sum()) / max(len(evals), 1)
    if damping > 0:
        keep = torch.ones_like(evals, dtype=torch.bool)
        inv_vals = 1.0 / (evals + lam)
    else:
        keep = evals > PINV_RTOL * top
        inv_vals = torch.where(keep, 1.0 / evals.clamp_min(1e-300), torch.zeros_like(evals))
    inverse = (evecs * inv_vals) @ evecs.T
    kept = evals[keep] + lam
    cond = float(kept.max() / kept.min()) if kept.numel() and float(kept.min()) > 0 else None  # None: singular
    return inverse, {"lambda": lam, "rank": int(keep.sum()), "condition": cond}


@register
class TRAK(Attributor):
    name = "trak"
    title = "TRAK"
    description = ("Projected gradients of the margin log p/(1−p), a least-squares fit on the training features "
                   "(ΦᵀΦ)⁻¹Φᵀ weighted by 1−p, averaged over checkpoints and independently trained models. "
                   "Precompute: one gradient pass over the training set per ensemble member; a query is a gradient, "
                   "a projection and one matrix product per member.")
    reference = "Park et al., TRAK: Attributing Model Behavior at Scale, ICML 2023"
    version = "1"
    params = (
        Param("subset", "text", "all", "parameters whose gradients are used: all, last (the head) or "
              "comma-separated parameter-name prefixes (e.g. extractor.6,head)"),
        Param("projection", "choice", "sparse", "sparse (count sketch, O(D) per gradient), gaussian (N(0, 1/P), "
              "the paper's JL projection) or none (exact gradients; at most 8192 parameters)",
              choices=("sparse", "gaussian", "none")),
        Param("dim", "int", 2048, "projected dimension P per ensemble member", low=16, high=65536, log=True),
        Param("seed", "int", 0, "seed of the random projections (member j uses seed + j)", low=0, high=2**31 - 1),
        Param("checkpoints", "choice", "all", "ensemble over every saved checkpoint of each model, or only the "
              "final weights", choices=("all", "last")),
        Param("models", "int", 1, "independently trained models in the ensemble (the given one, then seeds "
              "config.seed+1, +2, ...; trained on the scenario, cached)", low=1, high=16),
        Param("damping", "float", 0.0, "ridge λ relative to the mean eigenvalue of ΦᵀΦ (0 = pseudo-inverse, "
              "TRAK's default)", low=0.0, high=1e3),
    )

    def __init__(self, trained, data, cache=None, **params):
        super().__init__(trained, data, cache=cache, **params)
        p = self.hparams
        self.names = select_params(self.model, p["subset"])
        self.n_grad = n_params(self.model, self.names)
        if p["projection"] == "none" and self.n_grad > MAX_EXACT_DIM:
            raise AttrexError(f"TRAK without a projection inverts a {self.n_grad} × {self.n_grad} matrix; at most "
                              f"{MAX_EXACT_DIM} parameters are allowed (use projection='sparse' or a smaller subset)")
        if p["models"] > 1:
            scenario = data.scenario
            if scenario is None:
                raise AttrexError("models > 1 trains further models on the scenario, but this training data has no "
                                  "scenario (build it with TrainingData.of(scenario)) -- or use models=1")
            if getattr(scenario, "fingerprint", None) != data.key:
                raise AttrexError("models > 1 trains further models on the scenario's training set, which is not "
                                  "the training data given here; use models=1 for a custom training set")
        self._member_models: list[torch.nn.Module] | None = None

    # ----- ensemble -----------------------------------------------------------------------------
    @property
    def out_dim(self) -> int:
        """Feature dimension ``P`` (``D`` without a projection)."""
        return self.n_grad if self.hparams["projection"] == "none" else self.hparams["dim"]

    def members(self, progress=None) -> list[torch.nn.Module]:
        """The ensemble's models, models outer and checkpoints inner (eval mode); trains extra models if needed."""
        if self._member_models is not None:
            return self._member_models
        from core.models.training import train

        p = self.hparams
        trained_models = [self.trained]
        if p["models"] > 1 and not self.trained.retrainable:
            raise AttrexError("an ensemble of several models trains the extra ones with the model's recipe, which "
                              "attrex does not know for a loaded model: use models=1")
        for j in range(1, p["models"]):
            cfg = dataclasses.replace(self.trained.config, seed=self.trained.config.seed + j)
            report = (lambda f, msg, j=j: progress(0.0, f"ensemble model {j + 1}/{p['models']}: {msg}")) if progress else None
            trained_models.append(train(self.data.scenario, cfg, progress=report, cache=self.cache))
        out = []
        for tm in trained_models:
            if p["checkpoints"] == "last" or not tm.checkpoints:
                out.append(tm.model.eval())
            else:
                out.extend(tm.model_at(c.index) for c in tm.checkpoints)
        self._member_models = out
        return out

    def _projector(self, member: int) -> Projector | None:
        p = self.hparams
        if p["projection"] == "none":
            return None
        return Projector(self.n_grad, p["dim"], p["seed"] + member, p["projection"])

    def features(self, model: torch.nn.Module, proj: Projector | None, x: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
        """``φ = R ∇θ m(x, target)`` ``[N, P]`` (float32) for the margin output ``m``."""
        out, step = [], rows_within(self.n_grad, CHUNK)
        for start in range(0, len(x), step):
            blocks = gradient_blocks(model, self.names, x[start: start + step], target[start: start + step],
                                     "margin", step)
            flat = blocks.flat()
            out.append((flat if proj is None else proj(flat)).float())
        return torch.cat(out) if out else torch.zeros(0, self.out_dim)

    # ----- precompute ---------------------------------------------------------------------------
    def _compute(self, progress):
        x, y = self.data.x, self.data.y
        models = self.members(progress)
        tensors: dict[str, torch.Tensor] = {}
        q_sum = torch.zeros(len(y), dtype=torch.float64)
        self_sum = torch.zeros(len(y), dtype=torch.float64)
        diagnostics = []
        for j, model in enumerate(models):
            if progress:
                progress(j / len(models), f"TRAK features: member {j + 1}/{len(models)}")
            phi = self.features(model, self._projector(j), x, y)           # [n, P] float32
            gram = phi.double().T @ phi.double()                           # float64: the pseudo-inverse needs it
            inverse, diag = ridge_inverse(gram, self.hparams["damping"])
            kernel = phi @ inverse.float()                                 # Φ (ΦᵀΦ + λI)⁻¹  [n, P]
            prob = predict(model, x).softmax(-1).gather(1, y[:, None]).squeeze(1).double()
            q_sum += 1.0 - prob
            self_sum += (kernel * phi).sum(1).double()
            tensors[f"train/member{j}/kernel"] = kernel.contiguous()
            diagnostics.append(diag)
        members = len(models)
        q_bar = q_sum / members
        tensors["train/q"] = q_bar.float()
        tensors["train/self"] = (self_sum / members * q_bar).float()
        info = {
            "members": members, "parameters": self.n_grad, "feature_dim": self.out_dim,
            "lambda": [d["lambda"] for d in diagnostics], "rank": [d["rank"] for d in diagnostics],
            "condition": [d["condition"] for d in diagnostics],
        }
        return tensors, {"members": members, "params": self.names, "info": info}

    def _validate(self, tensors, meta):
        super()._validate(tensors, meta)
        if meta.get("params") != self.names:
            raise ValueError("cached TRAK features were computed for other parameters")
        for j in range(meta.get("members", 0)):
            if tensors[f"train/member{j}/kernel"].shape[1] != self.out_dim:
                raise ValueError("cached TRAK features have another dimension")

    def _restore(self, tensors, meta):
        self._kernels = [tensors[f"train/member{j}/kernel"] for j in range(meta["members"])]
        self._q = tensors["train/q"]
        self._self = tensors["train/self"]

    # ----- queries ------------------------------------------------------------------------------
    def _scores(self, x, target):
        models = self.members()
        if len(models) != len(self._kernels):
            raise AttrexError("the cached TRAK ensemble does not match the models; clear the method cache")
        acc = torch.zeros(len(x), len(self.data))
        for j, model in enumerate(models):
            phi = self.features(model, self._projector(j), x, target)
            acc += phi @ self._kernels[j].T
        return acc / len(models) * self._q[None, :]

    def _self_scores(self):
        return self._self.clone()
