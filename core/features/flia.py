"""FLIA: feature-level instance attribution (which parts of a training input carry its influence).

``IL(x_tr, x_te)`` is TracIn over the saved checkpoints (the paper's Eq. 2, and attrex's
``tracin``): ``Σ_c η_c ∇θℓ(x_tr, y_tr; θ_c) · ∇θℓ(x_te, t; θ_c)`` with ``η_c`` the learning
rate in force at checkpoint ``c``, ``ℓ`` the cross-entropy, ``t`` the explained class of
the test input. Positive: a step on the training point lowered the test loss (proponent).

The training input is perturbed by sign-gradient steps on IL (Eq. 3),
``x^{s+1} = clip(x^s ∓ η sign(∂IL/∂x^s))``, ``η = 1/2550`` on the [0, 1] pixel scale and
10 steps by default, so no pixel moves by more than one grey level; ``descent`` (the
default) lowers IL, ``ascent`` raises it. The attribution of feature ``i`` accumulates the
first-order change along the path (Eqs. 6–7)::

    FLIA_i = Σ_s (x^{s+1}_i − x^s_i) · ∂IL(x^s)/∂x_i

(``x^{s+1} − x^s`` is the step actually taken, after clipping). Summed over features it
equals ``IL(x^T) − IL(x^0)`` up to the path's second-order terms: :attr:`FLIAResult.gap`
reports ``|Σ_i FLIA_i − (IL(x^T) − IL(x^0))| / |IL(x^T) − IL(x^0)|``. On a smooth model
(logistic regression) the gap is below 1%. On ReLU / max-pool networks IL is only piecewise
smooth: where the path switches an activation or a max-pool's winner, the training gradient
inside IL changes abruptly and IL jumps. A first-order sum cannot see a jump (finer steps do
not help), so there the gap is the jumps' share of the change. What FLIA does equal is the
smooth part, the integral of ``∂IL/∂x`` along the path: on the default MNIST CNN to within
1.5–12% (the worst of 6 top TracIn pairs, per seed 0–4), while the gap reaches 33%
(``tests/test_flia.py``). ``∂IL/∂x`` is a
gradient of a dot product of parameter gradients, obtained by double backpropagation
(``torch.func.grad`` of a function that itself takes ``grad`` over the parameters),
vectorised over training inputs with ``vmap``.

**Text.** Token ids are discrete, so the perturbation is an offset ``δ`` added to the
training text's token embeddings (the same offset at every checkpoint, starting at 0), with
step ``η · s``, ``s`` the range (max − min) of the final model's embedding table, the
analogue of 1/2550 of the pixel range; there is no clipping. A token's score is its FLIA
summed over the embedding dimensions. Padding positions never reach the output (the model
masks them), so their gradient, step and score are exactly zero.

**Heatmap** of an image: ``|FLIA|`` summed over channels (the METHODS convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap

from core.cache import Cache, make_key, tensor_digest
from core.engine.grads import select_params
from core.errors import AttrexError
from core.models.training import TrainedModel, predict

ETA = 1 / 2550
DIRECTIONS = {"descent": -1.0, "ascent": 1.0}
VERSION = "1"


@dataclass
class FLIAResult:
    """FLIA of one or more training inputs against one test input (leading dimension ``B`` when batched).

    ``attribution``: FLIA per input feature (images ``[C, H, W]``; text ``[L, dim]`` over the
    embedding offsets). ``heatmap``: images ``|FLIA|`` summed over channels ``[H, W]``; text the
    signed token scores ``[L]``. ``il_path``: IL at each of the ``steps + 1`` points of the path
    (float64). ``gap``: the relative completeness gap (see the module docstring). ``perturbed``:
    the final training input (images) or embedding offset (text). ``confidence``: the final
    model's softmax probability of the training label before and after the perturbation.
    """

    attribution: torch.Tensor
    heatmap: torch.Tensor
    il_path: torch.Tensor
    gap: torch.Tensor
    perturbed: torch.Tensor
    confidence: torch.Tensor  # [..., 2]: before, after
    direction: str
    steps: int
    eta: float
    target: int
    trajectory: torch.Tensor | None = None  # [..., steps + 1, *input]: the inputs (offsets) along the path, on request

    @property
    def il_change(self) -> torch.Tensor:
        """Relative change of IL along the path, ``(IL(x^T) − IL(x^0)) / |IL(x^0)|`` (Table 1 of the paper)."""
        return (self.il_path[..., -1] - self.il_path[..., 0]) / self.il_path[..., 0].abs().clamp_min(1e-30)

    @property
    def confidence_change(self) -> torch.Tensor:
        return self.confidence[..., 1] - self.confidence[..., 0]

    def __getitem__(self, i: int) -> FLIAResult:
        """Result ``i`` of a batched run."""
        return FLIAResult(self.attribution[i], self.heatmap[i], self.il_path[i], self.gap[i], self.perturbed[i],
                          self.confidence[i], self.direction, self.steps, self.eta, self.target,
                          None if self.trajectory is None else self.trajectory[i])

    TENSORS = ("attribution", "heatmap", "il_path", "gap", "perturbed", "confidence")

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).contiguous() for k in self.TENSORS}


class _Offset(nn.Module):
    """``model`` applied to a base input plus an offset: pixels ``x + δ``, or token embeddings ``E[ids] + δ``."""

    def __init__(self, model: nn.Module, text: bool):
        super().__init__()
        self.m, self.text = model, text

    def forward(self, base: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        if self.text:
            return self.m.forward_embeddings(self.m.embed(base) + delta, base != 0)
        return self.m(base + delta)


class FLIA:
    """FLIA against one test input: the test gradients at every checkpoint are computed once here.

    ``run(x_train, y_train)`` perturbs a batch of training inputs at once (each its own path).
    """

    def __init__(self, trained: TrainedModel, x_test: torch.Tensor, target: int | None = None, subset: str = "all"):
        model = trained.model.eval()
        self.text = hasattr(model, "forward_embeddings")
        if not trained.checkpoints or not trained.checkpoints_given:
            raise AttrexError("FLIA needs the model's training checkpoints (IL is TracIn over them): this model came "
                              "without them (pass its checkpoint folder)")
        self.trained, self.subset = trained, subset
        self.dtype = model.head.weight.dtype
        x_test = _one(x_test, "x_test", self.text, self.dtype)
        n_classes = model.head.out_features
        if target is None:
            target = int(predict(model, x_test[None]).argmax(1))
        if isinstance(target, torch.Tensor) and target.numel() == 1 and not torch.is_floating_point(target):
            target = int(target)
        if isinstance(target, bool) or not isinstance(target, int | np.integer) or not 0 <= target < n_classes:
            raise AttrexError(f"target must be a class index in [0, {n_classes - 1}]; got {target!r}")
        target = int(target)
        self.x_test, self.target = x_test, target
        self.names = select_params(model, subset)
        self._wrappers, self._params, self._rest, self._test = [], [], [], []
        self._lr = []
        for c in trained.checkpoints:
            m = _Offset(trained.model_at(c.index).eval(), self.text)
            params = {f"m.{n}": p.detach() for n, p in m.m.named_parameters() if n in self.names}
            rest = {k: v.detach() for k, v in m.named_parameters() if k not in params}
            rest.update({k: v.detach() for k, v in m.named_buffers()})
            self._wrappers.append(m)
            self._params.append(params)
            self._rest.append(rest)
            self._lr.append(float(c.lr))
            zero = torch.zeros(self._offset_shape(x_test), dtype=self.dtype)
            g = grad(self._loss(m, rest))(params, x_test, zero, torch.tensor(target))
            self._test.append(g)
        self._final = _Offset(model, self.text)
        if self.text:
            table = model.embedding.weight.detach()[1:]
            self.scale = float(table.max() - table.min())
        else:
            self.scale = 1.0

    # ----- the pieces ---------------------------------------------------------------------------
    def batch(self, x_train: torch.Tensor, y_train) -> tuple[torch.Tensor, torch.Tensor]:
        """Training inputs as ``[B, ...]`` shaped like the test input, and labels ``[B]``; clear errors otherwise."""
        return _batch(x_train, y_train, self.x_test, self.text, self.trained.model.head.out_features, self.dtype)

    def _offset_shape(self, base: torch.Tensor) -> tuple[int, ...]:
        if self.text:
            return (*base.shape, self.trained.model.embedding.embedding_dim)
        return tuple(base.shape)

    @staticmethod
    def _loss(wrapper: nn.Module, rest: dict):
        def loss(params, base, delta, y):
            logits = functional_call(wrapper, (params, rest), (base[None], delta[None]))
            return F.cross_entropy(logits, y[None])
        return loss

    def _il_single(self, delta: torch.Tensor, base: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = delta.new_zeros(())
        for m, params, rest, g_test, lr in zip(self._wrappers, self._params, self._rest, self._test, self._lr,
                                               strict=True):
            g = grad(self._loss(m, rest))(params, base, delta, y)
            total = total + lr * sum((g[k] * g_test[k]).sum() for k in params)
        return total

    def il(self, base: torch.Tensor, y: torch.Tensor, delta: torch.Tensor | None = None) -> torch.Tensor:
        """IL of each training input ``base`` (plus ``delta``) ``[B]``: TracIn over the checkpoints."""
        if delta is None:
            delta = torch.zeros(len(base), *self._offset_shape(base[0]), dtype=self.dtype)
        return vmap(self._il_single)(delta, base, y)

    def il_and_grad(self, base: torch.Tensor, y: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """IL ``[B]`` and its gradient with respect to the input (offset) ``[B, ...]``, by double backprop."""
        g, value = vmap(grad_and_value(self._il_single))(delta, base, y)
        return value, g

    def confidence(self, base: torch.Tensor, y: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The final model's probability of label ``y`` at ``base + delta``, ``[B]``."""
        with torch.no_grad():
            return self._final(base, delta).softmax(1).gather(1, y[:, None]).squeeze(1)

    # ----- the path ---------------------------------------------------------------------------------
    def run(self, x_train: torch.Tensor, y_train: torch.Tensor, steps: int = 10, eta: float = ETA,
            direction: str = "descent", lo: float = 0.0, hi: float = 1.0, keep_path: bool = False) -> FLIAResult:
        """FLIA of a batch of training inputs ``[B, ...]`` with labels ``[B]`` (see the module docstring).

        ``keep_path``: also return every point of the path (``trajectory``; inputs for images,
        embedding offsets for text).
        """
        if direction not in DIRECTIONS:
            raise AttrexError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
            raise AttrexError(f"steps must be an integer in [1, 1000]; got {steps!r}")
        if not (isinstance(eta, int | float) and 0 < eta <= 1):
            raise AttrexError(f"eta must be a step size in (0, 1]; got {eta!r}")
        base, y = self.batch(x_train, y_train)
        sign, step = DIRECTIONS[direction], eta * self.scale
        delta = torch.zeros(len(base), *self._offset_shape(base[0]), dtype=self.dtype)
        attribution = torch.zeros_like(delta)
        path, points = [], [delta]
        for _ in range(steps):
            value, g = self.il_and_grad(base, y, delta)
            path.append(value)
            new = delta + sign * step * g.sign()
            if not self.text:  # keep the perturbed input in the pixel range
                new = torch.minimum(torch.maximum(new, lo - base), hi - base)
            attribution += (new - delta) * g
            delta = new
            points.append(delta)
        path.append(self.il(base, y, delta))
        il_path = torch.stack(path, 1).double()
        change = il_path[:, -1] - il_path[:, 0]
        total = attribution.flatten(1).double().sum(1)
        gap = (total - change).abs() / change.abs().clamp_min(1e-300)
        conf = torch.stack([self.confidence(base, y, torch.zeros_like(delta)), self.confidence(base, y, delta)], 1)
        heat = attribution.sum(-1) if self.text else attribution.abs().sum(1)
        perturbed = delta if self.text else base + delta
        trajectory = None
        if keep_path:
            trajectory = torch.stack(points, 1) + (0 if self.text else base[:, None])
        return FLIAResult(attribution, heat, il_path, gap, perturbed, conf, direction, steps, float(eta), self.target,
                          trajectory)


