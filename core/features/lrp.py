"""DualView-LRP: which pixels of a test input and of one training input make up their DualView score.

**Formula.** DualView (``core.methods.dualview``) scores training point ``i`` for class ``c`` at
the test input ``x'`` with the dual coefficient ``β_ic`` of its SVM surrogate head and the
penultimate features ``f`` (a constant 1 appended when the head has a bias):

    DV_c(i, x') = β_ic · [f_i, 1]ᵀ [f(x'), 1] = Σ_j R_j + β_ic,        R_j = β_ic · f_ij · f_j(x').

``R [d]`` splits the score over the penultimate features; ``β_ic`` (the constant coordinate,
0 without a head bias) belongs to no input and is reported on its own (``bias_term``). ``R``
(float64, cast to float32) is the relevance at the *output of the feature extractor* and is
propagated by Layer-wise Relevance Propagation (zennit) down to the pixels twice, with the
same ``R`` both times: through the extractor at the test input ``x'`` (which pixels of the
test image carry the shared features) and at the training input ``x_i`` (which pixels of the
training image do). Both heatmaps sum to ``≈ Σ_j R_j`` (conservation, reported as
``conservation_test`` / ``conservation_train`` = input relevance sum / ``Σ_j R_j``; NaN when
``Σ_j R_j = 0``, e.g. for a training point that is no support vector, ``β_i = 0``).

**Sign.** As for the scores: positive relevance supports the explained class ``c`` (the pixel
pushes the training point's contribution to the class-``c`` logit up), negative works against
it. For a proponent (``β_ic > 0``) pixels that build the shared features are positive; for an
opponent (``β_ic < 0``) the same pixels come out negative.

**Composites** (by name, ``COMPOSITES``):

- ``epsilon-plus-flat`` (default, for display): the flat rule on the first conv/linear layer
  (spreads a neuron's relevance evenly over its receptive field, so it also reaches blank
  pixels next to strokes), z⁺ on the other convolutions, ε on the fully connected layers;
- ``epsilon``: the ε rule (``ε = 1e-6``, added with the denominator's sign) on every
  conv/linear layer: the plain decomposition, tested for conservation; on the first layer
  every pixel's relevance is ``x_p · (…)``, so pixels of value 0 get exactly 0;
- ``epsilon-gamma-box``: the z^B (box) rule on the first conv/linear layer with the pixel
  range ``[0, 1]``, the generalised γ rule (γ = 0.25) on the other convolutions, ε on the fully
  connected layers.

In all of them ReLUs, and ``_Scale`` (SmallResNet's constant multiply by 1/8, an elementwise
rescaling that must not rescale relevance), pass relevance through unchanged; max pooling is
winner-takes-all (its gradient); flatten and reshape keep it; additions (the residual
``x + body(x)`` of SmallResNet's ``_Residual`` and of torchvision's ``BasicBlock``, via
canonizers that route the sum through a module) and average pooling split it in proportion
to the inputs' contributions.

**Biases.** The bias acts in the forward pass (it decides which ReLUs are on and the
activations the rules see) and stays in the ε, z⁺ and γ rules' denominators, but its share of
a neuron's relevance is not dropped: :class:`BiasSharingRule` hands it back to the neuron's
inputs in proportion to their absolute contributions ``|x_k w_kj|``, so every layer passes on
all of its relevance. Flat and z^B have no bias term in their denominators to begin with
(flat counts the receptive field; in z^B the bias cancels). Both obvious alternatives fail
on BatchNorm networks, where the merged bias is large: with the bias in the denominator and
its share dropped (zennit's default), the input relevance measured 0.6-2.5% of ``Σ_j R_j``
for the ε composite on a SmallResNet with non-trivial BatchNorm statistics (and 112-128% on
the MNIST CNN); dividing by the bias-free sum instead (zennit's ``zero_params=["bias"]``)
blows up wherever the bias nearly cancels the weighted inputs (relevance values 10⁹ times
``Σ_j R_j``, sums off by 10³-10⁴). With the shared bias the measured conservation is
1.0000 on SmallResNet, MLP and ResNet-18 for all three composites, 1.0000 on the MNIST CNN
for the two display composites, and 0.999-1.010 on the MNIST CNN for ε (what is lost: the
relevance of neurons that see only zeros, e.g. the first conv's blank background, whose
activation is bias alone, and the ``ε`` of the denominators).

**Canonizers** (applied to a private copy of the extractor; the model itself is never
touched, so concurrent users of it see nothing): BatchNorm (eval mode, running statistics) is
merged into the preceding convolution (SmallResNet, ResNet-18, any ``Sequential`` with
conv → BatchNorm); SmallResNet's ``_Residual`` and torchvision's ResNet blocks compute their
addition through a summing module. Models: ``SmallCNN``, ``MLP``, ``SmallResNet``,
``ResNet18`` and any :class:`~core.models.AttrexModel` whose ``features`` is an ``extractor``
module; ``LogisticRegression`` (features = the flattened pixels: the input relevance is ``R``
itself, reshaped); text models are refused.

Results are cached (kind ``features``) under the method's key, the test input's bytes, the
training index, the class and the composite.
"""

