"""Representer points: RPS-L2's decomposition of the retrained layer on the default MNIST CNN, and
RPS-LJE's terms against a direct autograd computation of the one-step-expanded layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.errors import AttrexError
from core.methods import TrainingData, create, get_method
from core.methods.representer import head_matrix, lje_hessian, penultimate_with_bias
from core.models import TrainedModel
from core.models.architectures import MLP


def with_one(f: torch.Tensor) -> torch.Tensor:
    return torch.cat([f.double(), torch.ones(len(f), 1, dtype=torch.float64)], 1)


@torch.no_grad()
def features(model, x: torch.Tensor) -> torch.Tensor:
    return with_one(model.features(x))


# ----- RPS-L2 on the default CNN ----------------------------------------------------------------
@pytest.fixture(scope="module")
def rps(mnist, mnist_trained):
    return create("representer", mnist_trained, TrainingData.of(mnist)).fit()


def test_l2_layer_is_stationary(mnist, mnist_trained, rps):
    """The gradient of (1/n)Σℓ + λ‖W‖², recomputed here by autograd at the cached layer, vanishes."""
    lmbda = rps.hparams["lmbda"]
    f = features(mnist_trained.model, mnist.x_train)
    w = rps.layer.clone().requires_grad_(True)
    objective = F.cross_entropy(f @ w.T, mnist.y_train) + lmbda * w.pow(2).sum()
    (grad,) = torch.autograd.grad(objective, w)
    assert rps.info["converged"]
    assert float(grad.norm()) == pytest.approx(rps.info["grad_norm"], rel=0.05, abs=1e-12)
    assert float(grad.norm()) <= 1e-6 * 2 * lmbda * float(rps.layer.norm())


def test_l2_decomposition_reproduces_the_retrained_logits(mnist, mnist_trained, rps):
    x = mnist.x_test[:50]
    logits = features(mnist_trained.model, x) @ rps.layer.T                  # the retrained layer, directly
    rows = torch.arange(len(x))
    for target in (mnist_trained.model(x).argmax(1), torch.full((len(x),), 7)):
        s = rps.scores(x, target).double()
        assert s.shape == (len(x), len(mnist.y_train))
        total = s.sum(1)
        assert torch.allclose(total, logits[rows, target], rtol=1e-4, atol=1e-4 * float(logits.abs().max()))
    # α_i = −(1/(2λn)) ∂ℓ/∂Φ_i, written out: the score of point i for class c is α_ic f̃_iᵀ f̃(x')
    f = features(mnist_trained.model, mnist.x_train)
    alpha = -((f @ rps.layer.T).softmax(1) - F.one_hot(mnist.y_train, 10).double()) / (
        2 * rps.hparams["lmbda"] * len(f))
    ft = features(mnist_trained.model, x[:3])
    direct = (ft @ f.T) * alpha[:, 2][None, :]
    assert torch.allclose(rps.scores(x[:3], 2).double(), direct, rtol=1e-5, atol=1e-9)
    # a convex, L2-regularised refit of the head: measured 0.988-0.997 over seeds 0-4 x kernels AVX512, AVX2,
    # DEFAULT (one torch thread) and seed 0 at two threads (AVX512 0.995, DEFAULT 0.994); 0.95 is 0.038 below
    assert rps.info["retrained_agreement_test"] >= 0.95


def test_l2_self_influence(mnist, rps):
    own = rps.self_scores()
    assert own.shape == (len(mnist.y_train),) and (own >= 0).all()     # α_{i,y_i} ≥ 0 with label targets
    for i in (0, 17, 2500):
        assert float(rps.scores(mnist.x_train[i], int(mnist.y_train[i]))[0, i]) == pytest.approx(float(own[i]), rel=1e-5)


# ----- a small problem where everything can be computed directly ---------------------------------
@pytest.fixture(scope="module")
def small():
    """A 4-class MLP (penultimate 6 + 1) trained briefly on 160 points of overlapping blobs."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(160) % 4
    x = torch.randn(4, 8, generator=g)[y] * 1.5 + torch.randn(160, 8, generator=g)
    torch.manual_seed(0)
    model = MLP(in_features=8, n_classes=4, hidden=(16, 6))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    trained = TrainedModel.wrap(model.eval(), "test-representer-small-mlp")
    data = TrainingData(x, y, 4, "test-representer-small-blobs")
    x_test = torch.randn(4, 8, generator=g)[torch.arange(12) % 4] * 1.5 + torch.randn(12, 8, generator=g)
    return trained, data, x_test


def test_l2_with_model_targets_decomposes_too(small):
    trained, data, x_test = small
    m = create("representer", trained, data, targets="model", lmbda=0.01).fit()
    logits = features(trained.model, x_test) @ m.layer.T
    target = logits.argmax(1)
    assert torch.allclose(m.scores(x_test, target).double().sum(1), logits[torch.arange(len(x_test)), target],
                          rtol=1e-4, atol=1e-6)
    assert m.info["relative_residual"] <= 1e-6


