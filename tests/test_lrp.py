"""DualView-LRP: conservation, the score identity, an untouched model, the cache, input checks and
heatmaps that sit on the digit, on the default MNIST CNN and on residual nets with BatchNorm (SmallResNet
and torchvision's ResNet-18)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.cache import Cache
from core.errors import AttrexError
from core.features import LRPResult, dualview_lrp
from core.features.lrp import COMPOSITES, build_composite, propagate
from core.methods import TrainingData, create
from core.models import TrainedModel
from core.models.architectures import LogisticRegression, ResNet18, SmallResNet, TextClassifier

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cnn(mnist, mnist_trained):
    return create("dualview", mnist_trained, TrainingData.of(mnist)).fit()


def pairs(method, x_test, n: int = 3) -> list[tuple[torch.Tensor, int]]:
    """For the first ``n`` test inputs: the strongest proponent and the strongest opponent of the predicted class."""
    out = []
    for x in x_test[:n]:
        s = method.scores(x)[0]
        out += [(x, int(s.argmax())), (x, int(s.argmin()))]
    return out


def _residual_net(net: torch.nn.Module, key: str):
    """An untrained residual net whose BatchNorms hold running statistics far from (0, 1) and affine
    parameters far from (1, 0), so merging them into the convolutions changes the weights a lot, and a
    DualView on 100 random images (the caller seeds torch before building ``net``)."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
        net.train()
        for _ in range(10):
            net(1.5 * torch.rand(32, 3, 32, 32))
    net.eval()
    assert all((bn.running_var - 1).abs().max() > 0.2 or bn.running_mean.abs().max() > 0.2 for bn in bns)
    x, y = torch.rand(100, 3, 32, 32), torch.arange(100) % 10
    trained = TrainedModel.wrap(net, key)
    method = create("dualview", trained, TrainingData(x, y, 10, "test-lrp-random-3x32x32")).fit()
    return method, torch.rand(3, 3, 32, 32)


@pytest.fixture(scope="module")
def resnet_small():
    torch.manual_seed(0)
    return _residual_net(SmallResNet(3, 10), "test-lrp-resnet-small")


@pytest.fixture(scope="module")
def resnet18():
    """torchvision's ResNet-18 (adapted to 32×32): zennit's ResNet canonizer, BasicBlocks with and without a
    downsampling shortcut."""
    torch.manual_seed(0)
    return _residual_net(ResNet18(3, 10), "test-lrp-resnet18")


def no_hooks(model: torch.nn.Module) -> bool:
    return all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)
               for m in model.modules())


# ----- conservation and the score identity ----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("arch", ["cnn", "resnet-small", "resnet18"])
def test_relevance_is_conserved(request, mnist, arch, composite):
    """Σ input relevance ≈ Σ_j R_j on the test and on the training input (required for ε; the display
    composites conserve too, the bias's share being handed back to the inputs)."""
    if arch == "cnn":
        method, x_test = request.getfixturevalue("cnn"), mnist.x_test
    else:
        method, x_test = request.getfixturevalue(arch.replace("-", "_"))
    for x, i in pairs(method, x_test, 2):
        r = dualview_lrp(method, x, i, composite=composite)
        total = float(r.feature_relevance.double().sum())
        assert total != 0
        for rel, reported in ((r.test_relevance, r.conservation_test), (r.train_relevance, r.conservation_train)):
            ratio = float(rel.double().sum()) / total
            assert ratio == pytest.approx(reported, rel=1e-6)
            # the biases absorb a share that depends on the weights: up to 5.5% measured over the suite's
            # seeds 0-3 (seed 3's default CNN, epsilon, 0.9446); 5% failed there, 10% leaves a 1.8x margin
            assert abs(ratio - 1) <= 0.10, (arch, composite, i, ratio)
            assert torch.isfinite(rel).all() and float(rel.abs().max()) <= 10 * abs(total)   # no blow-up
        assert r.forward_gap <= 1e-4          # the canonized extractor computes the model's features


