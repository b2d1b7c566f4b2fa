"""The influence solvers as strategy objects (:mod:`core.methods.influence_solvers`).

The ``solver`` parameter picks one class per solver, and the cache keys did not move when the
solvers became classes: ``KEYS`` was recorded with the single-class ``Influence`` of commit
a0c2862 (the script: build each method below with that commit's ``core`` on the path and print
``method.mode, method.cache_key()``). A key that moved would orphan every cached precompute.
"""

from __future__ import annotations

import pytest
import torch

from core.cache import make_key
from core.errors import AttrexError
from core.methods.base import TrainingData, create
from core.methods.influence import Influence
from core.methods.influence_solvers import (
    SOLVERS,
    ArnoldiSolver,
    CGSolver,
    ExactSolver,
    LissaSolver,
    Solver,
)
from core.models import TrainedModel
from core.models.architectures import MLP, LogisticRegression

KEYS = {  # "method/solver/subset/dense_max": (mode, cache key), recorded before the refactor
    "influence/exact/last/4096": ("dense", "f68a712b2d5b75f0e7c3b197a8eba616809d9e36d954e5022de0f9e8b470fde1"),
    "relatif/exact/last/4096": ("dense", "4764cafde4785c3778c11586661dc3470942fc17d348a9a810d4338fff1939b4"),
    "influence/cg/last/4096": ("dense", "9e5869cb17fcea5fd26f461ffb2334c34fd563c6d085198dfd25a7f94fe8bd19"),
    "relatif/cg/last/4096": ("dense", "979096c3c3cb6e8020bcbfb112578848bdc6e29b502bed3bf2c2047bb6793567"),
    "influence/lissa/last/4096": ("per-query", "1fecb599f9f2b7d3f87b27a9b58fe1d8b46b9fda6cf1a5178f540abfeb63c90b"),
    "relatif/lissa/last/4096": ("per-query", "30ed8a094ac7adbf3fa16af130073c52f93f11a4e3112ba6c05677a4c4476a28"),
    "influence/arnoldi/last/4096": ("spectral", "9da7c04b0b29ea8abe321caf436a58aeb1b3978cb46234a194dc6499b5521924"),
    "relatif/arnoldi/last/4096": ("spectral", "3a9bd1c505c2d2504ca785b4895687b6965e5ae6ea925c42bd2c2f323c188693"),
    "influence/exact/all/4096": ("dense", "a74bc996563cd30d569d5716288b709a6b31d3a12e461b33831d6137c0a66e59"),
    "relatif/exact/all/4096": ("dense", "2171e1be42d58c59d6d8687769d8b18f944f98c597ccb78b98211e5d0f7cd251"),
    "influence/cg/all/4096": ("dense", "9bded7db8a1d9720bbb1b97f4fcc23a2ea74680a2ce2b44172f36c9a45246f92"),
    "relatif/cg/all/4096": ("dense", "f1b602efa515c40c9d5e90b0a5c255e0c090e03cda2afb128d96b6f3e29794c1"),
    "influence/lissa/all/4096": ("per-query", "14fd8b5e11c876c4a8ddfde6247e81e03519373437769fd37982a6ab30de146c"),
    "relatif/lissa/all/4096": ("per-query", "f0d85b21bd95b9eafc789abe561e7a4aa23f655025d6a85a00469164b0169697"),
    "influence/arnoldi/all/4096": ("spectral", "f4185e6f66cb29e56a1a482c0aea2021c6124aa0a0d4a59639dd70b99cee994d"),
    "relatif/arnoldi/all/4096": ("spectral", "c91376fb1cdafb1a7772c091f8a6191abc346be1d50a5b871291fada05c3d73b"),
    "influence/cg/last/100": ("per-query", "bd50087396698b1e0136cb46a2d34694d96d2d319df9f34db9e856c9f7bc4c0a"),
    "influence/lissa/last/100": ("per-query", "8dce9b4ca8befd8e2004f595b5d9191458bbcce008b4d92550d5b94c32f5747c"),
    "influence/arnoldi/last/100": ("spectral", "668ed746d88da644c68a1dcf1314ae7bfad52a2753547b05d2fe83d99ce18389"),
    "relatif/arnoldi/last/100": ("spectral", "0774729e50efb9455848f256a584da3ded61389421d6131090f165e5cf96755f"),
    "influence/cg/all/100": ("per-query", "c9a9c22874b15ec3812ff0fe16a37d4c165be2f7bc13f659cd41cc080094c5ec"),
    "influence/lissa/all/100": ("per-query", "89f84db4cfb965d3598b4180cb5060e2df61eafd1d5b12668f2e7b6ce20bc38e"),
    "influence/arnoldi/all/100": ("spectral", "bb8b9257447a6b2dab5c595eaa8603f1a16f3af3fa50a88b0b351c7096834d2d"),
    "relatif/arnoldi/all/100": ("spectral", "6a128a86275e352f0e9ecc2293f62c13556f03f566e92d5c7b0df87427dee3ed"),
}
CLASSES = {"exact": ExactSolver, "cg": CGSolver, "lissa": LissaSolver, "arnoldi": ArnoldiSolver}


@pytest.fixture(scope="module")
def tiny():
    """A logistic regression (subset ``last``: 500 parameters) and an MLP (``all``: 524), unfitted: keys only."""
    torch.manual_seed(0)
    x = torch.rand(30, 1, 7, 7).double()
    data = TrainingData(x, torch.arange(30) % 10, 10, "test-solvers-data")
    return data, {"last": TrainedModel.wrap(LogisticRegression(49, 10).double(), "test-solvers-logreg"),
                  "all": TrainedModel.wrap(MLP(49, 10, hidden=(8, 6)).double(), "test-solvers-mlp")}


def test_one_class_per_solver_name():
    assert SOLVERS == CLASSES
    assert all(issubclass(cls, Solver) and cls.name == name for name, cls in SOLVERS.items())
    assert next(p for p in Influence.params if p.name == "solver").choices == ("exact", "cg", "lissa", "arnoldi")


@pytest.mark.parametrize("case", list(KEYS))
def test_solver_mode_and_cache_key_as_before(case, tiny, monkeypatch):
    method, solver, subset, dense_max = case.split("/")
    monkeypatch.setattr(Influence, "dense_max", int(dense_max))
    data, models = tiny
    m = create(method, models[subset], data, solver=solver, subset=subset, arnoldi_rank=20)
    assert type(m.solver) is CLASSES[solver]
    assert (m.mode, m.cache_key()) == KEYS[case]
    parts = {"method": method, "params": m.hparams, "model": models[subset].key, "data": data.key,
             "names": m.names, "mode": m.mode, "small": m.dim <= int(dense_max)}
    assert m.cache_key() == make_key(parts, f"{method}-1")


def test_what_no_key_was_recorded_for_is_refused(tiny, monkeypatch):
    """exact over more than ``dense_max`` parameters, and RelatIF solved per query, are refused when built."""
    monkeypatch.setattr(Influence, "dense_max", 100)
    data, models = tiny
    for subset in models:
        with pytest.raises(AttrexError, match="materialises the Hessian"):
            create("influence", models[subset], data, solver="exact", subset=subset)
        for solver in ("cg", "lissa"):
            with pytest.raises(AttrexError, match="one solve per point"):
                create("relatif", models[subset], data, solver=solver, subset=subset)