def test_lje_terms_match_a_direct_computation(small):
    """Every term (1/n)[w*_c·f̃' − (H⁻¹∇_W ℓ_i(W*))_c·f̃'] and their sum, the logits of W* − H⁻¹∇L(W*)."""
    trained, data, x_test = small
    lr, damping = 0.5, 1e-3
    m = create("representer-lje", trained, data, lr=lr, damping=damping).fit()
    model = trained.model
    f, ft = features(model, data.x), features(model, x_test)
    n, d = f.shape
    head = torch.cat([model.head.weight, model.head.bias[:, None]], 1).detach().double()

    def loss(w, rows=slice(None)):
        return F.cross_entropy(f[rows] @ w.T, data.y[rows])

    w_hat = head.clone().requires_grad_(True)
    (g_hat,) = torch.autograd.grad(loss(w_hat), w_hat)
    w_star = head + lr * g_hat                                           # one step of gradient ascent
    hess = torch.autograd.functional.hessian(loss, w_star).reshape(4 * d, 4 * d)
    hess = hess + damping * hess.trace() / (4 * d) * torch.eye(4 * d, dtype=torch.float64)
    per_sample = []
    for i in range(n):
        w = w_star.clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(loss(w, slice(i, i + 1)), w)
        per_sample.append(gi.reshape(-1))
    steps = torch.linalg.solve(hess, torch.stack(per_sample, 1)).T.reshape(n, 4, d)   # H⁻¹ ∇_W ℓ_i(W*)
    w_lje = w_star - steps.mean(0)
    assert torch.allclose(m.layer, w_lje, rtol=1e-6, atol=1e-8)
    rows = torch.arange(len(x_test))
    for c in range(4):
        target = torch.full((len(x_test),), c)
        direct = ((ft @ w_star[c])[:, None] - torch.einsum("ia,ta->ti", steps[:, c, :], ft)) / n
        s = m.scores(x_test, target).double()
        assert torch.allclose(s, direct, rtol=1e-4, atol=1e-7)
        assert torch.allclose(s.sum(1), (ft @ w_lje.T)[rows, target], rtol=1e-4, atol=1e-6)
    own = m.self_scores()
    direct_self = torch.stack([(f[i] @ w_star[data.y[i]] - steps[i, data.y[i]] @ f[i]) / n for i in range(n)])
    assert torch.allclose(own.double(), direct_self, rtol=1e-4, atol=1e-7)


def test_lje_on_the_default_cnn(mnist, mnist_trained):
    m = create("representer-lje", mnist_trained, TrainingData.of(mnist)).fit()
    x = mnist.x_test[:30]
    pred = mnist_trained.model(x).argmax(1)
    s = m.scores(x)
    assert s.shape == (30, len(mnist.y_train))
    expanded = features(mnist_trained.model, x) @ m.layer.T
    assert torch.allclose(s.double().sum(1), expanded[torch.arange(30), pred], rtol=1e-4, atol=1e-4)
    # Derived from the weights, whatever they are: W_LJE is one Newton step of the damped loss from
    # W* = Ŵ + η∇L(Ŵ), so (H + δI)(W_LJE − W*) = −∇L(W*), with H recomputed here from the training features
    # (the small problem above checks lje_hessian against autograd). A backward-stable Cholesky solve leaves a
    # residual of order K·d'·ε·‖H + δI‖·‖W_LJE − W*‖ (K·d' = 1,290: 2.9e-13 of that product); measured 2.5e-16.
    f = penultimate_with_bias(mnist_trained.model, mnist.x_train)
    onehot = F.one_hot(mnist.y_train, 10).double()

    def grad(w):
        return ((f @ w.T).softmax(1) - onehot).T @ f / len(f)

    w_hat = head_matrix(mnist_trained.model)
    w_star = w_hat + m.hparams["lr"] * grad(w_hat)
    hess = lje_hessian(f, (f @ w_star.T).softmax(1))
    hess.diagonal().add_(m.hparams["damping"] * float(hess.diagonal().sum()) / len(hess))
    step = (m.layer - w_star).reshape(-1)
    residual = float((hess @ step + grad(w_star).reshape(-1)).norm())
    assert residual <= len(hess) * torch.finfo(torch.float64).eps * float(hess.norm()) * float(step.norm())
    # How often W_LJE predicts the model's class is not derived: the step is long (‖W_LJE − Ŵ‖ = 1.3 to 7.7 ‖Ŵ‖
    # on the models below) and moves the points near a class boundary differently on every set of weights, and
    # other CPUs round differently, so train other weights. Measured on the test split, seeds 0-4 trained at one
    # torch thread with kernels AVX512 (an AMD EPYC's own) / AVX2 / DEFAULT (ATEN_CPU_CAPABILITY): seed 0
    # 0.970/0.908/0.932, 1 0.985/0.969/0.984, 2 0.976/0.995/0.987, 3 0.842/0.958/0.920, 4 0.925/0.982/0.994;
    # seed 0 at two threads (as the suite trains it): AVX512 0.880 (the former bound 0.9 failed there), DEFAULT
    # 0.947. Worst 0.842 (seed 3, AVX512, the longest step); 0.75 is 0.09 below it, about twice the spread's
    # standard deviation (0.04). The residual above pins the step itself, so this only has to catch a layer that
    # no longer predicts like the model (chance 0.1).
    assert m.info["lje_agreement_test"] >= 0.75
    # the sum above pins the sign (a flipped sign would sum to minus the logits), and tests/test_contract.py
    # checks it by retraining. How often the strongest proponent carries the predicted label depends on
    # the model (0.84 on the former 97% default, 0.27 on the 98% one, chance 0.1): no threshold here.


@pytest.mark.parametrize("name,bad", [("representer", {"lmbda": 0}), ("representer", {"lmbda": -1e-3}),
                                      ("representer", {"targets": "soft"}), ("representer-lje", {"damping": 0}),
                                      ("representer-lje", {"lr": -0.1})])
def test_bad_parameters_are_refused_by_the_schema(name, bad):
    with pytest.raises(AttrexError):
        get_method(name).check_params(bad)