def test_score_identity(mnist, cnn, mnist_trained):
    """score = Σ_j R_j + β_ic = DualView's score; R_j = β_ic f_ij f_j(x') from the model's own features."""
    model = mnist_trained.model
    nonsupport = int(torch.nonzero((cnn.beta == 0).all(1))[0])
    for x, i in pairs(cnn, mnist.x_test, 3) + [(mnist.x_test[5], nonsupport)]:
        c = int(model(x[None]).argmax())
        r = dualview_lrp(cnn, x, i)
        assert r.target == c and r.train_index == i and r.composite == "epsilon-plus-flat"
        expected = float(cnn.scores(x, c)[0, i])
        assert r.score == pytest.approx(expected, rel=1e-5, abs=1e-7)
        assert r.score == pytest.approx(float(r.feature_relevance.double().sum()) + r.bias_term, rel=1e-6, abs=1e-9)
        assert r.bias_term == pytest.approx(float(cnn.beta[i, c]))
        with torch.no_grad():
            f_test, f_train = model.features(x[None])[0].double(), model.features(mnist.x_train[i: i + 1])[0].double()
        assert torch.allclose(r.feature_relevance.double(), cnn.beta[i, c] * f_train * f_test, rtol=1e-5, atol=1e-7)
        assert r.test_heatmap.shape == (28, 28) and r.test_relevance.shape == (1, 28, 28)
        assert torch.equal(r.train_heatmap, r.train_relevance.sum(0))
    # not a support vector: nothing to share, the ratio is undefined
    assert r.score == 0 and not r.test_relevance.any() and math.isnan(r.conservation_test)
    # another class than the predicted one, and a batch of one
    r = dualview_lrp(cnn, mnist.x_test[:1], 3, target=7, composite="epsilon")
    assert r.target == 7 and r.score == pytest.approx(float(cnn.scores(mnist.x_test[0], 7)[0, 3]), rel=1e-5, abs=1e-7)


@pytest.mark.slow
def test_score_identity_resnet_and_logreg(resnet_small, resnet18, tmp_path):
    for method, x_test in (resnet_small, resnet18):
        for x, i in pairs(method, x_test, 1):
            r = dualview_lrp(method, x, i, composite="epsilon")
            assert r.score == pytest.approx(float(method.scores(x, r.target)[0, i]), rel=1e-5, abs=1e-7)
    # logistic regression: the features are the pixels, so the input relevance is R itself
    torch.manual_seed(1)
    x, y = torch.rand(60, 1, 6, 6), torch.arange(60) % 3
    trained = TrainedModel.wrap(LogisticRegression(36, 3), "test-lrp-logreg")
    lr = create("dualview", trained, TrainingData(x, y, 3, "test-lrp-logreg-data"), cache=Cache(tmp_path)).fit()
    i = int(lr.scores(x[0])[0].abs().argmax())
    r = dualview_lrp(lr, x[0], i, composite="epsilon", cache=Cache(tmp_path))
    assert torch.equal(r.test_relevance, r.feature_relevance.reshape(1, 6, 6)) and torch.equal(r.train_relevance, r.test_relevance)
    assert r.conservation_test == pytest.approx(1.0) and r.score == pytest.approx(float(lr.scores(x[0], r.target)[0, i]), rel=1e-5)


# ----- the model is left as it was -----------------------------------------------------------------
def test_the_model_is_unchanged(mnist, cnn, mnist_trained, resnet_small, resnet18):
    for method, x in ((cnn, mnist.x_test[:8]), resnet_small, resnet18):
        model = method.model
        state = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            before = model(x)
        for composite in COMPOSITES:
            dualview_lrp(method, x[0], 1, composite=composite)
        with torch.no_grad():
            assert torch.equal(model(x), before)
        assert model.state_dict().keys() == state.keys()
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
        assert no_hooks(model) and not model.training


