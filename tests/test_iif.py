"""Integrated Influence against independent computations.

- Lemma 2.5: with K = 1, the dense path and the baseline ȳ_i = f(x_i; θ*), IIF is the influence
  function; checked against IF computed here from per-sample gradients and an autograd Hessian
  (exact for logistic regression, = the Gauss-Newton matrix) or the empirical Fisher.
- Completeness: on a small convex problem with path models close to their optima and the exact
  Hessian, Σ_i I(i) matches L(z'; θ*) − L(z'; θ') up to the Euler error of Eq. 10 (measured:
  relative gap 0.09-0.24 with K = 8, 0.05-0.14 with K = 16); with the paper's one-epoch path and
  sparse targets it does not (relative gap ~0.7-1.0), which the method reports.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.cache import Cache
from core.errors import AttrexError
from core.methods import TrainingData, create
from core.models import TrainedModel
from core.models.architectures import LogisticRegression

METHOD = "integrated-influence"
EXACT = {"projection": "none", "damping": 1e-3}  # relative damping: λ = 1e-3 · tr(H)/D


# ----------------------------------------------------------------------------- helpers

def convex_problem(n: int = 300, d: int = 5, k: int = 3, spread: float = 0.8, seed: int = 0):
    """Multinomial logistic regression (no weight decay) fitted to convergence on overlapping blobs."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * spread
    y = torch.arange(n) % k
    x = centers[y] + torch.randn(n, d, generator=g)
    x_test = centers[torch.arange(6) % k] + torch.randn(6, d, generator=g)
    torch.manual_seed(seed)
    model = LogisticRegression(d, k)
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=50)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    model.eval()
    return TrainedModel.wrap(model, f"iif-test-logreg-{seed}-{spread}"), TrainingData(x, y, k, f"iif-blobs-{seed}-{spread}"), x_test


def flat_params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()]).double()


