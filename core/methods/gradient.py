"""Gradient-similarity methods: TracIn and GAS (exact and projected), GradDot and GradCos.

All of them compare per-sample gradients of a training point and a test point:

- **TracIn** (TracInCP, Pruthi et al. 2020): ``Σ_c η_c ∇θℓ(z_i; θ_c) · ∇θℓ(z'; θ_c)`` over
  the saved checkpoints ``c`` with the learning rate ``η_c`` in force when each was taken;
  ``ℓ`` is the cross-entropy with the training label for ``z_i`` and with the explained
  class for ``z'``. Positive: a gradient step on ``z_i`` lowered the test loss (proponent).
- **GAS**, renormalized TracIn (Hammoudeh & Lowd, CCS 2022, "Identifying a training-set
  attack's target using renormalized influence estimation"): ``Σ_c η_c cos(∇θℓ(z_i; θ_c),
  ∇θℓ(z'; θ_c))``, TracIn with each checkpoint's two gradients normalised, so that
  high-loss training points (large gradients) no longer dominate every ranking. It reads
  TracIn's cached gradients (same parameters, same cache entry) and divides by their norms
  at query time. Its self-score is ``Σ_c η_c`` for every point (a cosine with itself is 1):
  no self-influence. The paper's layer-wise variant (normalising per layer) is not here.
- **GradDot / GradCos** (Charpiat et al. 2019; "SIM" in the DualView paper):
  ``∇θ f_c(x_i) · ∇θ f_c(x')`` for the explained logit ``c`` at the final model; GradCos
  divides by both gradient norms.

``projection="none"`` is exact: per-sample gradients are cached in factored form (linear
layers as the two factors of their outer product, see :mod:`core.engine.grads`), so a query
is a few matrix products and no training gradient is recomputed. ``sparse`` or
``gaussian`` projects every gradient to ``dim`` numbers (:mod:`core.engine.projection`),
an unbiased estimate of the dot product that makes the cache small and the query one
matrix product ``[n_train, C·dim] @ [C·dim]``.
"""

from __future__ import annotations

import math

import torch

from core.engine.grads import GradBlocks, flat_width, gradient_blocks, rows_within, select_params
from core.engine.projection import STORAGE as STORAGE_TYPES
from core.engine.projection import BlockProjector, ProjectedRows
from core.errors import AttrexError
from core.methods.base import Param, RowwiseAttributor, register

SUBSET = Param("subset", "text", "all", "parameters whose gradients are compared: all, last (the head) "
               "or comma-separated parameter-name prefixes (e.g. extractor.6,head)")
PROJECTION = Param("projection", "choice", "none", "none = exact; sparse (count sketch, O(D) per gradient) or "
                   "gaussian (N(0, 1/P) entries) random projection", choices=("none", "sparse", "gaussian"))
DIM = Param("dim", "int", 2048, "projected dimension P per checkpoint (with a projection)", low=16, high=65536, log=True)
SEED = Param("seed", "int", 0, "seed of the random projection", low=0, high=2**31 - 1)
MAX_GB = Param("max_gb", "float", 2.0, "largest cache of exact gradients allowed, in GB (use a projection beyond)",
               low=0.01, high=64.0, log=True)
STORAGE = Param("storage", "choice", "auto", "how projected gradients are held: float32; float16 or int8, each row "
                 "scaled by its largest entry (1/2 or 1/4 of the memory); auto = the widest of these whose cache "
                 "stays within 1 GB", choices=("auto", "float32", "float16", "int8"))
AUTO_BYTES = 1e9
CHUNK = 256


def _sq_norms(r: GradBlocks | ProjectedRows | torch.Tensor) -> torch.Tensor:
    """Squared norm of each row: training representations hold their own, a test projection is a plain tensor."""
    return r.pow(2).sum(1) if isinstance(r, torch.Tensor) else r.sq_norms()


