"""Background jobs (core/jobs.py) and how the app's state hands work to them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

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


@pytest.mark.slow
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
    sound = f.read_bytes()
    f.write_bytes(sound[:-100])
    job = state.model_or_job(selection)
    assert isinstance(job, Job)
    _wait(job)
    # retrained (in a worker process, which reports "recomputed"), then read back sound from the cache
    assert job.error is None and job.result.key == first.key and f.read_bytes() == sound
    assert job.fraction == pytest.approx(1.0)
    assert state.model_or_job(selection).key == first.key


def _square_with_progress(n: int, progress) -> int:
    for i in range(3):
        progress((i + 1) / 3, f"step {i + 1}")
    if n < 0:
        from core.errors import AttrexError
        raise AttrexError("negative")
    if n == 0:
        raise ValueError("zero")
    return n * n


def _sleep_forever(progress) -> None:
    progress(0.1, "sleeping")
    time.sleep(600)


@pytest.mark.slow
def test_work_in_a_worker_process_relays_progress_results_errors_and_cancellation():
    from core.errors import AttrexError
    from core.jobs import Cancelled, in_process

    seen = []
    assert in_process(_square_with_progress, 7, send_result=True)(lambda f, m: seen.append(m)) == 49
    assert list(dict.fromkeys(m for m in seen if m.startswith("step"))) == ["step 1", "step 2", "step 3"]
    assert in_process(_square_with_progress, 7)(lambda f, m: None) is None  # the result stays in the worker
    with pytest.raises(AttrexError, match="negative"):
        in_process(_square_with_progress, -1)(lambda f, m: None)
    with pytest.raises(RuntimeError, match="ValueError: zero"):
        in_process(_square_with_progress, 0)(lambda f, m: None)
    # cancelling: the job's progress raises, the worker is terminated
    runner = JobRunner()
    job = runner.run_or_job("w", "worker", load=lambda: None, work=in_process(_sleep_forever))
    deadline = time.time() + 60
    while job.message != "sleeping":
        assert time.time() < deadline, "the worker did not report"
        time.sleep(0.05)
    t0 = time.time()
    runner.cancel("w")
    _wait(job, timeout=10)
    assert job.error == "cancelled" and time.time() - t0 < 5
    assert issubclass(Cancelled, AttrexError)


def _report_pid_and_sleep(path: str, progress) -> None:
    Path(path).write_text(str(os.getpid()))
    progress(0.1, "sleeping")
    time.sleep(600)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its (init) parent to reap it has ended too
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return True


def test_a_worker_ends_when_the_server_that_started_it_is_killed(tmp_path):
    # the server: a process running a job in a worker; killed with SIGKILL, it cannot clean up
    pid_file = tmp_path / "worker.pid"
    code = ("import sys, time; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
            "from core.jobs import JobRunner, in_process\nfrom test_jobs import _report_pid_and_sleep\n"
            "JobRunner().run_or_job('w', 'worker', load=lambda: None, work=in_process(_report_pid_and_sleep, sys.argv[3]))\n"
            "time.sleep(600)\n")
    here = Path(__file__).resolve().parent
    server = subprocess.Popen([sys.executable, "-c", code, str(here.parent), str(here), str(pid_file)])
    try:
        deadline = time.time() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert time.time() < deadline and server.poll() is None, "the worker did not start"
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        assert _alive(worker)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        deadline = time.time() + 10  # measured: gone within 0.1 s of the kill
        while _alive(worker):
            assert time.time() < deadline, "the worker outlived its server"
            time.sleep(0.05)
    finally:
        server.kill()
