"""Shared fixtures: an isolated cache for the whole session, and the default MNIST model trained once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


# The seed of the scenario and model most tests run on (``ATTREX_TEST_SEED``, default 0): the
# suite must hold for any honest set of weights, so it is also run with other seeds
# (``ATTREX_TEST_SEED=3 make test``). The app and the CLI default to seed 0: tests of them use
# the ``default_*`` fixtures, which are the same objects when the test seed is 0.
TEST_SEED = int(os.environ.get("ATTREX_TEST_SEED", "0"))

# The tiers (docs/testing.md): `make test` runs every test; `make check` leaves out those marked
# `slow`. A test is slow when it needs one of these fixtures (each trains a model or starts a
# browser, directly or through the fixtures it uses), or when it is marked by hand (the app in
# AppTest, subprocesses, training of its own).
SLOW_FIXTURES = frozenset({"mnist_trained", "default_trained", "agnews_small", "browser"})
# Whole files of slow tests: the app in AppTest or a browser, the CLI or a server in subprocesses, Ray.
SLOW_MODULES = frozenset({"test_app", "test_pages", "test_export", "test_shared", "test_inert", "test_own_files",
                          "test_removed_model", "test_browser", "test_browser_shared", "test_network", "test_cli",
                          "test_distributed", "test_extending", "test_bench", "test_quanda_crosscheck"})


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__.rpartition(".")[2] in SLOW_MODULES or \
                SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def mnist():
    from core.data import build, get_spec

    return build(get_spec("mnist", seed=TEST_SEED))


@pytest.fixture(scope="session")
def mnist_trained(mnist, isolated_cache):
    """The default model of the default scenario at the test seed, as the app and the CLI train it."""
    from core.models import train

    return train(mnist)


@pytest.fixture(scope="session")
def default_mnist(mnist):
    """The app's and the CLI's default scenario (seed 0)."""
    from core.data import build

    return mnist if TEST_SEED == 0 else build("mnist")


@pytest.fixture(scope="session")
def default_trained(default_mnist, mnist_trained):
    """The model the app and the CLI train by default (seed 0)."""
    from core.models import train

    return mnist_trained if TEST_SEED == 0 else train(default_mnist)


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


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Playwright), or the test is skipped saying why it cannot be had."""
    from _browser import CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium on this machine (make test installs Debian's chromium where it runs as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (it comes with the project's test extras)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