from __future__ import annotations

import copy
import logging
import operator
import time
import types
from dataclasses import dataclass

import torch
from torch import nn
from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite
from zennit.core import BasicHook, Composite, ParamMod, Stabilizer
from zennit.layer import Sum
from zennit.rules import Flat, Norm, Pass, ZBox
from zennit.torchvision import ResNetCanonizer
from zennit.types import Activation, AvgPool, BatchNorm, Convolution
from zennit.types import Linear as AnyLinear

from core.cache import Cache, make_key, tensor_digest
from core.errors import AttrexError
from core.methods.representer import penultimate_with_bias
from core.models.architectures import (
    LogisticRegression,
    ResNet18,
    TextClassifier,
    _Residual,
    _Scale,
)

log = logging.getLogger("attrex.features.lrp")

VERSION = "dualview-lrp-1"
COMPOSITES = ("epsilon-plus-flat", "epsilon", "epsilon-gamma-box")
EPSILON = 1e-6           # ε of the epsilon rule (added with the denominator's sign)
STABILIZER = 1e-6        # the other rules' stabiliser of the denominator
GAMMA = 0.25
PIXEL_RANGE = (0.0, 1.0)  # the scenarios' images are scaled to [0, 1]
NO_BIAS = ["bias"]


@dataclass
class LRPResult:
    """DualView-LRP of one (test input, training point, class) triple; see the module docstring.

    Relevance tensors are float32 on the CPU; heatmaps are the relevance summed over channels
    (signed: positive supports the class). ``score = feature_relevance.sum() + bias_term`` is the
    DualView score of the training point. ``conservation_*`` = input relevance sum /
    ``feature_relevance.sum()`` (1 = conserved; NaN when that sum is 0).
    """

    test_relevance: torch.Tensor      # [C, H, W]
    train_relevance: torch.Tensor     # [C, H, W]
    test_heatmap: torch.Tensor        # [H, W]
    train_heatmap: torch.Tensor       # [H, W]
    feature_relevance: torch.Tensor   # [d]  R_j = β_ic f_ij f_j(x')
    bias_term: float                  # β_ic (the constant coordinate; 0 without a head bias)
    score: float                      # Σ_j R_j + bias_term
    conservation_test: float
    conservation_train: float
    target: int
    train_index: int
    composite: str
    seconds: float = float("nan")     # propagation time (test + training input), as first computed
    forward_gap: float = 0.0          # max |canonized extractor − model features| / max |features|
    cache_status: str = "computed"    # hit / computed / recomputed: <why>


# ----- canonizers and composites -----------------------------------------------------------------
def _residual_forward(self: _Residual, x: torch.Tensor) -> torch.Tensor:
    """``act(x + body(x))`` with the addition done by a module, so that a rule can be attached to it."""
    return self.act(self.attrex_sum(torch.stack([x, self.body(x)], dim=-1)))


