"""A model removed from the cache (the Cache page) while a precompute for it waits: the precompute fails at once
saying so, instead of retraining the model unseen inside it, and the page's model path then trains it again."""

from __future__ import annotations

import time

import pytest
import streamlit as st

from core.cache import Cache
from core.data import build, get_spec
from core.jobs import Job
from core.methods import Attributor
from core.models import TrainedModel, default_config, train


def _settle(job: Job, timeout: float = 120) -> Job:
    deadline = time.time() + timeout
    while not job.done:
        assert time.time() < deadline, f"{job.label} did not end: {job.message}"
        time.sleep(0.1)
    return job


@pytest.fixture
def state(monkeypatch, tmp_path, one_thread):
    """explorer.state on a cache of its own, its jobs in their threads (quick; the patched WORKERS is read there)."""
    import explorer.state as state

    monkeypatch.setenv("ATTREX_CACHE", str(tmp_path))
    monkeypatch.setattr(state, "WORKERS", False)
    st.cache_resource.clear()
    yield state
    st.cache_resource.clear()  # the runner and its jobs, the models held in memory


def test_a_precompute_whose_model_was_removed_fails_at_once_and_the_model_trains_again(state):
    spec = get_spec("mnist", n_train=120, n_test=20, seed=0)
    config = default_config("mnist", epochs=1, seed=0)
    selection = state.Selection("mnist", 0, config, spec)
    trained = train(build(spec), config)
    assert state.model_or_job(selection) is not None  # the page has the model, from the cache: held in memory
    Cache().remove("model", trained.key)  # the Cache page's Delete

    job = state.method_or_job(selection, trained, "graddot", {})
    assert isinstance(job, Job) and _settle(job, timeout=30).error == state.MODEL_GONE
    assert not Cache().contains("model", trained.key)  # not retrained inside the precompute
    assert state.method_or_job(selection, trained, "graddot", {}) is job  # the failure stays shown until Try again

    training = state.model_or_job(selection)  # the page's next run: the model path trains it, with progress
    assert isinstance(training, Job) and _settle(training).error is None
    assert isinstance(state.model_or_job(selection), TrainedModel)
    state.forget_job(job.key)  # Try again
    fit = state.method_or_job(selection, trained, "graddot", {})
    assert isinstance(fit, Job) and _settle(fit).error is None
    assert isinstance(state.method_or_job(selection, trained, "graddot", {}), Attributor)
