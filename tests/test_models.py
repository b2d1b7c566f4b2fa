"""Architectures, training with checkpoints, reproducibility, and the default model's accuracy."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from core.cache import Cache
from core.data import build, get_spec
from core.errors import AttrexError
from core.models import (
    ARCHITECTURES,
    TrainConfig,
    build_model,
    default_config,
    load_state,
    predict,
    train,
)


@pytest.fixture(scope="module")
def tiny():
    return build(get_spec("mnist-backdoor", n_train=400, n_test=100))


@pytest.mark.parametrize("arch", [a for a, arch in ARCHITECTURES.items() if arch.kind == "image"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_image_architectures_expose_features_and_head(arch, shape):
    torch.manual_seed(0)
    m = build_model(arch, shape, 10).eval()
    x = torch.rand(2, *shape)
    f = m.features(x)
    assert f.shape == (2, m.feature_dim)
    assert torch.allclose(m(x), m.head(f), atol=1e-6)


def test_text_model_ignores_padding():
    torch.manual_seed(0)
    m = build_model("text", (16,), 4, vocab_size=50).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0]])
    e = m.embed(ids)
    noisy = e.clone()
    noisy[:, 3:] += torch.randn_like(noisy[:, 3:])  # change the padding embeddings
    mask = ids != 0
    assert torch.allclose(m.forward_embeddings(e, mask), m.forward_embeddings(noisy, mask))
    assert torch.allclose(m(ids), m.forward_embeddings(e, mask))


def test_wrong_architecture_for_the_data():
    with pytest.raises(AttrexError, match="for text data"):
        build_model("text", (1, 28, 28), 10)
    with pytest.raises(AttrexError, match="accepted"):
        build_model("vgg", (1, 28, 28), 10)


def test_training_writes_checkpoints_with_their_learning_rates(tiny, tmp_path):
    cfg = TrainConfig(arch="cnn", epochs=4, n_checkpoints=3, batch_size=64, lr=0.05)
    tm = train(tiny, cfg, cache=Cache(tmp_path))
    assert cfg.checkpoint_epochs() == [1, 3, 4]
    assert [c.epoch for c in tm.checkpoints] == [1, 3, 4]
    steps = math.ceil(400 / 64)
    assert [c.step for c in tm.checkpoints] == [steps, 3 * steps, 4 * steps]
    for c in tm.checkpoints:
        assert c.lr == pytest.approx(cfg.lr_at(c.step - 1, 4 * steps))
    assert tm.checkpoints[0].lr > tm.checkpoints[-1].lr == pytest.approx(cfg.lr * cfg.final_lr_ratio)
    # the final checkpoint is the model; earlier ones differ from it
    final = tm.model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in tm.checkpoints[-1].state.items())
    early = tm.model_at(0)
    assert not torch.equal(early.head.weight, tm.model.head.weight)
    assert len(tm.history) == 4 and {"train_loss", "test_acc", "lr"} <= set(tm.history[0])
    # a backdoor scenario reports its attack success: the share of triggered test samples sent to the target
    x_trig, target = tiny.test_split("triggered")
    with torch.no_grad():
        sent = (tm.model.eval()(x_trig).argmax(1) == target).float().mean().item()
    assert tm.attack_success == pytest.approx(sent, abs=1e-6)


def test_same_seed_same_model_other_seed_other_model(tiny, tmp_path):
    cfg = TrainConfig(arch="cnn", epochs=2, n_checkpoints=2)
    a = train(tiny, cfg, cache=Cache(tmp_path / "a"))
    b = train(tiny, cfg, cache=Cache(tmp_path / "b"))
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    c = train(tiny, TrainConfig(arch="cnn", epochs=2, n_checkpoints=2, seed=1), cache=Cache(tmp_path / "c"))
    assert not torch.equal(a.model.head.weight, c.model.head.weight)


def test_second_call_comes_from_the_cache_and_corruption_is_recovered(tiny, tmp_path):
    cache = Cache(tmp_path)
    cfg = TrainConfig(arch="logreg", epochs=2, n_checkpoints=2, lr=0.1)
    first = train(tiny, cfg, cache=cache)
    assert first.cache_status == "computed"
    second = train(tiny, cfg, cache=cache)
    assert second.cache_status == "hit" and second.key == first.key
    assert torch.equal(second.model.head.weight, first.model.head.weight)
    assert second.history == first.history
    # corrupt the stored weights: the next call says so and recomputes the same model
    f = cache.path("model", first.key) / "tensors.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    third = train(tiny, cfg, cache=cache)
    assert third.cache_status.startswith("recomputed") and "checksum" in third.cache_status
    assert third.cache_messages and "recomputing" in third.cache_messages[0]
    assert torch.equal(third.model.head.weight, first.model.head.weight)
    # a different config is a different artefact
    other = train(tiny, TrainConfig(arch="logreg", epochs=1, n_checkpoints=1, lr=0.1), cache=cache)
    assert other.key != first.key and other.cache_status == "computed"


def test_weights_of_another_model_are_refused(tiny, tmp_path):
    cnn = build_model("cnn", (1, 28, 28), 10)
    mlp = build_model("mlp", (1, 28, 28), 10)
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    with pytest.raises(AttrexError, match="another model"):
        load_state(cnn, mlp.state_dict())
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())  # nothing changed


def test_one_seed_fixes_the_data_and_the_training(tmp_path):
    """A config without a seed trains with the scenario's: the same model, under the same key, as the explicit seed."""
    from dataclasses import replace

    from core.models import is_cached
    from core.models.training import cache_key

    scenario = build(replace(get_spec("mnist"), seed=5, n_train=200, n_test=50))
    cache = Cache(tmp_path)
    implicit = train(scenario, default_config("mnist", epochs=1, n_checkpoints=1), cache=cache)
    assert implicit.config.seed == 5 and implicit.cache_status == "computed"
    explicit_cfg = default_config("mnist", epochs=1, n_checkpoints=1, seed=5)
    assert explicit_cfg.seed == 5 and implicit.config == explicit_cfg
    assert cache_key(scenario, explicit_cfg) == implicit.key and is_cached(scenario, explicit_cfg, cache)
    explicit = train(scenario, explicit_cfg, cache=Cache(tmp_path / "fresh"))  # trained again, not loaded
    assert explicit.cache_status == "computed" and explicit.key == implicit.key
    for k, v in implicit.model.state_dict().items():
        assert torch.equal(v, explicit.model.state_dict()[k]), k
    # with no config at all, the default config takes the scenario's seed too
    assert cache_key(scenario) == cache_key(scenario, default_config("mnist", seed=5))
    assert cache_key(scenario, default_config("mnist", seed=0)) != cache_key(scenario)


