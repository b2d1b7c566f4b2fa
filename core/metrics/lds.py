"""Linear datamodeling score (LDS): do a method's scores, summed over a training subset, rank
the models trained on those subsets as their outputs do?

Park, Georgiev, Ilyas, Leclerc & Madry, "TRAK: attributing model behavior at scale", ICML
2023, §2.2 (after Ilyas et al., "Datamodels", ICML 2022); the Integrated Influence paper's
Table 2 and dattri's benchmark report it. ``M`` subsets ``S_1..S_M`` of the training set, each
of a fraction ``alpha`` of it, drawn at random; a model trained on each. For test point ``t``
with the attribution row ``tau_t`` ``[n_train]``:

    predicted_t(S_j) = sum_{i in S_j} tau_t[i]          actual_t(S_j) = f(model_j, x_t)

and ``LDS_t = Spearman(predicted_t(S_1..S_M), actual_t(S_1..S_M))``; LDS is its mean over test
points. The output ``f`` (computed by the caller, :mod:`core.evaluation`) is the margin of the
test point's true class, ``logit_y - logsumexp(logits without y)`` (TRAK's choice for
classifiers; dattri's LDS uses the same margin). A positive score means "this training
point raises the output", the sign convention of every attrex method.

A test point whose predicted or actual outputs are constant over the subsets has no ranking;
:func:`lds_rows` gives NaN for it, :func:`lds` averages over the others and raises if none is left.
"""

from __future__ import annotations

import math

import torch

from core.errors import AttrexError
from core.metrics._common import matrix
from core.stats import spearman


def _inputs(scores, subsets, outputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s = matrix(scores)
    m = torch.as_tensor(subsets)
    if m.dtype != torch.bool or m.dim() != 2 or m.shape[1] != s.shape[1]:
        raise AttrexError(f"subsets must be a boolean mask [M, {s.shape[1]}]; got {m.dtype} {list(m.shape)}")
    if m.shape[0] < 3:
        raise AttrexError(f"LDS needs at least 3 subsets to rank; got {m.shape[0]}")
    out = matrix(outputs, "outputs")
    if out.shape != (m.shape[0], s.shape[0]):
        raise AttrexError(f"outputs must be [M, n_test] = [{m.shape[0]}, {s.shape[0]}]; got {list(out.shape)}")
    return s, m, out


def predicted_outputs(scores, subsets) -> torch.Tensor:
    """The datamodel prediction ``[M, n_test]``: each test row's scores summed over each subset."""
    s = matrix(scores)
    return torch.as_tensor(subsets).double() @ s.T


def lds_rows(scores, subsets, outputs) -> list[float]:
    """``LDS_t`` per test point (NaN where a column is constant)."""
    s, m, out = _inputs(scores, subsets, outputs)
    pred = predicted_outputs(s, m)
    return [spearman(pred[:, t], out[:, t]) for t in range(s.shape[0])]


def lds(scores, subsets, outputs) -> float:
    """Mean linear datamodeling score over the test points that have a ranking."""
    rows = [r for r in lds_rows(scores, subsets, outputs) if math.isfinite(r)]
    if not rows:
        raise AttrexError("LDS is undefined: every test point's predicted or actual outputs are constant over the subsets")
    return sum(rows) / len(rows)


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``logit_y - logsumexp(other logits)`` per row: the model output LDS ranks."""
    logits = logits.double()
    picked = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), float("-inf"))
    return picked - others.logsumexp(1)