class GradientSimilarity(RowwiseAttributor):
    """Shared machinery; subclasses choose the output (loss or logit), the models and the normalisation."""

    output_kind = "ce"           # what is differentiated: "ce" (the loss) or "logit" (f_c)
    over_checkpoints = True      # TracIn sums over checkpoints; GradDot/GradCos use the final model per class
    normalise = False            # per slot, the cosine instead of the dot product (GAS, GradCos), times η_c
    params = (SUBSET, PROJECTION, DIM, SEED, STORAGE, MAX_GB)
    version = "3"  # bump whenever the cached representation changes

    def __init__(self, trained, data, cache=None, **params):
        super().__init__(trained, data, cache=cache, **params)
        self.names = select_params(self.model, self.hparams["subset"])
        if self.over_checkpoints:
            self._models = [trained.model_at(c.index) for c in trained.checkpoints]
            self._weights = [math.sqrt(c.lr) for c in trained.checkpoints]
        else:
            self._models, self._weights = [self.model], [1.0]
        self._projector: BlockProjector | None = None
        self.storage = "float32"
        p = self.hparams
        if p["projection"] != "none":
            probe = gradient_blocks(self.model, self.names, data.x[:1], data.y[:1], self.output_kind, lookups=True)
            self._projector = BlockProjector(probe.dense.shape[1], [(a.shape[1], d.shape[1]) for a, d in probe.factors],
                                             p["dim"], p["seed"], p["projection"],
                                             [(v, e.shape[2]) for _, e, v in probe.lookups])
            self.storage = p["storage"]
            if self.storage == "auto":  # decided on all rows, so that every shard stores alike
                numbers = len(data) * len(self._slots()) * p["dim"]
                self.storage = next((s for s, t in STORAGE_TYPES.items() if numbers * t.itemsize <= AUTO_BYTES), "int8")

    # ----- representations --------------------------------------------------------------------
    def _slots(self) -> list[tuple[int, int | None]]:
        """``(model index, class)`` pairs: one per checkpoint for TracIn, one per class otherwise."""
        if self.over_checkpoints:
            return [(c, None) for c in range(len(self._models))]
        return [(0, c) for c in range(self.data.n_classes)]

    def _represent(self, m: int, x: torch.Tensor, target: torch.Tensor) -> GradBlocks | torch.Tensor:
        """Gradient representation of ``x`` at model ``m``: factored blocks, or projected ``[N, P]``."""
        blocks = gradient_blocks(self._models[m], self.names, x, target, self.output_kind, CHUNK,
                                 lookups=True)  # embeddings as the rows each sample looks up
        blocks = blocks.scale(self._weights[m])
        if self._projector is None:
            return blocks
        return self._projector(blocks, CHUNK)

    def _check_budget(self) -> None:
        if self._projector is not None:
            return
        probe = gradient_blocks(self.model, self.names, self.data.x[:1], self.data.y[:1], self.output_kind, lookups=True)
        gb = probe.width * len(self.data) * len(self._slots()) * 4 / 1e9
        if gb > self.hparams["max_gb"]:
            raise AttrexError(
                f"exact {self.name} over these parameters would cache {gb:.1f} GB (max_gb={self.hparams['max_gb']}); "
                "use projection='sparse' or a smaller parameter subset")

    def _compute_rows(self, start, stop, progress):
        self._check_budget()
        tensors, slots = {}, self._slots()
        x, y = self.data.x[start:stop], self.data.y[start:stop]
        # rows per batch of gradients: bounds the working memory (~0.2 GB on MNIST; 24 rows on a ResNet-18)
        n, step = len(x), rows_within(flat_width(self.model, self.names, lookups=True), 1024)
        for j, (m, c) in enumerate(slots):
            parts = []
            rows = None if self._projector is None else ProjectedRows.empty(n, self._projector.out_dim, self.storage)
            for lo in range(0, n, step):
                xb = x[lo: lo + step]
                tb = y[lo: lo + step] if c is None else torch.full((len(xb),), c)
                rep = self._represent(m, xb, tb)
                if rows is None:
                    parts.append(rep)
                else:
                    rows.put(lo, rep)  # filled in place: no list of parts and no second copy on concatenation
                if progress:
                    progress((j + min(lo + step, n) / n) / len(slots),
                             f"training gradients, {'checkpoint' if c is None else 'class'} {j + 1}/{len(slots)}")
            rep_all = GradBlocks.cat(parts) if rows is None else rows
            tensors.update(rep_all.to_tensors(f"train/slot{j}"))
        return tensors

    def _finish(self, tensors, progress):
        return tensors, {"slots": len(self._slots()), "params": self.names, "vocab_sizes": self._vocab_sizes()}

    def _vocab_sizes(self) -> list[int]:
        """Row counts of the embedding tables whose gradients are kept as looked-up rows (exact path)."""
        if self._projector is not None:
            return []
        chosen = set(self.names)
        return [m.num_embeddings for name, m in self.model.named_modules()
                if isinstance(m, torch.nn.Embedding) and f"{name}.weight" in chosen]

    def _restore(self, tensors, meta):
        self._train = []
        for j in range(meta["slots"]):
            if self._projector is None:
                self._train.append(GradBlocks.from_tensors(tensors, f"train/slot{j}", meta.get("vocab_sizes", [])))
            else:
                self._train.append(ProjectedRows.from_tensors(tensors, f"train/slot{j}"))
        self._train_norms = [_sq_norms(r).sqrt() for r in self._train] if self.normalise else None

    def _validate(self, tensors, meta):
        super()._validate(tensors, meta)
        if (meta.get("slots") != len(self._slots()) or meta.get("params") != self.names
                or meta.get("vocab_sizes", []) != self._vocab_sizes()):
            raise ValueError("cached gradients were computed for other checkpoints, classes or parameters")
        if self._projector is not None:
            want = STORAGE_TYPES[self.storage]
            for j in range(meta["slots"]):
                rows = tensors[f"train/slot{j}/proj"]
                if rows.dtype != want or rows.shape[1:] != (self._projector.out_dim,):
                    raise ValueError(f"cached projections are {rows.dtype} {list(rows.shape)}, expected {want} "
                                     f"[n, {self._projector.out_dim}]")
                if want != torch.float32 and tensors[f"train/slot{j}/scale"].shape != rows.shape[:1]:
                    raise ValueError("cached projections lack one scale per row")

    # ----- queries ----------------------------------------------------------------------------
    def _scores(self, x, target):
        out = torch.zeros(len(x), len(self.data))
        for j, (m, c) in enumerate(self._slots()):
            rows = slice(None) if c is None else (target == c).nonzero().squeeze(1)  # a class slot: its test rows
            if c is not None and not len(rows):
                continue
            test = self._represent(m, x[rows], target[rows])
            s = self._train[j].dot(test).T
            if self.normalise:
                # the representations carry sqrt(η) (1 for GradCos): cosine times η. Each norm divides
                # on its own (a product of two tiny norms could underflow); a zero gradient scores 0.
                tiny = torch.finfo(s.dtype).tiny
                s = s / _sq_norms(test).sqrt().clamp_min(tiny)[:, None] / self._train_norms[j].clamp_min(tiny)[None, :]
                s = s * self._weights[m] ** 2
            out[rows] += s
        return out

    def _self_scores(self):
        if self.self_influence:  # TracIn: Σ_c η_c ‖∇ℓ(z_i; θ_c)‖²
            return sum(_sq_norms(r) for r in self._train)
        raise AssertionError("unreachable: GradDot, GradCos and GAS declare self_influence = False")