def test_other_architectures_do_not_inherit_the_default_recipe():
    """MNIST's CNN trains with shifts; its MLP and logistic regression keep their own recipe."""
    assert default_config("mnist").augment == "shift"
    for arch in ("mlp", "logreg"):
        cfg = default_config("mnist", arch)
        assert (cfg.arch, cfg.augment, cfg.final_lr_ratio, cfg.epochs) == (arch, "none", 0.1, 10)
    assert default_config("cifar10", "resnet18").augment == "crop-flip"
    assert default_config("agnews").optimizer == "adamw"


def test_bad_training_options():
    with pytest.raises(AttrexError, match="positive integer"):
        TrainConfig(epochs=0)
    with pytest.raises(AttrexError, match="learning rate"):
        TrainConfig(lr=-1.0)
    with pytest.raises(AttrexError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(AttrexError, match="augment"):
        TrainConfig(augment="rotate")
    for bad in (-1, 1.5, "0", True):
        with pytest.raises(AttrexError, match="seed"):
            TrainConfig(seed=bad)
    assert TrainConfig().seed is None and TrainConfig(seed=3).seed == 3


def test_default_mnist_model_meets_its_target(mnist_trained, mnist):
    """The issue's target: the default MNIST CNN reaches >= 97% on the test subset.

    Measured with benchmarks/model_seeds.py (scenario and training seeds 0-4, 1 torch thread):
    98.2%, 98.3%, 98.8%, 98.9%, 98.6% (min 98.2%: 1.2 points above the target, 0.7 above 97.5%).
    """
    assert mnist_trained.config == default_config("mnist", seed=mnist.spec.seed)  # the scenario's seed, resolved
    assert mnist_trained.test_accuracy >= 0.97
    acc = (predict(mnist_trained.model, mnist.x_test).argmax(1) == mnist.y_test).float().mean().item()
    assert acc == pytest.approx(mnist_trained.test_accuracy)
    assert len(mnist_trained.checkpoints) == 5


def test_cache_folder_from_the_environment(isolated_cache, mnist_trained):
    assert (isolated_cache / "model" / mnist_trained.key / "meta.json").is_file()
    assert not list((isolated_cache / "model").glob(".tmp-*"))  # atomic writes leave nothing behind


def test_removed_cache_is_rebuilt(tiny, tmp_path):
    cache = Cache(tmp_path)
    cfg = TrainConfig(arch="logreg", epochs=1, n_checkpoints=1, lr=0.1)
    a = train(tiny, cfg, cache=cache)
    shutil.rmtree(cache.path("model", a.key))
    assert train(tiny, cfg, cache=cache).cache_status == "computed"


def test_model_code_versions_are_part_of_the_key(tiny, monkeypatch):
    """A change to an architecture (even one without parameters) must not be served from the cache."""
    from dataclasses import replace

    import core.models.training as training

    cfg = TrainConfig(arch="cnn", epochs=1, n_checkpoints=1)
    before = training.cache_key(tiny, cfg)
    monkeypatch.setitem(ARCHITECTURES, "cnn", replace(ARCHITECTURES["cnn"], version=ARCHITECTURES["cnn"].version + 1))
    assert training.cache_key(tiny, cfg) != before
    monkeypatch.undo()
    monkeypatch.setattr(training, "CODE_VERSION", "something-else")
    assert training.cache_key(tiny, cfg) != before
