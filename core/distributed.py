"""A method's sharded precompute as Ray tasks: one machine or a cluster (``attrex prepare --executor ray``).

The precompute of a shardable method (TracIn, GAS, GradDot, GradCos: per-sample gradients of
every training point) is split into contiguous shards of training rows
(:meth:`~core.methods.base.Attributor.fit_shard`). :func:`precompute` sends one Ray task per
shard missing from the cache; each task rebuilds the scenario from its spec, loads the model
from the cache (the driver trains or loads it first) or from the person's files, computes its
rows and writes them to the cache folder; the driver then merges the shards
(:meth:`~core.methods.base.Attributor.merge_shards`) into exactly what a single process
computes, and a query stays one matrix product.

- **Where**: ``address=None`` starts a local Ray instance with ``workers`` CPUs, listening on
  the loopback interface only (:func:`start_local`: Ray runs whatever code reaches its ports);
  an address (``ray://host:10001`` or ``host:6379``, a cluster started with ``ray start --head``)
  uses that cluster as it was started. Every worker must reach the cache folder (a shared file
  system) and the data; for a person's model, its files and its Python module, at the same paths.
- **Progress**: every task reports to a small progress actor; the driver polls it.
- **Failures**: a task whose worker dies (killed, out of memory) is retried by Ray up to
  ``retries`` times; a shard already in the cache is never recomputed, so an interrupted run
  resumes. An error in the work itself (bad data, a method that refuses) is not retried: it
  is reported with its shard.

Ray is an optional extra (``pip install "attrex[distributed]"``).
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.cache import Cache
from core.errors import AttrexError

Progress = Callable[[float, str], None]
POLL_SECONDS = 0.5


def _ray():
    try:
        import ray
    except ImportError:
        raise AttrexError('the Ray executor needs Ray: pip install "attrex[distributed]" (or pip install ray)') from None
    return ray


LOOPBACK = "127.0.0.1"


def start_local(workers: int | None = None, object_store_memory: int = 256 * 2**20) -> None:
    """Start a Ray instance on this machine with ``workers`` CPUs (all by default), reachable from this machine only.

    Ray's servers (GCS, raylet, object manager, every worker) listen on the loopback interface
    only when the node's address is a loopback one; otherwise on every interface, and whoever
    reaches those ports can run code here. ``ray.init(_node_ip_address="127.0.0.1")`` alone is
    not enough: Ray replaces a loopback address by the machine's routable one unless Ray clusters
    are switched off (``ray_constants.ENABLE_RAY_CLUSTER``, read from the environment when Ray is
    imported), so that switch is held off while the instance starts. A Ray that still takes
    another address is shut down and refused: start a cluster and pass its address instead.
    """
    ray = _ray()
    from ray._private import ray_constants

    clusters = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 object_store_memory=object_store_memory, configure_logging=False, _node_ip_address=LOOPBACK)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = clusters
    node = ray.util.get_node_ip_address()
    if node != LOOPBACK:
        ray.shutdown()
        raise AttrexError(f"Ray {ray.__version__} took the address {node} for a local instance, so it would listen "
                          "beyond this machine; start Ray yourself, on the network you intend (ray start --head), and pass its "
                          "address (--address)")


@dataclass
class ShardReport:
    """What one task did: its shard, rows, cache status, seconds, its worker's peak memory and host."""

    shard: int
    rows: tuple[int, int]
    status: str
    seconds: float
    peak_rss_mb: float
    host: str
    pid: int


