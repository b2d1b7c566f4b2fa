"""Influence functions, RelatIF, group influence and the inverse-Hessian solvers under them.

Every check compares with an independent computation: leave-one-out and leave-group-out
retraining to high precision (L-BFGS, gradient norm checked), ``torch.linalg.solve`` on a
matrix of known spectrum, ``torch.autograd.functional.hessian`` and per-sample
``torch.autograd.grad`` loops.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from core.engine.grads import select_params
from core.engine.ihvp import (
    CholeskyInverse,
    MeanLoss,
    SpectralInverse,
    arnoldi,
    conjugate_gradient,
    lissa,
)
from core.errors import AttrexError
from core.methods.base import TrainingData, create
from core.methods.influence import Influence, group_influence
from core.models import TrainedModel
from core.models.architectures import MLP, LogisticRegression

LAM = 1e-2  # L2 weight of the convex problems, and the damping that makes H + λI their exact Hessian


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


# ----- helpers -----------------------------------------------------------------------------------
def _fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lam: float, n_norm: int | None = None,
         tol: float = 1e-9) -> float:
    """Minimise ``Σ_i ℓ_i / n_norm + (λ/2)‖θ‖²`` (``n_norm`` = ``len(x)`` by default) by L-BFGS; the gradient norm."""
    params = list(model.parameters())
    opt = torch.optim.LBFGS(params, lr=1, max_iter=300, tolerance_grad=tol / 10, tolerance_change=1e-15,
                            history_size=30, line_search_fn="strong_wolfe")
    n = n_norm or len(x)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y, reduction="sum") / n + lam / 2 * sum((p ** 2).sum() for p in params)
        loss.backward()
        return loss

    for _ in range(10):
        opt.step(closure)
        closure()
        norm = float(torch.cat([p.grad.reshape(-1) for p in params]).norm())
        if norm < tol:
            break
    return norm


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def _test_losses(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


def _flat_loss(model: torch.nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor, lam: float = 0.0):
    """The mean loss (+ (λ/2)‖θ‖²) as a function of the flat parameters ``names``, for autograd.functional."""
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    frozen = {k: v.detach() for k, v in params.items() if k not in names}

    def f(theta):
        chosen = {n: t.view(s) for n, t, s in zip(names, theta.split(sizes), shapes, strict=True)}
        out = functional_call(model, (chosen, frozen), (x,))
        return F.cross_entropy(out, y) + lam / 2 * theta.pow(2).sum()

    theta = torch.cat([params[n].detach().reshape(-1) for n in names])
    return f, theta


def _per_sample_grads(model, names, x, y) -> torch.Tensor:
    params = dict(model.named_parameters())
    rows = []
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i: i + 1]), y[i: i + 1])
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, [params[n] for n in names])]))
    return torch.stack(rows)


@pytest.fixture(scope="module")
def logreg(mnist):
    """L2-regularised multinomial logistic regression on 300 MNIST digits downsampled to 7×7 (500 parameters)."""
    n = 300
    x = F.avg_pool2d(mnist.x_train[:n], 4).double()
    y = mnist.y_train[:n]
    x_test = F.avg_pool2d(mnist.x_test[:10], 4).double()
    y_test = mnist.y_test[:10]
    torch.manual_seed(0)
    model = LogisticRegression(49, 10).double()
    norm = _fit(model, x, y, LAM)
    assert norm < 1e-7, f"L-BFGS stopped at gradient norm {norm:.2g}"
    trained = TrainedModel.wrap(model, "test-influence-logreg-7x7")
    data = TrainingData(x, y, 10, "test-influence-mnist-7x7-300")
    exact = create("influence", trained, data, solver="exact", damping=LAM)
    return {"model": model, "x": x, "y": y, "x_test": x_test, "y_test": y_test, "trained": trained, "data": data,
            "exact": exact, "scores": exact.scores(x_test, y_test)}


# ----- the solvers on a matrix of known spectrum -----------------------------------------------------
def test_solvers_recover_the_inverse_of_a_known_matrix():
    g = torch.Generator().manual_seed(0)
    d = 40
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    mu = torch.logspace(-2, 0, d, dtype=torch.float64)          # eigenvalues 0.01 .. 1
    h = q @ torch.diag(mu) @ q.T
    b = torch.randn(d, 3, generator=g, dtype=torch.float64)
    lam = 0.05
    ref = torch.linalg.solve(h + lam * torch.eye(d, dtype=torch.float64), b)

    def hvp(v):
        return h @ v

    torch.testing.assert_close(CholeskyInverse.from_hessian(h, lam)(b), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(SpectralInverse.from_hessian(h, lam)(b), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(CholeskyInverse.from_hessian(h, lam)(b[:, 0]), ref[:, 0], rtol=1e-10, atol=1e-12)

    x, info = conjugate_gradient(hvp, b, lam, max_iter=200, tol=1e-11)
    torch.testing.assert_close(x, ref, rtol=1e-8, atol=1e-10)
    assert info.converged == 3 and float(info.relative_residual.max()) <= 1e-11
    # stopped early, CG reports the residual it really left
    x3, info3 = conjugate_gradient(hvp, b, lam, max_iter=3, tol=1e-12)
    true_res = (b - h @ x3 - lam * x3).norm(dim=0) / b.norm(dim=0)
    assert info3.iterations == 3 and info3.converged == 0
    torch.testing.assert_close(info3.relative_residual, true_res)
    assert float(true_res.min()) > 1e-3

    # full-batch LiSSA contracts by 1 − (μ_min + λ)/s per step: 600 steps at s = 1.3 leave e^-27
    x, linfo = lissa(lambda v, step: h @ v, b, lam, scale=1.3, depth=600)
    torch.testing.assert_close(x, ref, rtol=1e-8, atol=1e-10)
    assert linfo.last_relative_change < 1e-10
    # a scale below half the largest eigenvalue of H + λI makes the series blow up
    with pytest.raises(AttrexError, match="diverged"):
        lissa(lambda v, step: h @ v, b, lam, scale=0.3, depth=400)

    vals, vecs, ainfo = arnoldi(hvp, d, d, 5, torch.Generator().manual_seed(1), torch.float64)
    torch.testing.assert_close(vals, mu.flip(0)[:5], rtol=1e-9, atol=1e-12)
    overlap = (vecs.T @ q[:, -5:].flip(1)).abs()                 # eigenvectors up to sign
    torch.testing.assert_close(overlap, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-7)
    assert ainfo.max_ritz_residual < 1e-8
    # all D eigenpairs: Arnoldi's spectral inverse is the exact inverse
    vals, vecs, _ = arnoldi(hvp, d, d, d, torch.Generator().manual_seed(1), torch.float64)
    torch.testing.assert_close(SpectralInverse(vals, vecs, lam)(b), ref, rtol=1e-8, atol=1e-10)
    # an indefinite H + λI: the exact solver refuses it and names the smallest eigenvalue
    with pytest.raises(AttrexError, match="not positive definite"):
        CholeskyInverse.from_hessian(h - 0.5 * torch.eye(d, dtype=torch.float64), 0.1)


# ----- the Hessian, HVPs and gradients of the mean loss ----------------------------------------------
def test_mean_loss_matches_autograd_through_a_network_and_on_the_head():
    torch.manual_seed(0)
    model = MLP(16, 3, hidden=(6, 5)).double().eval()
    x = torch.randn(40, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    for subset in ("all", "last"):
        names = select_params(model, subset)
        loss = MeanLoss(model, names, x, y, batch=16)                # several batches
        assert loss.on_features == (subset == "last") and loss.closed_form == (subset == "last")
        f, theta = _flat_loss(model, names, x, y)
        ref_h = torch.autograd.functional.hessian(f, theta)
        torch.testing.assert_close(loss.hessian(), ref_h, rtol=1e-9, atol=1e-12)
        v = torch.randn(loss.dim, 3, dtype=torch.float64)
        idx = torch.tensor([3, 7, 8, 20])
        f_sub, _ = _flat_loss(model, names, x[idx], y[idx])
        torch.testing.assert_close(loss.hvp(v, idx), torch.autograd.functional.hessian(f_sub, theta) @ v,
                                   rtol=1e-9, atol=1e-12)
        ref_g = _per_sample_grads(model, names, x, y)
        torch.testing.assert_close(loss.grads(), ref_g, rtol=1e-9, atol=1e-12)
        # the method's gradients: vmap on the features (head), factored gradient blocks re-ordered (all)
        method = create("influence", TrainedModel.wrap(model, f"test-influence-mlp-{subset}"),
                        TrainingData(x, y, 3, "test-influence-mlp-data"), subset=subset)
        torch.testing.assert_close(method.gradients(x, y), ref_g, rtol=1e-9, atol=1e-12)


# ----- Koh & Liang: influence predicts leave-one-out retraining --------------------------------------
@pytest.mark.slow
def test_exact_influence_predicts_leave_one_out_retraining(logreg):
    """Removing z_i is up-weighting it by −1/n: the test loss changes by about +s(z_i, z') / n.

    Retraining minimises ``(1/n) Σ_{j≠i} ℓ_j + (λ/2)‖θ‖²`` from the optimum to gradient norm
    < 1e-7 (parameter error < 1e-5 at curvature ≥ λ, far below the effects measured).
    Measured: Pearson 0.9995 over the 25 most influential points of a test digit, regression
    slope actual/predicted 1.11.
    """
    model, x, y, n = logreg["model"], logreg["x"], logreg["y"], len(logreg["y"])
    j = 0
    s = logreg["scores"][j]
    xt, yt = logreg["x_test"][j: j + 1], logreg["y_test"][j: j + 1]
    base = _test_losses(model, xt, yt)[0]
    predicted, actual = [], []
    for i in s.abs().argsort(descending=True)[:25].tolist():
        keep = torch.ones(n, dtype=torch.bool)
        keep[i] = False
        retrained = copy.deepcopy(model)
        norm = _fit(retrained, x[keep], y[keep], LAM, n_norm=n)
        assert norm < 1e-7
        actual.append(float(_test_losses(retrained, xt, yt)[0] - base))
        predicted.append(float(s[i]) / n)
    predicted, actual = torch.tensor(predicted), torch.tensor(actual)
    assert _pearson(predicted, actual) >= 0.95
    slope = float(predicted @ actual / (predicted @ predicted))
    assert 0.8 < slope < 1.25, slope
    # the sign convention: the strongest proponent's removal raises the test loss
    top = int(s.argmax())
    keep = torch.arange(n) != top
    retrained = copy.deepcopy(model)
    _fit(retrained, x[keep], y[keep], LAM, n_norm=n)
    assert float(_test_losses(retrained, xt, yt)[0]) > float(base)


def test_exact_influence_equals_dattris_explicit_inverse_hessian(logreg):
    """dattri's ``IFAttributorExplicit`` (its own Hessian by ``torch.func``, its own solve) on the same model,
    data and damping: the same definition and sign, so the same scores, up to dattri's float32 output
    (it accumulates into a float32 tensor whatever the model's dtype). Largest difference over the
    largest score, measured: 3.9e-8 (scores), 3.1e-8 (self-influence); tolerance 1e-6, float32's
    epsilon (1.2e-7) times a few accumulations."""
    pytest.importorskip("dattri")
    from dattri.algorithm.influence_function import IFAttributorExplicit
    from dattri.task import AttributionTask

    model, x, y = logreg["model"], logreg["x"], logreg["y"]

    def loss(params, data):
        xi, yi = data
        xi, yi = (xi, yi) if xi.dim() == x.dim() else (xi[None], yi[None])  # vmapped: one sample, no batch axis
        return F.cross_entropy(functional_call(model, params, (xi,)), yi)

    def loader(a, b, batch):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(a, b), batch_size=batch, shuffle=False)

    peer = IFAttributorExplicit(AttributionTask(loss, model, model.state_dict()), layer_name=["head.weight", "head.bias"],
                                regularization=LAM)
    peer.cache(loader(x, y, len(x)))  # one batch: its Hessian is the mean over the whole set, as ours
    theirs = peer.attribute(loader(x, y, len(x)), loader(logreg["x_test"], logreg["y_test"], 64)).T  # one Hessian
    ours = logreg["scores"]
    assert float((ours - theirs).abs().max() / ours.abs().max()) < 1e-6
    # dattri 0.3.0 adds each batch's self-influence to a vector of the whole set's length: one batch only
    their_self = peer.self_attribute(loader(x, y, len(x)))
    ours_self = logreg["exact"].self_scores()
    assert float((ours_self - their_self).abs().max() / ours_self.abs().max()) < 1e-6


def test_iterative_solvers_agree_with_exact(logreg):
    """CG, LiSSA and Arnoldi against the exact inverse on the 500-parameter problem (10 test digits).

    Measured Pearson with exact: CG 1.0000, LiSSA (depth 400, minibatches of 100) 0.9992,
    Arnoldi (200 of 500 eigenpairs) 0.9982; solved per query over "many" parameters: the same.
    """
    ref = logreg["scores"]
    common = {"damping": LAM}
    settings = {
        "cg": {"cg_iters": 200, "cg_tol": 1e-8},
        "lissa": {"lissa_depth": 400, "lissa_batch": 100},
        "arnoldi": {"arnoldi_rank": 200, "arnoldi_iters": 300},
    }
    for solver, kw in settings.items():
        method = create("influence", logreg["trained"], logreg["data"], solver=solver, **common, **kw)
        s = method.scores(logreg["x_test"], logreg["y_test"])
        r = _pearson(s, ref)
        assert r >= {"cg": 0.9999, "lissa": 0.99, "arnoldi": 0.99}[solver], (solver, r)
        if solver != "lissa":  # (LiSSA's self-influence runs the series on all 500 unit vectors: see the RelatIF test)
            assert _pearson(method.self_scores(), logreg["exact"].self_scores()) >= 0.99
    info = create("influence", logreg["trained"], logreg["data"], solver="cg", **common, **settings["cg"]).fit().info
    assert info["cg"]["converged"] == len(logreg["y"]) and info["cg"]["max_relative_residual"] <= 1e-8


def test_per_query_solvers_over_many_parameters(logreg, monkeypatch):
    """Above ``dense_max`` parameters cg and lissa solve for the test gradients at query time."""
    monkeypatch.setattr(Influence, "dense_max", 100)
    ref = logreg["scores"]
    for solver, kw in {"cg": {"cg_iters": 200, "cg_tol": 1e-8}, "lissa": {"lissa_depth": 400, "lissa_batch": 100}}.items():
        method = create("influence", logreg["trained"], logreg["data"], solver=solver, damping=LAM, **kw)
        assert method.mode == "per-query"
        r = _pearson(method.scores(logreg["x_test"], logreg["y_test"]), ref)
        assert r >= 0.99, (solver, r)
        with pytest.raises(AttrexError, match="one solve per training point"):
            method.self_scores()
    with pytest.raises(AttrexError, match="at most 100 parameters"):
        create("influence", logreg["trained"], logreg["data"], solver="exact")
    with pytest.raises(AttrexError, match="one solve per point"):
        create("relatif", logreg["trained"], logreg["data"], solver="cg")


@pytest.mark.slow
def test_all_parameters_of_a_network(logreg, monkeypatch):
    """Every parameter of a ReLU MLP (562), through the network's HVPs rather than the head's closed form.

    The MLP is trained part way (200 L-BFGS iterations): the Hessian has small negative
    eigenvalues (about −0.03), which the damping λ = 0.05 lifts, as the formula needs.
    """
    torch.manual_seed(1)
    model = MLP(49, 10, hidden=(8, 6)).double()
    x, y = logreg["x"], logreg["y"]
    params = list(model.parameters())
    opt = torch.optim.LBFGS(params, lr=1, max_iter=200, history_size=30, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y) + LAM / 2 * sum((p ** 2).sum() for p in params)
        loss.backward()
        return loss

    opt.step(closure)
    lam = 0.05
    trained = TrainedModel.wrap(model, "test-influence-mlp-49-8-6")
    xt, yt = logreg["x_test"][:4], logreg["y_test"][:4]
    exact = create("influence", trained, logreg["data"], solver="exact", subset="all", damping=lam)
    assert exact.dim == 49 * 8 + 8 + 8 * 6 + 6 + 6 * 10 + 10 and not exact.loss.on_features
    # independent: the Hessian of the mean loss by autograd, the gradients by a loop
    names = select_params(model, "all")
    f, theta = _flat_loss(model, names, x, y)
    h = torch.autograd.functional.hessian(f, theta)
    assert float(torch.linalg.eigvalsh(h)[0]) < 0 < float(torch.linalg.eigvalsh(h)[0]) + lam
    ref = _per_sample_grads(model, names, xt, yt) @ torch.linalg.solve(
        h + lam * torch.eye(len(theta), dtype=torch.float64), _per_sample_grads(model, names, x, y).T)
    torch.testing.assert_close(exact.scores(xt, yt), ref, rtol=1e-7, atol=1e-9)
    # Arnoldi against the top-40 eigenpairs (by |μ|) of the autograd Hessian, inverted on their span only
    arn = create("influence", trained, logreg["data"], solver="arnoldi", subset="all", damping=lam,
                 arnoldi_rank=40, arnoldi_iters=150)
    mu, q = torch.linalg.eigh(h)
    top = mu.abs().argsort(descending=True)[:40]
    proj_test = _per_sample_grads(model, names, xt, yt) @ q[:, top]
    proj_train = _per_sample_grads(model, names, x, y) @ q[:, top]
    ref_k = (proj_test / (mu[top] + lam)) @ proj_train.T
    r = _pearson(arn.scores(xt, yt), ref_k)
    assert r > 0.999, r
    ritz = torch.tensor(arn.info["arnoldi"]["top_eigenvalues"], dtype=torch.float64)
    torch.testing.assert_close(ritz, mu[top][:10], rtol=1e-6, atol=1e-9)
    with pytest.raises(AttrexError, match="not positive definite"):
        create("influence", trained, logreg["data"], solver="exact", subset="all", damping=0.0).fit()
    monkeypatch.setattr(Influence, "dense_max", 100)
    cg = create("influence", trained, logreg["data"], solver="cg", subset="all", damping=lam, cg_iters=500,
                cg_tol=1e-10)
    assert cg.mode == "per-query"
    torch.testing.assert_close(cg.scores(xt, yt), ref, rtol=1e-6, atol=1e-8)
    assert cg.info["last_solve"]["converged"] == 4


# ----- group influence: Basu et al.'s second order against retraining ---------------------------------
def _clustered_problem():
    """Three Gaussian classes in 5-d plus three clusters of near-duplicates (12%, 18%, 26% of n = 340)."""
    g = torch.Generator().manual_seed(0)
    d, k = 5, 3
    means = torch.zeros(k, d)
    means[0, 0], means[1, :2], means[2, :2] = 2.0, torch.tensor([-1.0, 1.7]), torch.tensor([-1.0, -1.7])

    def sample(per_class):
        y = torch.arange(k).repeat_interleave(per_class)
        return means[y] + torch.randn(len(y), d, generator=g), y

    xb, yb = sample(50)
    xs, ys, ids = [xb], [yb], [torch.full((len(yb),), -1)]
    for j, size in enumerate((40, 60, 90)):
        center = means[j] * 0.6 + 0.8 * torch.randn(d, generator=g)
        xs.append(center + 0.1 * torch.randn(size, d, generator=g))
        ys.append(torch.full((size,), j))
        ids.append(torch.full((size,), j))
    xt, yt = sample(10)
    return torch.cat(xs).double(), torch.cat(ys), torch.cat(ids), xt.double(), yt


def test_second_order_group_influence_beats_first_order_on_correlated_groups():
    """Removing a cluster of near-duplicates, retrained on ``mean_{rest} ℓ + (λ/2)‖θ‖²``.

    Measured over 3 groups × 30 test points: relative error ‖pred − actual‖/‖actual‖ first
    order 0.66, second order 0.33; Pearson 0.93 and 0.98.
    """
    x, y, ids, xt, yt = _clustered_problem()
    torch.manual_seed(0)
    model = LogisticRegression(5, 3).double()
    assert _fit(model, x, y, LAM) < 1e-7
    trained = TrainedModel.wrap(model, "test-influence-clusters")
    method = create("influence", trained, TrainingData(x, y, 3, "test-influence-clusters-data"), damping=LAM)
    first = group_influence(method, ids, xt, yt, order=1, l2_regularised=True)
    second = group_influence(method, ids, xt, yt, order=2, l2_regularised=True)
    base = _test_losses(model, xt, yt)
    actual = torch.zeros_like(first)
    for j in range(3):
        retrained = copy.deepcopy(model)
        assert _fit(retrained, x[ids != j], y[ids != j], LAM) < 1e-7
        actual[:, j] = _test_losses(retrained, xt, yt) - base
    err1 = float((first - actual).norm() / actual.norm())
    err2 = float((second - actual).norm() / actual.norm())
    assert err2 < 0.75 * err1, (err1, err2)
    assert _pearson(second, actual) > max(_pearson(first, actual), 0.95)

    # the formula itself, from explicit matrices: H and H_U of the L2-regularised per-sample losses
    names = select_params(model, "all")
    n = len(y)
    f, theta = _flat_loss(model, names, x, y, LAM)
    h = torch.autograd.functional.hessian(f, theta)
    g_test = _per_sample_grads(model, names, xt, yt)
    g_train = _per_sample_grads(model, names, x, y) + LAM * theta
    for j in range(3):
        u = (ids == j).nonzero().squeeze(1)
        p = len(u) / n
        f_u, _ = _flat_loss(model, names, x[u], y[u], LAM)
        h_u = len(u) * torch.autograd.functional.hessian(f_u, theta)
        v = torch.linalg.solve(h, g_train[u].sum(0))
        i2 = (1 - 2 * p) / ((1 - p) ** 2 * n) * v + torch.linalg.solve(h, h_u @ v) / ((1 - p) ** 2 * n ** 2)
        torch.testing.assert_close(second[:, j], g_test @ i2, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(first[:, j], g_test @ v / n, rtol=1e-7, atol=1e-10)
    # without the L2 share, first order is exactly the sum of the individual scores / n
    plain = group_influence(method, [torch.arange(5), torch.tensor([7, 100, 200])], xt, yt, order=1)
    s = method.scores(xt, yt)
    torch.testing.assert_close(plain, torch.stack([s[:, :5].sum(1), s[:, [7, 100, 200]].sum(1)], 1) / n)


# ----- RelatIF ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["exact", "arnoldi", "cg", "lissa"])
def test_relatif_is_influence_over_the_norm_of_the_inverse_hessian_gradient(solver):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=g)
    torch.manual_seed(0)
    model = LogisticRegression(3, 3).double()
    _fit(model, x, y, 0.1, tol=1e-3)  # not to the optimum: the formula does not need one
    trained, data = TrainedModel.wrap(model, "test-relatif-tiny"), TrainingData(x, y, 3, "test-relatif-tiny-data")
    lam = 0.05
    names = select_params(model, "all")
    f, theta = _flat_loss(model, names, x, y)
    h = torch.autograd.functional.hessian(f, theta) + lam * torch.eye(12, dtype=torch.float64)
    g_train = _per_sample_grads(model, names, x, y)
    ihvp = torch.linalg.solve(h, g_train.T).T                      # [n, D]
    xt, yt = x[:4] + 0.3, torch.tensor([0, 1, 2, 0])
    ref = _per_sample_grads(model, names, xt, yt) @ ihvp.T
    kw = {"exact": {}, "arnoldi": {"arnoldi_rank": 12, "arnoldi_iters": 12},
          "cg": {"cg_tol": 1e-12}, "lissa": {"lissa_depth": 3000, "lissa_batch": 0}}[solver]
    influence = create("influence", trained, data, solver=solver, damping=lam, **kw)
    relatif = create("relatif", trained, data, solver=solver, damping=lam, **kw)
    tol = {"rtol": 1e-6, "atol": 1e-8}
    torch.testing.assert_close(influence.scores(xt, yt), ref, **tol)
    torch.testing.assert_close(relatif.scores(xt, yt), ref / ihvp.norm(dim=1), **tol)
    self_ref = (g_train * ihvp).sum(1)
    torch.testing.assert_close(influence.self_scores(), self_ref, **tol)
    torch.testing.assert_close(relatif.self_scores(), self_ref / ihvp.norm(dim=1), **tol)


def test_hessian_over_a_subset_of_the_training_points():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(0)
    model = LogisticRegression(4, 3).double()
    _fit(model, x, y, 0.1, tol=1e-3)
    method = create("influence", TrainedModel.wrap(model, "test-influence-hsub"),
                    TrainingData(x, y, 3, "test-influence-hsub-data"), hessian_points=12, seed=5, damping=0.02)
    idx = method.hessian_indices()
    assert len(idx) == 12 and len(idx.unique()) == 12 and int(idx.max()) < 40
    names = select_params(model, "all")
    f, theta = _flat_loss(model, names, x[idx], y[idx])
    h = torch.autograd.functional.hessian(f, theta) + 0.02 * torch.eye(15, dtype=torch.float64)
    ref = _per_sample_grads(model, names, x[:3], y[:3]) @ torch.linalg.solve(h, _per_sample_grads(model, names, x, y).T)
    torch.testing.assert_close(method.scores(x[:3], y[:3]), ref, rtol=1e-7, atol=1e-10)
    assert method.info["hessian_points"] == 12


# ----- the default MNIST CNN ------------------------------------------------------------------------------
def test_influence_on_the_default_mnist_cnn(mnist, mnist_trained):
    method = create("influence", mnist_trained, TrainingData.of(mnist))
    assert method.hparams["solver"] == "exact" and method.hparams["subset"] == "last"
    s = method.scores(mnist.x_test[:8])
    assert s.shape == (8, len(mnist.y_train)) and torch.isfinite(s).all()
    self_s = method.self_scores()
    assert self_s.shape == (len(mnist.y_train),) and torch.isfinite(self_s).all()
    assert float(self_s.min()) >= -1e-6 * float(self_s.max())    # g (H + λI)⁻¹ g ≥ 0
    # a training point scored as a query with its own label is its self-influence
    x5, y5 = mnist.x_train[:5], mnist.y_train[:5]
    torch.testing.assert_close(method.scores(x5, y5)[torch.arange(5), torch.arange(5)], self_s[:5],
                               rtol=1e-4, atol=1e-6)
    assert method.info["parameters"] == 1290 and method.info["max_eigenvalue"] > 0


# ----- bad input -----------------------------------------------------------------------------------------
def test_bad_parameters_raise_clear_errors(logreg):
    trained, data = logreg["trained"], logreg["data"]
    with pytest.raises(AttrexError, match="parameter 'solver' must be one of exact, cg, lissa, arnoldi; got 'newton'"):
        create("influence", trained, data, solver="newton")
    with pytest.raises(AttrexError, match=r"parameter 'damping' must lie in \[0, .*got -0.1"):
        create("influence", trained, data, damping=-0.1)
    with pytest.raises(AttrexError, match="arnoldi_rank .* cannot exceed arnoldi_iters"):
        create("relatif", trained, data, solver="arnoldi", arnoldi_rank=50, arnoldi_iters=20)
    with pytest.raises(AttrexError, match="selects no parameter"):
        create("influence", trained, data, subset="nothing.here")
    with pytest.raises(AttrexError, match="lie in"):
        create("influence", trained, data, cg_tol=0)
    method = logreg["exact"]
    xt = logreg["x_test"][:2]
    with pytest.raises(AttrexError, match="order must be 1 or 2"):
        group_influence(method, [torch.arange(3)], xt, order=3)
    with pytest.raises(AttrexError, match="group 1 is empty"):
        group_influence(method, [torch.arange(3), torch.tensor([], dtype=torch.long)], xt)
    with pytest.raises(AttrexError, match="outside"):
        group_influence(method, [torch.tensor([0, 5000])], xt)
    with pytest.raises(AttrexError, match="one integer group id per training point"):
        group_influence(method, torch.tensor([0, 1, 2]), xt)