@register
class TracIn(GradientSimilarity):
    name = "tracin"
    title = "TracIn"
    description = ("Sum over the saved checkpoints of the learning rate times the dot product of training and test "
                   "loss gradients (TracInCP), exact over the chosen parameters.")
    reference = "Pruthi et al., Estimating training data influence by tracing gradient descent, NeurIPS 2020"
    needs_checkpoints = True


@register
class TracInRP(TracIn):
    name = "tracin-rp"
    title = "TracIn (projected)"
    description = ("TracIn with every gradient randomly projected to `dim` numbers: an unbiased estimate of the "
                   "dot products, a small cache and one matrix product per query.")
    params = (SUBSET, Param("projection", "choice", "sparse", "sparse (count sketch, O(D) per gradient) or gaussian "
                            "(N(0, 1/P) entries) random projection", choices=("sparse", "gaussian")),
              DIM, SEED, STORAGE)


@register
class GAS(TracIn):
    name = "gas"
    title = "GAS (renormalized TracIn)"
    description = ("TracIn with the cosine of the training and test loss gradients in place of their dot product at "
                   "each checkpoint, weighted by the learning rate: large-gradient points no longer dominate.")
    reference = ("Hammoudeh & Lowd, Identifying a training-set attack's target using renormalized influence "
                 "estimation, CCS 2022")
    normalise = True
    cache_name = "tracin"  # the same gradients as TracIn's, normalised at query time
    self_influence = False  # Σ_c η_c for every point: a cosine with itself is 1


@register
class GASRP(GAS):
    name = "gas-rp"
    title = "GAS (projected)"
    description = ("GAS on randomly projected gradients (`dim` numbers each): the cosines of the projections, "
                   "a small cache and one matrix product per query.")
    params = TracInRP.params
    cache_name = "tracin-rp"


@register
class GradDot(GradientSimilarity):
    name = "graddot"
    title = "GradDot"
    description = "Dot product of the gradients of the explained logit at the final model, training vs test input."
    reference = "Charpiat et al., Input similarity from the neural network perspective, NeurIPS 2019"
    output_kind, over_checkpoints = "logit", False
    self_influence = False  # ‖∇f_y(x_i)‖²: the logit's gradient does not see whether the label fits
    estimates_removal = False  # a similarity of logit gradients, whatever the training label
    params = (SUBSET, Param("projection", "choice", "sparse", PROJECTION.help, choices=PROJECTION.choices),
              Param("dim", "int", 1024, DIM.help, low=16, high=65536, log=True), SEED, STORAGE, MAX_GB)


@register
class GradCos(GradDot):
    name = "gradcos"
    title = "GradCos"
    description = "Cosine of the angle between the gradients of the explained logit, training vs test input."
    normalise = True
    cache_name = "graddot"  # the same gradients as GradDot's, normalised at query time
