"""Long work (a training, a method's precompute) in background threads, one at a time.

A :class:`JobRunner` keeps one :class:`Job` per key: every caller asking for the same key
shares it, a finished job hands its result over once, and a failed one stays (with its
error) until it is forgotten. Jobs compute one after another: two at once would only split
the same cores. Nothing here knows about Streamlit; the app keeps one runner per process,
and a command-line tool can use one too.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from core.errors import AttrexError

Progress = Callable[[float, str], None]


class Cancelled(AttrexError):
    """Raised inside a job's work by its progress callback once the job was cancelled."""


@dataclass
class Job:
    """One piece of long work. ``label`` says what it is; ``result`` or ``error`` how it ended."""

    key: Hashable
    label: str
    work: Callable[[Progress], Any]
    fraction: float = 0.0
    message: str = "waiting for another computation to finish"
    result: Any = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    cancelled: bool = False

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def progress(self, fraction: float, message: str) -> None:
        """The callback handed to ``work``: what the job reports of itself. Raises :class:`Cancelled`
        once the job is cancelled, so work stops at its next report (nothing half-done is cached)."""
        if self.cancelled:
            raise Cancelled("cancelled")
        self.fraction, self.message = fraction, message

    def cancel(self) -> None:
        """Ask the work to stop at its next progress report (a job still waiting never starts)."""
        self.cancelled = True

    def run(self, lock: threading.Lock) -> None:
        """Run ``work`` once ``lock`` is free; record its result or, never silently, its error."""
        try:
            with lock:
                if self.cancelled:
                    raise Cancelled("cancelled before it started")
                self.started, self.message = time.time(), "starting"
                self.result = self.work(self.progress)
        except AttrexError as exc:
            self.error = str(exc)
        except Exception as exc:  # shown to the user, never a silent failure
            self.error = f"{type(exc).__name__}: {exc}"


class JobRunner:
    """Background jobs by key, computed one at a time (see the module docstring)."""

    def __init__(self) -> None:
        self.jobs: dict[Hashable, Job] = {}
        self._lock = threading.Lock()       # guards ``jobs``
        self._compute = threading.Lock()    # one computation at a time

    def run_or_job(self, key: Hashable, label: str, load: Callable[[], Any],
                   work: Callable[[Progress], Any]) -> Any:
        """``load()``'s result when it has one (not ``None``: ready, e.g. in the disk cache); else the :class:`Job`.

        A finished job hands over its result once and is dropped (later calls ``load`` it); a
        failed job is returned, with its error, until :meth:`forget`.
        """
        with self._lock:
            job = self.jobs.get(key)
            if job is not None:
                if not job.done or job.error:
                    return job
                del self.jobs[key]
                return job.result
        result = load()
        if result is not None:
            return result
        with self._lock:
            job = self.jobs.get(key)  # another caller may have started it meanwhile
            if job is None:
                job = self.jobs[key] = Job(key, label, work)
                threading.Thread(target=job.run, args=(self._compute,), name=f"attrex-{label}", daemon=True).start()
            return job

    def cancel(self, key: Hashable) -> None:
        """Cancel a running or waiting job; it ends with the error ``cancelled`` until forgotten."""
        with self._lock:
            job = self.jobs.get(key)
        if job is not None and not job.done:
            job.cancel()

    def forget(self, key: Hashable) -> None:
        """Drop a job (a failed one, so that the next call starts it afresh)."""
        with self._lock:
            self.jobs.pop(key, None)

    def busy(self) -> bool:
        """Whether any job is still running or waiting."""
        with self._lock:
            return any(not j.done for j in self.jobs.values())


def in_process(fn: Callable[..., Any], *args: Any, send_result: bool = False) -> Callable[[Progress], Any]:
    """Work that runs ``fn(*args, progress=...)`` in a spawned process and relays its progress.

    Long work in a thread of the app's server competes for the interpreter with every page's
    reruns (five open pages slowed a training more than fivefold); in a process of its own it
    competes only for the cores. ``fn`` and ``args`` must be picklable; the work returns
    ``fn``'s result if ``send_result`` (it must then be picklable), else ``None`` (the caller
    reads what ``fn`` left in the disk cache). Cancelling the job terminates the process, and the
    process ends by itself when the process that started it ends (a stopped or killed server).
    """
    def work(progress: Progress) -> Any:
        ctx = multiprocessing.get_context("spawn")
        messages = ctx.Queue()
        proc = ctx.Process(target=_child, args=(fn, args, messages, send_result),  # not daemonic: it may spawn
                           name=f"attrex-{getattr(fn, '__name__', 'work')}")
        proc.start()
        last = (0.0, "starting a worker process")
        try:
            while True:
                try:
                    kind, a, b = messages.get(timeout=0.25)
                except queue.Empty:
                    if not proc.is_alive():
                        raise RuntimeError(f"the worker process ended without a result (exit code {proc.exitcode})") from None
                    progress(*last)  # raises Cancelled once the job is cancelled
                    continue
                if kind == "progress":
                    last = (a, b)
                    progress(a, b)
                elif kind == "error":
                    raise (AttrexError(a) if b == "AttrexError" else RuntimeError(a))
                else:
                    return a
        except BaseException:
            proc.terminate()
            raise
        finally:
            proc.join(timeout=30)

    return work


def _child(fn: Callable[..., Any], args: tuple, messages: Any, send_result: bool) -> None:
    threading.Thread(target=_exit_with_parent, name="attrex-parent-watch", daemon=True).start()
    try:
        result = fn(*args, progress=lambda f, m: messages.put(("progress", f, m)))
        messages.put(("done", result if send_result else None, None))
    except AttrexError as exc:
        messages.put(("error", str(exc), "AttrexError"))
    except Exception as exc:  # reported to the job, never lost
        messages.put(("error", f"{type(exc).__name__}: {exc}", type(exc).__name__))


def _exit_with_parent() -> None:
    """In a worker: end the process once its parent (the app's server) is gone, however it ended.

    The worker is not daemonic (it may start processes of its own), so nothing else stops it
    when the server is killed; without this it would go on computing for nobody.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    multiprocessing.connection.wait([parent.sentinel])
    os._exit(3)