# ----------------------------------------------------------------------------- input checks


def _one(x: torch.Tensor, name: str, text: bool, dtype: torch.dtype) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise AttrexError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if text:
        if torch.is_floating_point(x):
            raise AttrexError(f"{name} must hold token ids (an integer tensor) for a text model")
        x = x.squeeze(0) if x.dim() == 2 and len(x) == 1 else x
        if x.dim() != 1:
            raise AttrexError(f"{name} must be one text of token ids [L]; got shape {list(x.shape)}")
        return x.long()
    if not torch.is_floating_point(x):
        raise AttrexError(f"{name} must be a floating-point image tensor; got {x.dtype}")
    x = x.squeeze(0) if x.dim() == 4 and len(x) == 1 else x
    if x.dim() != 3:
        raise AttrexError(f"{name} must be one image [C, H, W]; got shape {list(x.shape)}")
    if not torch.isfinite(x).all():
        raise AttrexError(f"{name} holds NaN or infinite values")
    return x.to(dtype)


def _batch(x: torch.Tensor, y, x_test: torch.Tensor, text: bool, n_classes: int,
           dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor):
        raise AttrexError(f"x_train must be a torch.Tensor; got {type(x).__name__}")
    if x.shape == x_test.shape:
        x = x[None]
    if x.shape[1:] != x_test.shape:
        raise AttrexError(f"x_train must have the test input's shape {list(x_test.shape)} (or a batch of them); "
                          f"got {list(x.shape)}")
    x = torch.stack([_one(xi, "x_train", text, dtype) for xi in x]) if len(x) else x
    y = torch.as_tensor(y)
    y = y.expand(len(x)) if y.dim() == 0 else y
    if y.shape != (len(x),) or torch.is_floating_point(y) or y.dtype == torch.bool:
        raise AttrexError(f"y_train must hold one integer label per training input ({len(x)}); got {list(y.shape)}")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise AttrexError(f"y_train must lie in [0, {n_classes - 1}]; got {y.tolist()[:8]}")
    return x, y.long()