def run_shard(spec, config, name: str, params: dict, shard: int, n: int, cache_root: str, cwd: str,
              reporter=None, fail_once: str | None = None) -> ShardReport:
    """One shard in a worker: rebuild, load, compute, cache. Module-level so Ray can ship it by reference.

    ``fail_once``: a test hook, the path of a marker file; the first task that finds it absent
    creates it and kills its own worker (``os._exit``), as a crash or an out-of-memory kill would.
    """
    from core.data import build
    from core.methods import TrainingData, create
    from core.models import train

    if cwd not in sys.path:  # a person's model module, importable from the driver's folder
        sys.path.append(cwd)
    if fail_once is not None and not os.path.exists(fail_once):
        open(fail_once, "w").close()
        os._exit(1)
    t0 = time.perf_counter()
    cache = Cache(cache_root)
    scenario = build(spec)
    trained = train(scenario, config, cache=cache)
    method = create(name, trained, TrainingData.of(scenario), cache=cache, **params)

    last = [0.0]

    def progress(fraction: float, message: str) -> None:  # at most twice a second: each report is a message to the actor
        if reporter is not None and (fraction >= 1 or time.perf_counter() - last[0] >= POLL_SECONDS):
            last[0] = time.perf_counter()
            reporter.report.remote(shard, fraction, message)

    art = method.fit_shard(shard, n, progress)
    progress(1.0, "done")
    return ShardReport(shard, tuple(method.shard_rows(shard, n, len(scenario.y_train))), art.status,
                       time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                       socket.gethostname(), os.getpid())


class _Reporter:
    """The progress actor: each shard's latest fraction and message."""

    def __init__(self, n: int):
        self.fractions = [0.0] * n
        self.messages = [""] * n

    def report(self, shard: int, fraction: float, message: str) -> None:
        self.fractions[shard], self.messages[shard] = fraction, message

    def state(self) -> tuple[list[float], list[str]]:
        return self.fractions, self.messages


def precompute(method, spec, config, shards: int | None = None, address: str | None = None, workers: int | None = None,
               retries: int = 3, progress: Progress | None = None, fail_once: str | None = None):
    """Fit ``method`` (built on the scenario of ``spec`` and the model of ``config``) with its shards as Ray
    tasks, merge them and return ``(method, reports)``. See the module docstring."""
    ray = _ray()
    if not method.shardable:
        from core.methods import REGISTRY

        names = ", ".join(sorted(n for n, c in REGISTRY.items() if c.shardable))
        raise AttrexError(f"method {method.name!r} cannot be precomputed in shards; the shardable ones are: {names}")
    if method.fit_cached():  # the merged precompute is in the cache already: nothing to run
        return method, []
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise AttrexError(f"workers must be a positive integer; got {workers!r}")
    if address is not None and workers is not None:
        raise AttrexError("--workers sizes a local Ray instance; a cluster (--address) has the CPUs it was started with")
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address is None:
                start_local(workers)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except AttrexError:
            raise
        except Exception as exc:  # ConnectionError, a timeout, a version mismatch ...
            raise AttrexError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {exc}") from None
    try:
        n = shards or max(1, int(ray.cluster_resources().get("CPU", 1)))
        method.shard_rows(0, n, len(method.data))  # at most one shard per training point
        cache = method.cache or Cache()
        todo = method.missing_shards(n)
        reporter = ray.remote(num_cpus=0)(_Reporter).remote(n)
        task = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=False)(run_shard)
        pending = {task.remote(spec, config, method.name, method.hparams, i, n, str(cache.root.resolve()),
                               os.getcwd(), reporter, fail_once): i for i in todo}
        reports: list[ShardReport] = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in done:
                i = pending.pop(ref)
                try:
                    reports.append(ray.get(ref))
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.as_instanceof_cause()
                    if isinstance(cause, AttrexError):
                        raise AttrexError(f"shard {i}/{n}: {cause}") from None
                    raise AttrexError(f"shard {i}/{n} failed: {type(cause).__name__}: {cause}") from None
                except ray.exceptions.RayError as exc:  # the worker died more often than retries allow
                    raise AttrexError(f"shard {i}/{n} failed after {retries} retries: {exc}") from None
            if progress:
                fractions, messages = ray.get(reporter.state.remote())
                left = [messages[i] for i in pending.values() if messages[i]]
                progress(0.95 * sum(fractions) / n, f"{n - len(pending)}/{n} shards done" +
                         (f" · {left[0]}" if left else ""))
        method.merge_shards(n, progress=(lambda f, m: progress(0.95 + 0.05 * f, f"merging: {m}")) if progress else None)
        return method, sorted(reports, key=lambda r: r.shard)
    finally:
        if started_here:
            ray.shutdown()