def _residual_attributes(name: str, module: nn.Module) -> dict | None:
    if isinstance(module, _Residual):
        return {"forward": types.MethodType(_residual_forward, module), "attrex_sum": Sum(dim=-1)}
    return None


def _canonizers(model: nn.Module) -> list:
    """ResNet-18: zennit's torchvision ResNet canonizer; otherwise BatchNorm merging and the ``_Residual``
    sum (each a no-op where nothing matches, e.g. in SmallCNN and MLP)."""
    if isinstance(model, ResNet18):
        return [ResNetCanonizer()]
    return [SequentialMergeBatchNorm(), AttributeCanonizer(_residual_attributes)]


def _pass_through_map() -> list:
    """Modules whose relevance is passed on (elementwise) or split by contribution (sums, average pools)."""
    return [
        (_Scale, Pass()),
        (Activation, Pass()),
        (BatchNorm, Pass()),       # merged into the preceding layer: the identity by then
        (Sum, Norm(stabilizer=STABILIZER)),
        (AvgPool, Norm(stabilizer=STABILIZER)),
    ]


def _param_mod(fn, with_bias: bool) -> ParamMod:
    """Parameters modified by ``fn`` (weights and, if ``with_bias``, the bias; else the bias is 0)."""
    return ParamMod(lambda p, name: fn(p), zero_params=None if with_bias else NO_BIAS)


class BiasSharingRule(BasicHook):
    """A linear/conv layer's LRP rule whose bias hands its share of the relevance back to the inputs.

    For output ``j`` with relevance ``R_j`` and actual pre-activation ``z_j = Σ_k x_k w_kj + b_j``
    the rule picks a *pair* by the sign of ``z_j`` and forms the denominator
    ``D_j = Σ_k c_kj + β_j`` with the contributions ``c_kj = x⁺_k u_kj + x⁻_k v_kj`` and the bias
    part ``β_j = u(b)_j`` (positive pair; the negative pair swaps ``u`` and ``v``), and sends

        R_k = Σ_j [ c_kj + β_j · |x_k| |w_kj| / Σ_k' |x_k'| |w_k'j| ] / D_j · R_j,

    so every output's relevance reaches the inputs in full (the bias part of the denominator is
    re-spread in proportion to the absolute contributions ``|x_k w_kj|``; an input of value 0
    gets nothing). The denominator keeps the bias, so ``|D_j| ≥ |z_j|`` and the ratio
    ``R_j / D_j`` stays bounded (``R_j`` is proportional to the neuron's own output); dividing
    by the bias-free sum instead blows up by orders of magnitude where a BatchNorm-merged bias
    nearly cancels the weighted inputs. Only an output none of whose inputs contributes
    (``Σ_k |x_k w_kj| = 0``) keeps its relevance (dropped).

    ``u, v``: ``w ↦ w + γw⁺`` and ``w ↦ w + γw⁻`` (generalised γ rule, both signs; ``γ = 0`` is
    the ε rule with ``D_j = z_j``), or ``w ↦ w⁺``, ``w ↦ w⁻`` with the positive pair only (z⁺ rule).
    """

    def __init__(self, kind: str = "epsilon", gamma: float = 0.0, stabilizer: float = EPSILON):
        stab = Stabilizer.ensure(stabilizer)
        if kind == "zplus":
            u, v, signed = (lambda w: w.clamp(min=0)), (lambda w: w.clamp(max=0)), False
        elif kind in ("epsilon", "gamma"):
            g = gamma if kind == "gamma" else 0.0
            u, v, signed = (lambda w: w + g * w.clamp(min=0)), (lambda w: w + g * w.clamp(max=0)), True
        else:
            raise ValueError(f"unknown rule kind {kind!r}")

        def pos(x):
            return x.clamp(min=0)

        def neg(x):
            return x.clamp(max=0)

        def same(x):
            return x

        inputs = [pos, neg, pos, neg, same, torch.abs, torch.zeros_like, torch.zeros_like]
        params = [
            _param_mod(u, True), _param_mod(v, False),        # positive pair: x⁺u + x⁻v + u(b)
            _param_mod(v, True), _param_mod(u, False),        # negative pair: x⁺v + x⁻u + v(b)
            _param_mod(same, True),                            # z (the pair's selector)
            _param_mod(torch.abs, False),                      # Σ |x| |w|
            _param_mod(u, True), _param_mod(v, True),          # the bias parts u(b), v(b)
        ]

        def mapper(grad, outs):
            z = outs[4]
            if signed:
                g_pos = grad * (z > 0) / stab(outs[0] + outs[1])
                g_neg = grad * (z < 0) / stab(outs[2] + outs[3])
            else:
                g_pos, g_neg = grad / stab(outs[0] + outs[1]), torch.zeros_like(grad)
            g_abs = (g_pos * outs[6] + g_neg * outs[7]) / stab(outs[5])
            zero = torch.zeros_like(grad)
            return [g_pos, g_pos, g_neg, g_neg, zero, g_abs, zero, zero]

        def reducer(ins, grads):
            return sum(ins[k] * grads[k] for k in (0, 1, 2, 3, 5))

        super().__init__(input_modifiers=inputs, param_modifiers=params, output_modifiers=[same] * len(inputs),
                         gradient_mapper=mapper, reducer=reducer)