# ----------------------------------------------------------------------------- the cached API


def flia(trained: TrainedModel, x_train: torch.Tensor, y_train: int, x_test: torch.Tensor, target: int | None = None,
         *, steps: int = 10, eta: float = ETA, direction: str = "descent", subset: str = "all",
         cache: Cache | None = None) -> FLIAResult:
    """FLIA of one training input ``x_train`` (label ``y_train``) for the test input ``x_test``, cached on disk.

    ``target``: the explained class of the test input (default: the model's prediction).
    Returns the heatmap, the IL path and the completeness gap (:class:`FLIAResult`).
    """
    explainer = FLIA(trained, x_test, target, subset)
    base, y = explainer.batch(x_train, y_train)
    if len(base) != 1:
        raise AttrexError("flia() explains one training input; use flia_many() for a batch")
    return _cached(trained, explainer, base, y, steps, eta, direction, subset, cache)[0]


def flia_many(trained: TrainedModel, x_train: torch.Tensor, y_train, x_test: torch.Tensor, target: int | None = None,
              *, steps: int = 10, eta: float = ETA, direction: str = "descent", subset: str = "all",
              cache: Cache | None = None) -> list[FLIAResult]:
    """FLIA of each of a batch of training inputs ``[B, ...]`` (labels ``[B]``) for the test input ``x_test``.

    Each result is cached on disk under the same key as :func:`flia` gives that one input, so the two share
    their results; the inputs not cached yet run in one batched pass (about twice as fast as one at a time
    for four MNIST images on one thread).
    """
    explainer = FLIA(trained, x_test, target, subset)
    base, y = explainer.batch(x_train, y_train)
    return _cached(trained, explainer, base, y, steps, eta, direction, subset, cache)


