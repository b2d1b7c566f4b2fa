"""Shared fixtures: an isolated cache for the whole session, and the default MNIST model trained once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package, beside core

SESSION_CACHE: Path | None = None


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Path:
    """Every test uses a fresh cache, never the user's (``ATTREX_CACHE`` also reaches subprocesses)."""
    global SESSION_CACHE
    root = tmp_path_factory.mktemp("attrex-cache")
    old = os.environ.get("ATTREX_CACHE")
    os.environ["ATTREX_CACHE"] = str(root)
    SESSION_CACHE = root
    yield root
    if old is None:
        os.environ.pop("ATTREX_CACHE", None)
    else:
        os.environ["ATTREX_CACHE"] = old


@pytest.fixture(scope="session")
def mnist():
    from core.data import build

    return build("mnist")


@pytest.fixture(scope="session")
def mnist_trained(mnist, isolated_cache):
    """The default model of the default scenario, exactly as the app and the CLI train it."""
    from core.models import train

    return train(mnist)


@pytest.fixture(scope="session")
def agnews_small(isolated_cache):
    """A small AG News scenario (240 texts) and its text model, briefly trained."""
    from core.data import build, get_spec
    from core.models import default_config, train

    scenario = build(get_spec("agnews", n_train=240, n_test=40))
    return scenario, train(scenario, default_config("agnews", epochs=3))


@pytest.fixture
def one_thread():
    """One torch thread for the test: small problems run thousands of tiny ops, and two threads
    synchronising on a busy 2-core machine make them many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
