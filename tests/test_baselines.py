"""The baselines registered as methods (core/methods/baselines.py): random scores and the training loss.

The training loss is checked against the cross-entropy computed sample by sample in float64;
the random scores against what "seeded" has to mean for a query (the same query, the same
row, whatever else is in its batch). Registry-wide checks (parameters, inputs, the contract)
cover both through tests/test_tracin.py and tests/test_contract.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from core.cache import Cache
from core.data import build, get_spec
from core.errors import AttrexError
from core.methods import REGISTRY, TrainingData, create
from core.metrics import mislabel
from core.models import default_config, train

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


@pytest.fixture(scope="module")
def noisy():
    """1,000 MNIST images with 10% of the labels flipped, a model trained for three epochs (90% test accuracy)."""
    scenario = build(get_spec("mnist-noisy", n_train=1000, n_test=40))
    return scenario, train(scenario, default_config("mnist", epochs=3))


def test_loss_is_the_final_models_cross_entropy_on_the_given_label(noisy, tmp_path):
    scenario, trained = noisy
    method = create("loss", trained, TrainingData.of(scenario), cache=Cache(tmp_path)).fit()
    own = method.self_scores()
    model = copy.deepcopy(trained.model).double().eval()
    ref = torch.stack([F.cross_entropy(model(x[None].double()), y.view(1)) for x, y in
                       zip(scenario.x_train, scenario.y_train, strict=True)]).detach()
    torch.testing.assert_close(own.double(), ref, rtol=1e-4, atol=1e-6)
    # the flipped labels are the ones the model disagrees with (measured AUROC 0.959, AUPRC 0.79). This scenario
    # and model are seeded (seed 0): the AUROC was 0.9595 under ATEN_CPU_CAPABILITY=avx512 (native), avx2 and default,
    # at one and two torch threads alike (the small model trained bit-identically on all six). Other seeds of the same
    # recipe give 0.949, 0.974, 0.936, 0.974 (seeds 1-4, same on all six): 0.9 sits 0.06 below the value tested and
    # 0.036 below the worst seed, room for a CPU whose convolutions round differently.
    assert mislabel.auroc(own, scenario.truth.flipped_ids) >= 0.9
    assert not REGISTRY["loss"].per_test and not REGISTRY["loss"].describe()["per_test"]
    for call in (lambda: method.scores(scenario.x_test[:2]), lambda: method.top_k(scenario.x_test[:2], k=3)):
        with pytest.raises(AttrexError, match="'loss' has no per-test-point scores"):
            call()


def test_random_scores_are_seeded_per_query(noisy, tmp_path):
    scenario, trained = noisy
    data = TrainingData.of(scenario)
    method = create("random", trained, data, cache=Cache(tmp_path)).fit()
    x = scenario.x_test[:6]
    s = method.scores(x)
    assert s.shape == (6, 1000) and torch.equal(method.scores(x), s)
    assert torch.equal(method.scores(x[3:4]), s[3:4])          # a row does not depend on its batch
    assert torch.equal(method.scores(x[[2, 2]])[1], s[2])      # nor on its position
    assert not torch.equal(method.scores(x[:1], target=(int(method.top_k(x[:1]).targets) + 1) % 10), s[:1])
    other = create("random", trained, data, cache=Cache(tmp_path), seed=1).fit()
    assert not torch.equal(other.scores(x), s)
    assert abs(float(s.mean())) < 0.1 and abs(float(s.std()) - 1) < 0.1  # N(0, 1): 6,000 draws
    assert s.corrcoef().fill_diagonal_(0).abs().max() < 0.15              # rows independent
    own = method.self_scores()
    assert own.shape == (1000,) and torch.equal(own, create("random", trained, data).fit().self_scores())
    assert 0.3 < mislabel.auroc(own, scenario.truth.flipped_ids) < 0.7