def test_propagate_restores_the_module_it_changes(resnet_small):
    """Run on the model's own extractor (no copy): while registered, BatchNorm is merged into the convolutions
    and hooks are attached; afterwards every parameter, buffer, attribute and output is back."""
    method, x = resnet_small
    ext = method.model.extractor
    state = {k: v.clone() for k, v in ext.state_dict().items()}
    params = {k: id(v) for k, v in ext.named_parameters()}
    with torch.no_grad():
        before = ext(x)
    composite = build_composite("epsilon", method.model)
    composite.register(ext)
    try:
        conv = ext[0][0]
        assert conv.bias is not None and not no_hooks(ext)                      # merged and hooked meanwhile
        assert any(hasattr(m, "attrex_sum") for m in ext.modules())
    finally:
        composite.remove()
    for name in COMPOSITES:
        rel, out = propagate(ext, build_composite(name, method.model), x[:2], torch.ones(2, 128))
        assert rel.shape == (2, 3, 32, 32) and torch.allclose(out, before[:2], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        assert torch.equal(ext(x), before)
    assert all(torch.equal(v, state[k]) for k, v in ext.state_dict().items()) and ext.state_dict().keys() == state.keys()
    assert {k: id(v) for k, v in ext.named_parameters()} == params                # the same Parameter objects
    assert ext[0][0].bias is None and no_hooks(ext)
    assert not any("attrex_sum" in m._modules or "forward" in vars(m) for m in ext.modules())


# ----- cache ----------------------------------------------------------------------------------------------
def test_a_second_call_is_a_cache_hit(mnist, cnn, tmp_path):
    cache = Cache(tmp_path)
    x = mnist.x_test[11]
    i = int(cnn.scores(x)[0].argmax())                                     # a support vector
    first = dualview_lrp(cnn, x, i, composite="epsilon-gamma-box", cache=cache)
    again = dualview_lrp(cnn, x, i, composite="epsilon-gamma-box", cache=cache)
    assert first.cache_status == "computed" and again.cache_status == "hit"
    for name in ("test_relevance", "train_relevance", "test_heatmap", "train_heatmap", "feature_relevance"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    for name in ("bias_term", "score", "conservation_test", "conservation_train", "target", "train_index", "composite"):
        assert getattr(first, name) == getattr(again, name)
    assert first.score > 0 and first.test_relevance.any()
    assert dualview_lrp(cnn, x, i, composite="epsilon", cache=cache).cache_status == "computed"
    assert dualview_lrp(cnn, x, i + 1, composite="epsilon-gamma-box", cache=cache).cache_status == "computed"
    assert dualview_lrp(cnn, x, i, target=(first.target + 1) % 10, composite="epsilon-gamma-box",
                        cache=cache).cache_status == "computed"
    assert dualview_lrp(cnn, x + 0.01, i, composite="epsilon-gamma-box", cache=cache).cache_status == "computed"
    assert isinstance(again, LRPResult)


# ----- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"x_test": torch.zeros(2, 1, 28, 28)}, "one image"),
    ({"x_test": torch.zeros(28, 28)}, "one image"),
    ({"x_test": torch.zeros(1, 1, 28, 28, dtype=torch.long)}, "floating-point"),
    ({"x_test": torch.full((1, 28, 28), float("nan"))}, "NaN"),
    ({"x_test": [[0.0]]}, "one image"),
    ({"train_index": 6000}, r"\[0, 5999\]"),
    ({"train_index": -1}, r"\[0, 5999\]"),
    ({"train_index": 1.5}, "integer"),
    ({"train_index": True}, "integer"),
    ({"target": 10}, r"\[0, 9\]"),
    ({"target": -1}, r"\[0, 9\]"),
    ({"target": torch.tensor([1, 2])}, "one class"),
    ({"composite": "alpha-beta"}, "epsilon-plus-flat"),
])
def test_bad_input_is_refused(mnist, cnn, kwargs, match):
    args = {"x_test": mnist.x_test[0], "train_index": 0, **kwargs}
    with pytest.raises(AttrexError, match=match):
        dualview_lrp(cnn, **args)


def test_other_methods_and_text_models_are_refused(mnist, mnist_trained):
    with pytest.raises(AttrexError, match="DualView"):
        dualview_lrp(create("representer", mnist_trained, TrainingData.of(mnist)), mnist.x_test[0], 0)
    ids = torch.randint(1, 50, (20, 8))
    text = TrainedModel.wrap(TextClassifier(50, 4), "test-lrp-text")
    method = create("dualview", text, TrainingData(ids, torch.arange(20) % 4, 4, "test-lrp-text-data"))
    with pytest.raises(AttrexError, match="text"):
        dualview_lrp(method, ids[0], 0)


# ----- the heatmaps are about the digit ------------------------------------------------------------------
def test_relevance_sits_on_the_digit(mnist, cnn):
    """ε: on the first layer every pixel's relevance is x_p · (…), so blank pixels get exactly none. The display
    composite (flat first layer) spreads each first-layer neuron's relevance over its 3×3 window: measured on the
    proponents and opponents of the first 20 test images, at least 94% of |relevance| lies within one pixel of a
    stroke (an area of about a third of the image; mean 97%)."""
    for x, i in pairs(cnn, mnist.x_test, 4):
        eps = dualview_lrp(cnn, x, i, composite="epsilon")
        for img, heat in ((x[0], eps.test_heatmap), (mnist.x_train[i][0], eps.train_heatmap)):
            assert float(heat.abs().sum()) > 0 and not heat[img == 0].any()
        r = dualview_lrp(cnn, x, i)
        for img, heat in ((x[0], r.test_heatmap), (mnist.x_train[i][0], r.train_heatmap)):
            near = F.max_pool2d((img > 0).float()[None, None], 3, 1, 1)[0, 0] > 0
            share = float(heat.abs()[near].sum() / heat.abs().sum())
            assert share >= 0.85 and float(near.float().mean()) <= 0.6, (i, share)
            assert int((heat.abs() > 0.01 * heat.abs().max()).sum()) >= 20       # not a single hot pixel
