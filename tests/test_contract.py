"""The contract every registered method keeps, checked on one small convex problem.

For each method in the registry, on an L2-regularised logistic regression trained to its
optimum (so retraining is exact and cheap):

- the output shapes of ``scores``, ``top_k`` and ``self_scores``;
- ``self_scores()`` equals the diagonal of ``scores(x_train, y_train)`` (a method whose
  self-score is defined otherwise says so with ``self_is_diagonal = False``; one without a
  label-quality signal, ``self_influence = False``, refuses with a clear error);
- the sign convention: retraining without the top proponent of a test point raises that
  point's loss on the explained class (for methods that estimate removal's effect,
  ``estimates_removal``; GradDot and GradCos are similarities);
- a method without per-test-point scores (``per_test = False``, the training-loss baseline)
  refuses ``scores`` with a clear error and still gives one self-score per training point;
- a method that retrains on the scenario (``retrains``, cleanlab's k folds) refuses bare
  tensors with a clear error (its scores are checked in tests/test_evaluation.py).

The test points are whichever the model predicts; nothing here assumes what a particular set
of weights does.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from core.cache import Cache
from core.errors import AttrexError
from core.methods import REGISTRY, TrainingData, create
from core.models.architectures import LogisticRegression
from core.models.training import TrainedModel

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest

# L2 weight. Curvature >= LAM, so the optimum is unique and a gradient norm g bounds the
# parameter error by g / LAM. It also makes the Hessian nearly isotropic (the loss adds at most
# ~0.6 to LAM's 1 here), so an influence H⁻¹g and a plain gradient g point the same way: the
# test checks each method's sign convention, not how well it approximates leave-one-out
# (tests/test_influence.py does that, at a weak L2 where the two differ).
LAM = 1.0
N_TEST = 3     # test points whose top proponent is removed
# Parameters for this problem. IIF: every training point in each path epoch, a short
# unlearning. Representer: the retrained layer's L2 weight is the model's (its objective is
# (1/n)Σℓ + λ‖W‖²). TRAK: with 90 points and 150 parameters ΦᵀΦ is singular (rank 81) and the
# pseudo-inverse interpolates (measured: the top proponent's removal then lowered the loss of
# 2 of 3 test points); a ridge stands for the model's L2 term (damping 0.01 to 1 all hold).
PARAMS = {"integrated-influence": {"epoch_samples": 0, "unlearn_steps": 20}, "representer": {"lmbda": LAM / 2},
          "trak": {"damping": 0.1}}


def _fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n_norm: int) -> float:
    """Minimise ``Σ ℓ_i / n_norm + (λ/2)‖θ‖²`` by L-BFGS from the model's weights; the final gradient norm."""
    params = list(model.parameters())
    opt = torch.optim.LBFGS(params, lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-16,
                            history_size=30, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y, reduction="sum") / n_norm + LAM / 2 * sum(p.pow(2).sum() for p in params)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    closure()
    return float(torch.cat([p.grad.reshape(-1) for p in params]).norm())


@pytest.fixture(scope="module")
def convex(mnist):
    """Digits 0-2 downsampled to 7x7, 90 training points, a logistic regression at its optimum (float64)."""
    keep = torch.isin(mnist.y_train, torch.tensor([0, 1, 2])).nonzero().squeeze(1)[:90]
    keep_test = torch.isin(mnist.y_test, torch.tensor([0, 1, 2])).nonzero().squeeze(1)[:N_TEST]
    x = F.avg_pool2d(mnist.x_train[keep], 4).double()
    y = mnist.y_train[keep]
    x_test = F.avg_pool2d(mnist.x_test[keep_test], 4).double()
    torch.manual_seed(0)
    model = LogisticRegression(49, 3).double()
    norm = _fit(model, x, y, len(x))
    assert norm < 1e-7, f"L-BFGS stopped at gradient norm {norm:.2g}"
    trained = TrainedModel.wrap(model, "test-contract-logreg-7x7-3")
    return {"model": model, "x": x, "y": y, "x_test": x_test, "trained": trained,
            "data": TrainingData(x, y, 3, "test-contract-mnist-7x7-90")}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_method_keeps_the_contract(convex, name, tmp_path):
    cls = REGISTRY[name]
    if cls.retrains:  # needs a scenario's recipe to retrain (cleanlab): refuses bare tensors; see test_evaluation
        with pytest.raises(AttrexError, match="needs a scenario"):
            create(name, convex["trained"], convex["data"], cache=Cache(tmp_path)).fit()
        return
    method = create(name, convex["trained"], convex["data"], cache=Cache(tmp_path), **PARAMS.get(name, {})).fit()
    x, y, x_test, n = convex["x"], convex["y"], convex["x_test"], len(convex["y"])

    if not cls.per_test:
        with pytest.raises(AttrexError, match="no per-test-point scores"):
            method.scores(x_test)
        with pytest.raises(AttrexError, match="no per-test-point scores"):
            method.top_k(x_test, k=4)
        own = method.self_scores()
        assert own.shape == (n,) and torch.isfinite(own).all()
        return

    # shapes
    s = method.scores(x_test)
    assert s.shape == (N_TEST, n) and torch.isfinite(s).all()
    top = method.top_k(x_test, k=4)
    for t in (top.proponents, top.proponent_scores, top.opponents, top.opponent_scores):
        assert t.shape == (N_TEST, 4)
    assert torch.equal(top.targets, convex["model"](x_test).argmax(1))

    # self-influence
    if not cls.self_influence:
        with pytest.raises(AttrexError, match="no self-influence"):
            method.self_scores()
    else:
        own = method.self_scores()
        assert own.shape == (n,) and torch.isfinite(own).all()
        if cls.self_is_diagonal:
            diag = method.scores(x, y).diagonal()
            # float32 storage of the precompute: measured max difference 3e-7 of the largest |score|
            torch.testing.assert_close(own.double(), diag.double(), rtol=0, atol=1e-5 * float(diag.abs().max()))

    # sign: removing the strongest proponent of each test point raises its loss on the explained class
    if not cls.estimates_removal:
        return
    model = convex["model"]
    with torch.no_grad():
        base = F.cross_entropy(model(x_test), top.targets, reduction="none")
    for j in range(N_TEST):
        drop = int(top.proponents[j, 0])
        keep = torch.arange(n) != drop
        retrained = copy.deepcopy(model)
        assert _fit(retrained, x[keep], y[keep], n) < 1e-7  # parameter error < 1e-5: far below the effect
        with torch.no_grad():
            after = F.cross_entropy(retrained(x_test[j: j + 1]), top.targets[j: j + 1])
        assert float(after) > float(base[j]), (name, j, drop, float(after - base[j]))