def build_composite(name: str, model: nn.Module) -> Composite:
    """The zennit composite ``name`` (one of :data:`COMPOSITES`) with the canonizers ``model`` needs."""
    if name not in COMPOSITES:
        raise AttrexError(f"unknown composite {name!r}; accepted: {', '.join(COMPOSITES)}")
    canonizers = _canonizers(model)
    base = _pass_through_map()
    fc = (nn.Linear, BiasSharingRule("epsilon", stabilizer=EPSILON))
    if name == "epsilon":
        return LayerMapComposite(base + [(AnyLinear, BiasSharingRule("epsilon", stabilizer=EPSILON))],
                                 canonizers=canonizers)
    if name == "epsilon-plus-flat":
        first = [(AnyLinear, Flat(stabilizer=STABILIZER))]        # flat: no bias by definition
        rest = base + [(Convolution, BiasSharingRule("zplus", stabilizer=STABILIZER)), fc]
        return SpecialFirstLayerMapComposite(rest, first, canonizers=canonizers)
    low, high = PIXEL_RANGE
    # z^B: the bias cancels out of its denominator (Σ_k w⁺(x − l) + w⁻(x − h) ≥ 0); left out explicitly
    first = [(AnyLinear, ZBox(low=low, high=high, stabilizer=STABILIZER, zero_params=NO_BIAS))]
    rest = base + [(Convolution, BiasSharingRule("gamma", gamma=GAMMA, stabilizer=STABILIZER)), fc]
    return SpecialFirstLayerMapComposite(rest, first, canonizers=canonizers)


