"""Data attribution for least-squares linear regression, in closed form: the setting of the
Integrated Influence paper's Table 1 (Yang, Gu & Sun, §3.1).

attrex's methods (:mod:`core.methods`) explain classifiers through the engine. This module
states three of them -- the influence function, Integrated Influence and TracIn -- for the
model ``f(x; θ) = xᵀθ`` trained on the summed squared error, where every quantity of the
papers has a closed form (the paper uses the closed forms too). Notation: ``X`` ``[n, d]``
the training inputs and ``y`` ``[n]`` their targets, ``L_train(θ; ρ) = Σ_i (x_iᵀθ − ρ_i)²``,
``θ* = P Xᵀy`` with ``P = (XᵀX)⁻¹``, a test point ``(x', y')`` with ``L_test(θ) = (x'ᵀθ −
y')²`` and residual ``r' = x'ᵀθ* − y'``.

**Sign**: every function returns ``[n_test, n_train]`` scores in attrex's convention, positive
= the training point lowers the test loss (raises ``−L_test``, the output :mod:`core.metrics.lds`
ranks subsets by).

- :func:`influence` (Koh & Liang; IIF Eq. 11): the first-order change of the test loss when
  point ``i`` is up-weighted, ``I(i) = −∇L_testᵀ H⁻¹ ∇ℓ_i = 2 r' x'ᵀP x_i (y_i − x_iᵀθ*)``
  (``H = 2XᵀX``); score ``−I(i)``.
- :func:`integrated_influence` (IIF Eq. 9, 12, 13, 15): the baseline ``θ' = argmin_θ
  −L_test(θ) + λ L_train(θ) = (λXᵀX − x'x'ᵀ)⁻¹ (λXᵀy − y'x')``, which exists when ``λ >
  x'ᵀP x'`` (else the objective is unbounded below: an error); the target path ``ρ_i(t) = t
  y_i + (1 − t) x_iᵀθ'``, along which the least-squares optimum is ``θ(t) = θ' + t (θ* − θ')``
  (the fit of the targets ``Xθ'`` is ``θ'`` itself), ``H = 2XᵀX`` for every ``t``, ``J_i =
  ∂∇L_train/∂ρ_i = −2 x_i`` and ``G(t) = 2 (x'ᵀθ(t) − y') x'``, so that

      I(i) = −∫₀¹ G(t)ᵀ H⁻¹ J_i ρ_i'(t) dt = 2 x'ᵀP x_i (y_i − x_iᵀθ') ∫₀¹ (x'ᵀθ(t) − y') dt.

  ``steps=None`` takes the exact integral (``G`` is linear in ``t``: the mean of the residuals
  at ``θ'`` and ``θ*``); ``steps=K`` takes Eq. 10's Euler sum at ``t_k = k/K``, ``k = 1..K``.
  ``baseline="model"`` sets ``θ' = θ*`` (the implicit baseline of the influence function,
  Corollary 2.6): with ``steps=1`` it equals :func:`influence` exactly (Lemma 2.5). Score
  ``−I(i)``.
- :func:`tracin` (Pruthi et al.): full-batch gradient descent on the mean squared error from
  ``θ = 0`` with learning rate ``lr`` for ``epochs`` steps, a checkpoint after each;
  ``TracIn(i) = Σ_k lr ∇ℓ'(θ_k)·∇ℓ_i(θ_k)`` with ``∇ℓ_i(θ) = 2 (x_iᵀθ − y_i) x_i``.
- :func:`graddot`: the same dot product at ``θ*`` alone, ``∇ℓ'(θ*)·∇ℓ_i(θ*) = 4 r' (x_iᵀθ* −
  y_i) x'ᵀx_i``: the influence function with the Hessian replaced by the identity.

:func:`subset_outputs` refits ``θ_S`` on each subset in closed form and returns ``−L_test``,
the LDS's actual outputs; :func:`synthetic` draws the paper's data.
"""

from __future__ import annotations

import torch

from core.errors import AttrexError