def _cached(trained: TrainedModel, explainer: FLIA, base: torch.Tensor, y: torch.Tensor, steps: int, eta: float,
            direction: str, subset: str, cache: Cache | None) -> list[FLIAResult]:
    """Each input's result from the cache, the missing ones computed in one batched run and saved."""
    cache = cache or Cache()
    keys = [make_key({"model": trained.key, "x_train": tensor_digest(base[j:j + 1]), "y_train": int(y[j]),
                      "x_test": tensor_digest(explainer.x_test), "target": explainer.target, "steps": steps,
                      "eta": eta, "direction": direction, "subset": subset}, f"flia-{VERSION}")
            for j in range(len(base))]
    todo = [j for j, key in enumerate(keys) if not cache.contains("features", key)]
    batch = explainer.run(base[todo], y[todo], steps, eta, direction) if todo else None
    where = {j: n for n, j in enumerate(todo)}

    def compute(j: int) -> tuple[dict[str, torch.Tensor], dict]:
        one = batch[where[j]] if j in where else explainer.run(base[j:j + 1], y[j:j + 1], steps, eta, direction)[0]
        return {k: v.clone() for k, v in one.to_tensors().items()}, {}  # a copy: not the whole batch's storage

    out = []
    for j, key in enumerate(keys):
        art = cache.get_or_compute("features", key, lambda j=j: compute(j),
                                   lambda tensors, meta: [tensors[k] for k in FLIAResult.TENSORS])
        out.append(FLIAResult(**{k: art.tensors[k] for k in FLIAResult.TENSORS}, direction=direction, steps=steps,
                              eta=float(eta), target=explainer.target))
    return out
