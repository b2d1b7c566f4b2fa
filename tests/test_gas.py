"""GAS (renormalized TracIn, Hammoudeh & Lowd 2022) and its projected variant against independent computations.

The reference is a brute-force loop (plain autograd, one backward per sample, float64) over
the checkpoints and the pairs: ``Σ_c lr_c cos(∇ℓ(z_train; θ_c), ∇ℓ(z_test; θ_c))``; it
shares no code with :mod:`core.methods.gradient`. The model is small (300 MNIST images, three
epochs, three checkpoints at different learning rates) so that the whole file runs in seconds.
"""

from __future__ import annotations

import pytest
import torch
from test_tracin import as_float64, brute_grads, pearson, rel_err, spearman, subset, topk_overlap

from core.cache import Cache
from core.data import build, get_spec
from core.errors import AttrexError
from core.methods import TrainingData, create
from core.models import default_config, predict, train

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


def brute_gas(trained, x_test, target, x_train, y_train, names=None) -> torch.Tensor:
    """``S[test, train] = Σ_c lr_c cos(∇ℓ(z_train; θ_c), ∇ℓ(z_test; θ_c))`` by brute force (float64)."""
    out = torch.zeros(len(x_test), len(x_train), dtype=torch.float64)
    for c in trained.checkpoints:
        m = trained.model_at(c.index)
        g_test, g_train = brute_grads(m, x_test, target, names), brute_grads(m, x_train, y_train, names)
        out += c.lr * (g_test / g_test.norm(dim=1, keepdim=True)) @ (g_train / g_train.norm(dim=1, keepdim=True)).T
    return out


@pytest.fixture(scope="module")
def small():
    scenario = build(get_spec("mnist", n_train=300, n_test=40))
    trained = train(scenario, default_config("mnist", epochs=3, n_checkpoints=3))
    x = scenario.x_test[:4]
    return scenario, trained, x, predict(trained.model, x).argmax(1)


def test_gas_equals_brute_force_over_checkpoints_and_pairs(small, tmp_path):
    scenario, trained, x, target = small
    assert len({c.lr for c in trained.checkpoints}) == 3  # the learning-rate weights matter
    data = subset(scenario, 30)
    ref = brute_gas(trained, x, target, data.x, data.y)

    # the algorithm without float32 rounding
    data64 = TrainingData(data.x.double(), data.y, data.n_classes, f"{data.key}-float64")
    exact = create("gas", as_float64(trained), data64, cache=Cache(tmp_path)).fit()
    assert rel_err(exact.scores(x.double(), target), ref) <= 1e-6  # measured 8e-8 (the float32 score matrix)

    # the production path in float32, with the predicted class as the default target
    method = create("gas", trained, data, cache=Cache(tmp_path)).fit()
    s = method.scores(x)
    assert s.shape == (4, 30) and rel_err(s, ref) <= 1e-5  # measured 2e-7
    assert s.abs().max() <= sum(c.lr for c in trained.checkpoints) * (1 + 1e-6)  # a weighted sum of cosines

    # GAS is not TracIn rescaled: the normalisation reorders the training points
    tracin = create("tracin", trained, data, cache=Cache(tmp_path)).fit().scores(x, target)
    assert not torch.equal(s.argsort(1), tracin.argsort(1))

    # a cosine with itself is 1: no self-influence to rank by
    with pytest.raises(AttrexError, match="no self-influence"):
        method.self_scores()


def test_gas_over_a_parameter_subset_equals_brute_force(small, tmp_path):
    scenario, trained, x, target = small
    data = subset(scenario, 25, start=100)
    names = ["head.weight", "head.bias"]
    method = create("gas", trained, data, cache=Cache(tmp_path), subset="last").fit()
    assert method.names == names
    assert rel_err(method.scores(x, target), brute_gas(trained, x, target, data.x, data.y, names)) <= 1e-5  # 1.5e-7


def test_gas_reads_tracins_cached_gradients(small, tmp_path):
    scenario, trained, x, _ = small
    data = subset(scenario, 60)
    for base, renorm, params in (("tracin", "gas", {}), ("tracin-rp", "gas-rp", {"dim": 256})):
        create(base, trained, data, cache=Cache(tmp_path), **params).fit()
        gas = create(renorm, trained, data, cache=Cache(tmp_path), **params).fit()
        assert gas.fit_status == "hit", renorm  # the same precompute, normalised at query time
        assert create(renorm, trained, data, cache=Cache(tmp_path), seed=1, **params).cache_key() != gas.cache_key()


def test_projected_gas_agrees_with_exact(small, tmp_path):
    scenario, trained, _, _ = small
    data = TrainingData.of(scenario)
    x = scenario.x_test[10:18]
    exact = create("gas", trained, data, cache=Cache(tmp_path)).fit().scores(x)
    rp = create("gas-rp", trained, data, cache=Cache(tmp_path)).fit()
    assert rp.hparams["projection"] == "sparse" and rp.hparams["dim"] == 2048
    approx = rp.scores(x)
    overlap = topk_overlap(approx, exact)
    rho = sum(spearman(a, b) for a, b in zip(approx, exact, strict=True)) / len(x)
    # measured (sparse, dim 2048) for seeds 0, 1, 2: top-10 overlap 9.4, 9.8, 9.4; Spearman 0.97, 0.96,
    # 0.94; Pearson 0.998, 0.997, 0.996; largest error 5.4%, 8.7%, 7.8% of Σ_c lr_c (each cosine of
    # two projections errs by about 1/sqrt(dim) = 2.2%, the largest of 2,400 by about four times that)
    assert overlap >= 8.0, overlap
    assert rho >= 0.9, rho
    assert pearson(approx, exact) >= 0.99
    assert (approx - exact).abs().max() <= 0.15 * sum(c.lr for c in trained.checkpoints)


def test_gas_on_a_text_model_equals_brute_force(agnews_small, tmp_path):
    # exact gradients of the embedding table are kept as the rows each text looks up: their norms too
    scenario, trained = agnews_small
    x = scenario.x_test[:3]
    target = predict(trained.model, x).argmax(1)
    part = subset(scenario, 20)
    method = create("gas", trained, part, cache=Cache(tmp_path)).fit()
    assert rel_err(method.scores(x, target), brute_gas(trained, x, target, part.x, part.y)) <= 1e-5  # 1.5e-7
