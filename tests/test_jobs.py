"""Background jobs (core/jobs.py) and how the app's state hands work to them."""

from __future__ import annotations

import threading
import time

import pytest

from core.jobs import Job, JobRunner


def _wait(job: Job, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not job.done:
        assert time.time() < deadline, "the job did not end"
        time.sleep(0.02)


def test_callers_share_one_job_and_the_result_is_handed_over_once():
    runner, calls, release = JobRunner(), [], threading.Event()

    def work(progress):
        calls.append(1)
        progress(0.5, "half way")
        release.wait(10)
        return "model"

    first = runner.run_or_job("k", "job", load=lambda: None, work=work)
    second = runner.run_or_job("k", "job", load=lambda: None, work=work)
    assert isinstance(first, Job) and second is first
    release.set()
    _wait(first)
    assert runner.run_or_job("k", "job", load=lambda: None, work=work) == "model"   # handed over ...
    assert runner.run_or_job("k", "job", load=lambda: "from disk", work=work) == "from disk"  # ... once
    assert calls == [1]


def test_a_failed_job_stays_until_forgotten_and_jobs_run_one_at_a_time():
    runner, running, overlaps = JobRunner(), [], []

    def failing(progress):
        raise RuntimeError("disk full")

    def slow(progress):
        running.append(1)
        overlaps.append(len(running))
        time.sleep(0.2)
        running.pop()
        return 1

    job = runner.run_or_job("bad", "job", load=lambda: None, work=failing)
    _wait(job)
    assert job.error == "RuntimeError: disk full"
    assert runner.run_or_job("bad", "job", load=lambda: "x", work=failing) is job  # not silently retried
    runner.forget("bad")
    assert runner.run_or_job("bad", "job", load=lambda: "x", work=failing) == "x"
    jobs = [runner.run_or_job(i, "job", load=lambda: None, work=slow) for i in range(3)]
    for j in jobs:
        _wait(j)
    assert overlaps == [1, 1, 1] and not runner.busy()


def test_cancelling_stops_work_at_its_next_report_and_a_waiting_job_never_starts(isolated_cache):
    from core.cache import Cache
    from core.data import build, get_spec
    from core.models import default_config, is_cached, train

    runner, release = JobRunner(), threading.Event()
    reports = []

    def blocker(progress):
        release.wait(10)
        return "done"

    started = []

    def never(progress):
        started.append(1)
        return "ran"

    first = runner.run_or_job("a", "job", load=lambda: None, work=blocker)
    waiting = runner.run_or_job("b", "job", load=lambda: None, work=never)
    runner.cancel("b")  # still waiting behind "a"
    release.set()
    _wait(first), _wait(waiting)
    assert first.result == "done" and waiting.error == "cancelled before it started" and not started
    # a real training, cancelled after its first progress report: it stops, and nothing is cached
    scenario = build(get_spec("mnist", n_train=600, n_test=60))
    config = default_config("mnist", epochs=50)
    cache = Cache(isolated_cache / "cancel")

    def training(progress):
        def report(f, m):
            reports.append(f)
            progress(f, m)
        return train(scenario, config, progress=report, cache=cache)

    job = runner.run_or_job("t", "training", load=lambda: None, work=training)
    deadline = time.time() + 60
    while not reports:
        assert time.time() < deadline
        time.sleep(0.01)
    runner.cancel("t")
    _wait(job)
    assert job.error == "cancelled" and job.cancelled and max(reports) < 0.5
    assert not is_cached(scenario, config, cache)
    runner.cancel("t")  # cancelling an ended job changes nothing
    assert job.error == "cancelled"


def test_a_damaged_cached_model_is_retrained_by_a_job_with_progress(isolated_cache):
    """The app never retrains behind a bare spinner: an unusable cache entry is a background job."""
    from core.cache import Cache
    from core.data import build
    from core.models import TrainConfig, train
    from explorer import state

    config = TrainConfig(arch="logreg", epochs=1, n_checkpoints=1, lr=0.1, seed=0)
    selection = state.Selection("mnist", 0, config)
    first = train(build("mnist"), config)
    assert state.model_or_job(selection).key == first.key  # sound: loaded at once
    state._cached_model.clear()
    f = Cache().path("model", first.key) / "tensors.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    job = state.model_or_job(selection)
    assert isinstance(job, Job)
    _wait(job)
    assert job.error is None and job.result.cache_status.startswith("recomputed")
    assert job.fraction == pytest.approx(1.0)
    assert state.model_or_job(selection).key == first.key