def propagate(extractor: nn.Module, composite: Composite, x: torch.Tensor, relevance: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """LRP of ``relevance`` (at ``extractor``'s output, ``[n, d]``) down to the inputs ``x`` ``[n, ...]``.

    Registers the composite (canonizers and rule hooks) on ``extractor``, runs one forward pass
    and one modified backward pass with ``relevance`` as the output gradient, and removes all of
    it again, also on error. Returns ``(input relevance, extractor output)``. The module is
    changed while this runs: pass a private copy where others may use it at the same time.
    """
    was_training = extractor.training
    extractor.eval()
    composite.register(extractor)
    try:
        inp = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = extractor(inp)
            if out.shape != relevance.shape:
                raise AttrexError(f"the feature extractor gives shape {list(out.shape)}, the relevance has "
                                  f"{list(relevance.shape)}")
            grad, = torch.autograd.grad(out, inp, grad_outputs=relevance.to(out.dtype))
    finally:
        composite.remove()
        extractor.train(was_training)
    return grad.detach(), out.detach()


# ----- the method -----------------------------------------------------------------------------------
def _check_method(method):
    from core.methods.dualview import DualView

    if not isinstance(method, DualView):
        raise AttrexError(f"dualview_lrp explains a DualView method; got {type(method).__name__}")
    model = method.model
    if isinstance(model, TextClassifier) or method.data.is_text:
        raise AttrexError("DualView-LRP works on image models only; text models (TextClassifier) are not supported")
    if not isinstance(model, LogisticRegression) and not isinstance(getattr(model, "extractor", None), nn.Module):
        raise AttrexError(f"DualView-LRP needs a model whose features come from an `extractor` module; "
                          f"{type(model).__name__} has none")
    return model


def _check_index(train_index, n: int) -> int:
    if isinstance(train_index, torch.Tensor) and train_index.numel() == 1 and not torch.is_floating_point(train_index):
        train_index = train_index.item()
    if isinstance(train_index, bool):
        raise AttrexError(f"train_index must be an integer; got {train_index!r}")
    try:
        i = operator.index(train_index)
    except TypeError:
        raise AttrexError(f"train_index must be an integer; got {train_index!r}") from None
    if not 0 <= i < n:
        raise AttrexError(f"train_index must lie in [0, {n - 1}]; got {i}")
    return i


def _key(method, x: torch.Tensor, train_index: int, target: int, composite: str) -> str:
    parts = {"method": method.cache_key(), "x": tensor_digest(x), "train_index": train_index, "target": target,
             "composite": composite}
    return make_key(parts, VERSION)


def _ratio(total: float, reference: float) -> float:
    return total / reference if reference != 0 else float("nan")


def _check_query(method, x_test, target, composite: str, train_index) -> tuple[torch.Tensor, int, int]:
    """The checked query of :func:`dualview_lrp`: ``(x [1, C, H, W], class, train_index)``; bad input raises."""
    if not isinstance(composite, str) or composite not in COMPOSITES:
        raise AttrexError(f"unknown composite {composite!r}; accepted: {', '.join(COMPOSITES)}")
    train_index = _check_index(train_index, len(method.data))
    shape = tuple(method.data.x.shape[1:])
    if not isinstance(x_test, torch.Tensor) or tuple(x_test.shape) not in (shape, (1, *shape)):
        got = list(x_test.shape) if isinstance(x_test, torch.Tensor) else type(x_test).__name__
        raise AttrexError(f"x_test must be one image of shape {list(shape)} (or [1, {', '.join(map(str, shape))}]); "
                          f"got {got}")
    if target is not None and isinstance(target, torch.Tensor) and target.numel() != 1:
        raise AttrexError(f"target must be one class; got shape {list(target.shape)}")
    x, tgt = method.prepare_inputs(x_test, target)            # checks dtype, finiteness and the class range
    return x, int(tgt[0]), train_index


def _input_relevance(model, composite: str, both: torch.Tensor, relevance: torch.Tensor,
                     features: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The feature relevance ``relevance`` [d] propagated to the inputs ``both`` [2, C, H, W] (test, training
    point), and the relative gap between the canonized extractor's features and ``features`` [2, d]."""
    if isinstance(model, LogisticRegression):
        return relevance.reshape(both.shape[1:]).expand(2, *both.shape[1:]).clone(), 0.0
    if not relevance.any():                                              # no support vector: nothing to share
        return torch.zeros_like(both), 0.0
    d = relevance.numel()
    device = next(model.parameters()).device
    extractor = copy.deepcopy(model.extractor).to(device)             # canonizers and hooks go on the copy
    inputs, out = propagate(extractor, build_composite(composite, model), both.to(device),
                            relevance.to(device).expand(2, d).contiguous())
    gap = float((out.cpu().float() - features).abs().max() / features.abs().max().clamp_min(1e-30))
    if gap > 1e-3:
        log.warning("dualview-lrp: the canonized extractor differs from the model's features by %.3g "
                    "(relative); the heatmaps may be wrong", gap)
    return inputs.cpu().float(), gap


def _validator(shape: tuple[int, ...], d: int, c: int, train_index: int, composite: str):
    """A check that a cached DualView-LRP result has the shapes and the query of this one."""
    def validate(tensors, meta):
        for name in ("test_relevance", "train_relevance"):
            if tuple(tensors[name].shape) != shape:
                raise ValueError(f"{name} has shape {list(tensors[name].shape)}, expected {list(shape)}")
        if tuple(tensors["feature_relevance"].shape) != (d,):
            raise ValueError(f"feature_relevance must have shape [{d}]")
        if meta["target"] != c or meta["train_index"] != train_index or meta["composite"] != composite:
            raise ValueError("cached result belongs to another query")
        for name in ("bias_term", "score", "conservation_test", "conservation_train", "seconds"):
            float(meta[name])
    return validate


def dualview_lrp(method, x_test: torch.Tensor, train_index: int, target: int | None = None,
                 composite: str = "epsilon-plus-flat", cache: Cache | None = None) -> LRPResult:
    """DualView-LRP heatmaps of a test image and of training point ``train_index`` for class ``target``.

    ``method``: a DualView instance (fitted here if it is not yet); ``x_test``: one image
    ``[C, H, W]`` or ``[1, C, H, W]``; ``target``: the explained class (default: the model's
    predicted class for ``x_test``); ``composite``: one of :data:`COMPOSITES`; ``cache``: default
    ``method.cache or Cache()``. See the module docstring for the formula, the sign, the bias
    treatment and the composites. Bad input raises :class:`~core.errors.AttrexError`.
    """
    model = _check_method(method)
    x, c, train_index = _check_query(method, x_test, target, composite, train_index)
    cache = cache or method.cache or Cache()
    key = _key(method, x, train_index, c, composite)
    d = model.head.in_features
    width = d + (model.head.bias is not None)

    def compute():
        method.fit()
        x_train = method.data.x[train_index: train_index + 1].to(x.dtype)
        with torch.no_grad():
            f_test = penultimate_with_bias(model, x)[0]                              # [d'] float64
            f_train = penultimate_with_bias(model, x_train)[0]
        beta = float(method.beta[train_index, c])
        relevance = (beta * f_train[:d] * f_test[:d]).float()              # R_j
        bias_term = beta * float(f_train[d:].prod() * f_test[d:].prod()) if width > d else 0.0
        score = float(relevance.double().sum()) + bias_term
        t0 = time.perf_counter()
        inputs, gap = _input_relevance(model, composite, torch.cat([x, x_train]), relevance,
                                       torch.stack([f_test[:d], f_train[:d]]).float())
        seconds = time.perf_counter() - t0
        total = float(relevance.double().sum())
        tensors = {"test_relevance": inputs[0].float(), "train_relevance": inputs[1].float(),
                   "feature_relevance": relevance}
        meta = {"bias_term": bias_term, "score": score,
                "conservation_test": _ratio(float(inputs[0].double().sum()), total),
                "conservation_train": _ratio(float(inputs[1].double().sum()), total),
                "target": c, "train_index": train_index, "composite": composite,
                "seconds": seconds, "forward_gap": gap}
        return tensors, meta

    art = cache.get_or_compute("features", key, compute,
                               _validator(tuple(method.data.x.shape[1:]), d, c, train_index, composite))
    t, m = art.tensors, art.meta
    return LRPResult(
        test_relevance=t["test_relevance"], train_relevance=t["train_relevance"],
        test_heatmap=t["test_relevance"].sum(0), train_heatmap=t["train_relevance"].sum(0),
        feature_relevance=t["feature_relevance"], bias_term=float(m["bias_term"]), score=float(m["score"]),
        conservation_test=float(m["conservation_test"]), conservation_train=float(m["conservation_train"]),
        target=int(m["target"]), train_index=int(m["train_index"]), composite=str(m["composite"]),
        seconds=float(m["seconds"]), forward_gap=float(m.get("forward_gap", 0.0)), cache_status=art.status,
    )


__all__ = ["COMPOSITES", "BiasSharingRule", "LRPResult", "build_composite", "dualview_lrp", "propagate"]