def _check(x: torch.Tensor, y: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise AttrexError(f"{name}: inputs must be [n, d] and targets [n]; got {list(x.shape)} and {list(y.shape)}")
    return x, y


def fit(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The least-squares parameters ``θ* = (XᵀX)⁻¹Xᵀy`` (``XᵀX`` must be invertible)."""
    x, y = _check(x, y, "training set")
    if x.shape[0] < x.shape[1]:
        raise AttrexError(f"least squares needs at least as many points as features; got {x.shape[0]} < {x.shape[1]}")
    return torch.linalg.solve(x.T @ x, x.T @ y)


def _leverage(x, xt) -> torch.Tensor:
    """``x'ᵀ P x_i`` for every test and training point ``[n_test, n]``."""
    return xt @ torch.linalg.solve(x.T @ x, x.T)


def influence(x, y, xt, yt) -> torch.Tensor:
    """The influence function's scores ``[n_test, n]`` (the module docstring gives the formula)."""
    x, y = _check(x, y, "training set")
    xt, yt = _check(xt, yt, "test set")
    theta = fit(x, y)
    residual = xt @ theta - yt
    return -2 * residual[:, None] * _leverage(x, xt) * (y - x @ theta)[None, :]


def baselines(x, y, xt, yt, reg: float = 1.0) -> torch.Tensor:
    """IIF's unlearned parameters ``θ'`` per test point ``[n_test, d]`` (Eq. 12 in closed form)."""
    x, y = _check(x, y, "training set")
    xt, yt = _check(xt, yt, "test set")
    if reg <= 0:
        raise AttrexError(f"reg (λ) must be positive; got {reg}")
    gram = x.T @ x
    lev = (xt * torch.linalg.solve(gram, xt.T).T).sum(1)
    if (lev >= reg).any():
        raise AttrexError(f"the unlearning objective is unbounded below for λ = {reg}: it needs λ > x'ᵀ(XᵀX)⁻¹x', "
                          f"which reaches {lev.max().item():.3g} on this test set")
    a = reg * gram[None] - xt[:, :, None] * xt[:, None, :]
    b = reg * (x.T @ y)[None] - yt[:, None] * xt
    return torch.linalg.solve(a, b)


def integrated_influence(x, y, xt, yt, reg: float = 1.0, steps: int | None = None,
                         baseline: str = "unlearn") -> torch.Tensor:
    """Integrated Influence's scores ``[n_test, n]`` (the module docstring gives the formula)."""
    x, y = _check(x, y, "training set")
    xt, yt = _check(xt, yt, "test set")
    if steps is not None and steps < 1:
        raise AttrexError(f"steps must be at least 1 (or None for the exact integral); got {steps}")
    theta = fit(x, y)
    if baseline == "unlearn":
        start = baselines(x, y, xt, yt, reg)
    elif baseline == "model":
        start = theta.expand(xt.shape[0], -1)
    else:
        raise AttrexError(f"baseline must be 'unlearn' or 'model'; got {baseline!r}")
    r0, r1 = (xt * start).sum(1) - yt, xt @ theta - yt  # the test residual at t = 0 and t = 1
    if steps is None:
        mean_residual = (r0 + r1) / 2
    else:
        t = torch.arange(1, steps + 1, dtype=torch.float64) / steps
        mean_residual = (r0[:, None] + t[None] * (r1 - r0)[:, None]).mean(1)
    moved = y[None, :] - start @ x.T  # ρ_i'(t) = y_i − x_iᵀθ' per test point
    return -2 * _leverage(x, xt) * moved * mean_residual[:, None]


def checkpoints(x, y, lr: float, epochs: int) -> torch.Tensor:
    """Full-batch gradient descent on the mean squared error from ``θ = 0``: ``θ_1..θ_epochs`` ``[epochs, d]``."""
    x, y = _check(x, y, "training set")
    theta, out = torch.zeros(x.shape[1], dtype=torch.float64), []
    for _ in range(epochs):
        theta = theta - lr * 2 * x.T @ (x @ theta - y) / x.shape[0]
        out.append(theta)
    return torch.stack(out)


def tracin(x, y, xt, yt, lr: float = 0.1, epochs: int = 50) -> torch.Tensor:
    """TracIn's scores ``[n_test, n]`` over the checkpoints of :func:`checkpoints`."""
    x, y = _check(x, y, "training set")
    xt, yt = _check(xt, yt, "test set")
    thetas = checkpoints(x, y, lr, epochs)  # [K, d]
    rt = thetas @ xt.T - yt  # [K, n_test] test residuals
    r = thetas @ x.T - y  # [K, n] training residuals
    return 4 * lr * (xt @ x.T) * torch.einsum("kt,ki->ti", rt, r)


def graddot(x, y, xt, yt) -> torch.Tensor:
    """The dot product of the loss gradients at ``θ*`` ``[n_test, n]``."""
    x, y = _check(x, y, "training set")
    xt, yt = _check(xt, yt, "test set")
    theta = fit(x, y)
    return 4 * (xt @ x.T) * (xt @ theta - yt)[:, None] * (x @ theta - y)[None, :]


def subset_outputs(x, y, xt, yt, subsets: torch.Tensor) -> torch.Tensor:
    """``−L_test`` ``[M, n_test]`` of the least-squares fit on each subset of the boolean mask ``[M, n]``."""
    x, y = _check(x, y, "training set")
    xt, yt = _check(xt, yt, "test set")
    w = torch.as_tensor(subsets).double()
    gram = torch.einsum("mn,ni,nj->mij", w, x, x)
    theta = torch.linalg.solve(gram, (w * y) @ x)  # [M, d]
    return -(theta @ xt.T - yt) ** 2


def synthetic(n_train: int, n_test: int, dim: int, noise_train: float, noise_test: float,
              generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """The paper's data: ``x ~ N(0, I)``, ``w ~ N(0, I)``, ``y = xᵀw + ε`` with ``ε ~ N(0, σ²)``,
    ``σ = noise_train`` for training and ``noise_test`` for test points: ``(X, y, X', y')``."""
    def draw(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)
    w = draw(dim)
    x, xt = draw(n_train, dim), draw(n_test, dim)
    return x, x @ w + noise_train * draw(n_train), xt, xt @ w + noise_test * draw(n_test)