def loss_at(model, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the logistic regression with flat parameters ``theta`` (weight rows, then bias)."""
    k, d = model.head.weight.shape
    w, b = theta[: k * d].view(k, d), theta[k * d:]
    return F.cross_entropy(x.double() @ w.T + b, y)


def per_sample_grads(model, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """∇θ ℓ(x_i, y_i) ``[N, D]`` one sample at a time, float64."""
    theta = flat_params(model)
    rows = []
    for xi, yi in zip(x, y, strict=True):
        t = theta.clone().requires_grad_(True)
        rows.append(torch.autograd.grad(loss_at(model, t, xi[None], yi[None]), t)[0].numpy())
    return np.stack(rows)


def influence_function(model, data, x_test, target, curvature: str, damping: float = 1e-3) -> np.ndarray:
    """Proponent score (1/n) ∇ℓ(z')ᵀ (H + λI)⁻¹ ∇ℓ(z_i) ``[m, n]``: minus Koh & Liang's I_up,loss over n."""
    g = per_sample_grads(model, data.x, data.y)
    G = per_sample_grads(model, x_test, target)
    n = len(data)
    if curvature == "ggn":  # for logistic regression the Gauss-Newton matrix is the exact Hessian
        theta = flat_params(model)
        H = torch.autograd.functional.hessian(lambda t: loss_at(model, t, data.x, data.y), theta).numpy()
    else:
        H = g.T @ g / n
    lam = damping * np.trace(H) / len(H)
    return G @ np.linalg.solve(H + lam * np.eye(len(H)), g.T) / n


def probs(model, x):
    with torch.no_grad():
        return model(x).double().softmax(-1)


# ----------------------------------------------------------------------------- Lemma 2.5
@pytest.mark.parametrize("curvature", ["ggn", "fisher"])
def test_k1_with_the_model_baseline_is_the_influence_function(curvature, tmp_path, one_thread):
    trained, data, x_test = convex_problem()
    method = create(METHOD, trained, data, cache=Cache(tmp_path), steps=1, baseline="model", path="dense",
                    curvature=curvature, **EXACT)
    target = method.prepare_inputs(x_test)[1]
    S = method.scores(x_test, target).double().numpy()
    ref = influence_function(trained.model, data, x_test, target, curvature)
    assert S.shape == (len(x_test), len(data))
    err = np.abs(S - ref).max() / np.abs(ref).max()
    print(f"Lemma 2.5 ({curvature}): max |IIF − IF| / max |IF| = {err:.1e}")
    assert err < 1e-4, err
    # the paper's sparse path changes the baseline target to p*_y e_y, whose gradient is not zero: the
    # K = 1 result is then the influence function weighted by 1 − p*_{i,y_i}
    sparse = create(METHOD, trained, data, cache=Cache(tmp_path), steps=1, baseline="model", path="sparse",
                    curvature=curvature, **EXACT)
    weight = 1 - probs(trained.model, data.x)[torch.arange(len(data)), data.y].numpy()
    S_sparse = sparse.scores(x_test, target).double().numpy()
    assert np.abs(S_sparse - ref * weight).max() < 1e-4 * np.abs(ref).max()
    assert np.abs(S_sparse - ref).max() > 0.1 * np.abs(ref).max()


def test_self_influence_against_an_independent_computation(tmp_path, one_thread):
    trained, data, _ = convex_problem()
    model, n = trained.model, len(data)
    g = per_sample_grads(model, data.x, data.y)
    H = g.T @ g / n
    Hinv_g = np.linalg.solve(H + 1e-3 * np.trace(H) / len(H) * np.eye(len(H)), g.T).T
    quad = (g * Hinv_g).sum(1) / n                       # (1/n) g_iᵀ H⁻¹ g_i
    # the influence function's baseline: IF self-influence
    m = create(METHOD, trained, data, cache=Cache(tmp_path), baseline="model", path="dense", **EXACT)
    np.testing.assert_allclose(m.self_scores().double().numpy(), quad, rtol=0, atol=1e-4 * quad.max())
    # §3.3: per-sample baseline θ'_i = θ* + η ∇ℓ(z_i), sparse path: (1/n)(1 − ȳ_i[y_i]) g_iᵀ H⁻¹ g_i
    eta = 0.05
    m = create(METHOD, trained, data, cache=Cache(tmp_path), unlearn_lr=eta, **EXACT)
    theta = flat_params(model)
    k, d = model.head.weight.shape
    ybar = np.array([
        torch.softmax(data.x[i].double() @ (theta + eta * torch.from_numpy(g[i]))[: k * d].view(k, d).T
                      + (theta + eta * torch.from_numpy(g[i]))[k * d:], -1)[data.y[i]].item()
        for i in range(n)])
    ref = (1 - ybar) * quad
    ss = m.self_scores().double().numpy()
    np.testing.assert_allclose(ss, ref, rtol=0, atol=1e-4 * ref.max())
    assert (ss >= 0).all() and ss.shape == (n,)


# ----------------------------------------------------------------------------- completeness
def test_completeness_on_a_convex_problem(tmp_path, one_thread):
    """Σ_i I(i) ≈ L(z'; θ*) − L(z'; θ') when the path models are near their optima (dense path, exact Hessian)."""
    trained, data, x_test = convex_problem()
    n = len(data)
    near_exact = dict(path="dense", curvature="ggn", path_epochs=100, batch_size=n, epoch_samples=0, lr=1.0,
                      unlearn_lr=0.05, **EXACT)
    k8 = create(METHOD, trained, data, cache=Cache(tmp_path), steps=8, **near_exact)
    c8 = k8.completeness(x_test[:2])
    assert (c8["delta_loss"] < -1).all()                  # the unlearning raised the test loss
    assert (c8["sum_influence"] < 0).all()                # and the attributions say so
    assert (c8["relative_gap"] < 0.35).all(), c8["relative_gap"]
    # the Euler sum of Eq. 10 converges as K grows
    k16 = create(METHOD, trained, data, cache=Cache(tmp_path), steps=16, **near_exact)
    c16 = k16.completeness(x_test[:1])
    assert c16["relative_gap"][0] < c8["relative_gap"][0]
    # scores() and completeness() share the run; the proponent score is −I(i)
    S = k8.scores(x_test[:1])
    assert abs(float(S.double().sum()) + float(c8["sum_influence"][0])) < 1e-4 * abs(float(c8["sum_influence"][0]))
    # the paper's defaults (sparse targets, one epoch, empirical Fisher): finite, reported, far from complete
    default = create(METHOD, trained, data, cache=Cache(tmp_path), unlearn_lr=0.05, **EXACT)
    cd = default.completeness(x_test[:2])
    assert all(torch.isfinite(v).all() for v in cd.values())
    assert default.info["completeness"][-1]["gap"] == pytest.approx(float(cd["gap"][-1]))
    print(f"completeness relative gap: K=8 {c8['relative_gap'].tolist()}, K=16 {c16['relative_gap'].tolist()}, "
          f"defaults {cd['relative_gap'].tolist()}")


# ----------------------------------------------------------------------------- behaviour
def test_modes_sign_and_bad_parameters(tmp_path, mnist_trained, mnist, one_thread):
    trained, data, x_test = convex_problem(seed=1)
    cache = Cache(tmp_path)
    pro = create(METHOD, trained, data, cache=cache, unlearn_lr=0.05, **EXACT)
    opp = create(METHOD, trained, data, cache=cache, unlearn_lr=0.05, mode="opponent", **EXACT)
    both = create(METHOD, trained, data, cache=cache, unlearn_lr=0.05, mode="both", **EXACT)
    Sp, So, Sb = pro.scores(x_test[:3]), opp.scores(x_test[:3]), both.scores(x_test[:3])
    assert Sp.shape == (3, len(data)) and torch.isfinite(Sp).all() and pro.scores(x_test[0]).shape == (1, len(data))
    torch.testing.assert_close(Sb, Sp.clamp_min(0) + So.clamp_max(0))
    # proponent baseline raises the test loss, opponent baseline lowers it
    assert (pro.completeness(x_test[:3])["delta_loss"] < 0).all()
    assert (opp.completeness(x_test[:3])["delta_loss"] > 0).all()
    # a poorly fit training point queried with its own label is one of its own strongest proponents
    q = 1 - probs(trained.model, data.x)[torch.arange(len(data)), data.y]
    ids = q.topk(4).indices
    own = pro.scores(data.x[ids], data.y[ids])
    mine = own[torch.arange(4), ids]
    assert (mine > 0).all() and ((own > mine[:, None]).sum(1) < 3).all()
    top = pro.top_k(x_test[:2], k=3)
    assert (top.proponent_scores > 0).all() and (top.opponent_scores < 0).all()

    for bad in ({"mode": "self"}, {"steps": 0}, {"dim": 2}, {"damping": -1.0}, {"baseline": "zero"},
                {"unknown": 1}, {"subset": "nothing"}):
        with pytest.raises(AttrexError):
            create(METHOD, trained, data, cache=cache, **bad)
    with pytest.raises(AttrexError, match="4096"):
        create(METHOD, mnist_trained, TrainingData.of(mnist), cache=cache, subset="all", projection="none")
    with pytest.raises(AttrexError):
        pro.completeness(x_test[:1], mode="both")
    with pytest.raises(AttrexError):
        pro.scores(torch.zeros(2, 7))


def test_iif_fits_and_queries_the_default_mnist_cnn(mnist_trained, mnist, tmp_path, one_thread):
    """Default parameters (head subset, P = 256, K = 3) on the default CNN; margin vs the paper's CE unlearning."""
    method = create(METHOD, mnist_trained, TrainingData.of(mnist), cache=Cache(tmp_path))
    t0 = time.perf_counter()
    method.fit()
    fit_s = time.perf_counter() - t0
    x = mnist.x_test[:6]
    t0 = time.perf_counter()
    top = method.top_k(x, k=5)
    query_s = (time.perf_counter() - t0) / len(x)
    same = (mnist.y_train[top.proponents[:, 0]] == top.targets).float().mean().item()
    # measured 1.0 (6 of 6) on every model tried: seeds 0-4 under ATEN_CPU_CAPABILITY=avx512 (native), avx2 and
    # default at one torch thread (15 models); 0.8 allows one miss of the six
    assert same >= 0.8, same
    comp = method.completeness(x)  # reuses the runs of top_k
    assert all(torch.isfinite(v).all() for v in comp.values())
    # margin unlearning lowers every explained loss, confident points included: measured -0.22 to -2.83 over
    # seeds 0-4 at one torch thread and 0-2 at two (48 points; a fixed -0.5 failed at seed 2, two threads)
    assert (comp["delta_loss"] < 0).all()
    ss = method.self_scores()
    assert ss.shape == (len(mnist.y_train),) and torch.isfinite(ss).all()
    # the paper's CE unlearning barely moves a confidently classified point (its loss gradient vanishes)
    confident = int(comp["loss_model"].argmin())
    ce = create(METHOD, mnist_trained, TrainingData.of(mnist), cache=Cache(tmp_path), unlearn_loss="ce")
    ce_delta = float(ce.completeness(x[confident: confident + 1])["delta_loss"][0])
    assert abs(ce_delta) < 1e-2  # measured 0.0 on all 8 models above
    assert abs(float(comp["delta_loss"][confident])) > 10 * abs(ce_delta)
    print(f"IIF on the MNIST CNN: fit {fit_s:.1f} s, {query_s:.2f} s per query, top-1 same class {same:.2f}, "
          f"relative completeness gap {comp['relative_gap'].numpy().round(3).tolist()}")
    assert fit_s < 60 and query_s < 20


def test_a_subset_beyond_the_head_runs_the_body(tmp_path, one_thread):
    """A non-head subset trains and differentiates the whole network (small MLP to keep it quick)."""
    from core.models.architectures import MLP

    g = torch.Generator().manual_seed(3)
    x = torch.randn(120, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    torch.manual_seed(3)
    model = MLP(6, 3, hidden=(8, 8))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    trained = TrainedModel.wrap(model.eval(), "iif-mlp")
    data = TrainingData(x, y, 3, "iif-mlp-data")
    before = copy.deepcopy(model.state_dict())
    m = create(METHOD, trained, data, cache=Cache(tmp_path), subset="extractor.1,head", dim=32)
    assert not m.head_only
    S = m.scores(x[:2])
    assert S.shape == (2, 120) and torch.isfinite(S).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the given model is untouched
