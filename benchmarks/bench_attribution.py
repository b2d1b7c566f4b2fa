"""Benchmark of the attribution methods on a scenario's default model, against Captum's TracIn.

``python -m benchmarks.bench_attribution --scenario mnist`` measures, in one process, on the
scenario's default model and its checkpoints (it needs the test extra, for Captum:
``pip install -e ".[test]"``, or the environment ``make test`` sets up):

- per registered method (default parameters): the precompute time, in a fresh temporary
  cache so that it is really computed, and the time to score one test sample against every
  training point (single-sample queries on several test samples, after a warm-up query);
  a method whose fit or query fails is reported with its error and skipped;
- Captum's ``TracInCP`` (all parameters), ``TracInCPFast`` and ``TracInCPFastRandProj`` (last
  layer) on the same model, checkpoints and test samples: their preprocessing time where
  they have one, their query time, and the agreement of their scores with our exact
  ``tracin`` (top-k proponent overlap and Spearman rank correlation, per test sample);
- a sweep of ``tracin-rp``'s projected dimension against exact ``tracin``;
- on the full 60,000-image MNIST (``--full-mnist PATH``): training (cached), ``tracin-rp``'s
  precompute and its peak memory. That part runs in a fresh (spawned) child process, so that
  the peak is its own and not the rest of the benchmark's: Linux's ``VmHWM``, the high-water
  mark of the process's own memory (``ru_maxrss`` is not used there: Linux carries it over
  from the parent that forked the child, so it would report the benchmark's memory);
- the project's targets, each reported as pass or fail.

Timings are wall clock (``time.perf_counter``): on a shared machine they are noisy, so every
comparison with Captum is a ratio of times taken in the same process, and the load average
is reported with them.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks._proc import status_kib
from core.cache import Cache
from core.data import PRESETS, build, get_spec
from core.errors import AttrexError
from core.metrics.agreement import top_k_overlap_rows
from core.stats import rankdata, spearman  # noqa: F401  (rankdata: part of this module's API)

TARGET_QUERY_MS = 50.0
TARGET_SPEEDUP = 10.0
TARGET_RP_OVERLAP = 8.0
TARGET_PEAK_GB = 2.0
TARGET_FLIA_SECONDS = 2.0
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FULL_MNIST = REPO_ROOT.parent / "shared" / "data"

Log = Callable[[str], None]


@dataclass
class BenchOptions:
    """What to run. ``methods=None`` benchmarks every registered method.

    ``points``: test samples each method is queried on, one at a time (timed, and used for
    the agreement with exact TracIn); ``captum_cp_points`` of them also go to Captum's slow
    ``TracInCP``. ``full_mnist``: ``"auto"`` (the shared data folder if present), a folder
    holding ``mnist.npz``, or ``None`` to skip. ``n_train`` / ``epochs`` shrink the setting
    (tests); ``cache_dir`` is where the model is cached (methods always use a fresh cache).
    """

    scenario: str = "mnist"
    methods: list[str] | None = None
    points: int = 5
    k: int = 10
    captum: bool = True
    captum_cp_points: int = 2
    dims: tuple[int, ...] = (512, 1024, 2048, 4096)
    full_mnist: str | None = "auto"
    full_mnist_verify: bool = True
    n_train: int | None = None
    epochs: int | None = None
    cache_dir: str | None = None
    slow_query_s: float = 5.0  # a method whose warm-up query is slower is timed on one sample only

    def __post_init__(self) -> None:
        if not isinstance(self.points, int) or self.points < 1:
            raise AttrexError(f"the number of test points must be a positive integer; got {self.points!r}")
        if not isinstance(self.k, int) or self.k < 1:
            raise AttrexError(f"k must be a positive integer; got {self.k!r}")
        if not isinstance(self.captum_cp_points, int) or not 0 <= self.captum_cp_points <= self.points:
            raise AttrexError(f"captum_cp_points must lie in [0, {self.points}]; got {self.captum_cp_points!r}")
        for d in self.dims:
            if not isinstance(d, int) or d < 16:
                raise AttrexError(f"projection dimensions must be integers >= 16; got {d!r}")


# ----------------------------------------------------------------------------- statistics


def agreement(scores: torch.Tensor, reference: torch.Tensor | None, k: int) -> dict | None:
    """Per-row top-k overlap and Spearman of ``scores`` with ``reference`` (rows: test points), and their means.

    The overlap is :func:`core.metrics.agreement.top_k_overlap_rows`: ties at the boundary of a top k count by
    their chance, so it is a whole number only where the top k are unambiguous.
    """
    if reference is None or scores is None:
        return None
    ref = reference[: len(scores)]
    overlaps = top_k_overlap_rows(scores, ref, min(k, ref.shape[1]))
    rhos = [spearman(s, r) for s, r in zip(scores, ref, strict=True)]
    finite = [r for r in rhos if math.isfinite(r)]
    return {"k": k, "topk_overlap": overlaps, "topk_overlap_mean": sum(overlaps) / len(overlaps),
            "identical_topk": all(o == min(k, ref.shape[1]) for o in overlaps),
            "spearman": rhos, "spearman_mean": sum(finite) / len(finite) if finite else float("nan")}


def _counts(overlaps: list[float] | None) -> str:
    """Per-point overlaps as ``[10, 9, 9.5]`` (whole where they are)."""
    return "None" if overlaps is None else "[" + ", ".join(f"{o:g}" for o in overlaps) + "]"


def timing(seconds: list[float]) -> dict:
    """Median, min and count of query times, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "n": len(ms)} if ms else {"n": 0}


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def _rss_gb(kb: int) -> float:
    """``ru_maxrss`` (kilobytes on Linux, bytes on macOS) in GB."""
    return kb * (1 if sys.platform == "darwin" else 1024) / 1e9


# ----------------------------------------------------------------------------- our methods


def _query_each(score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, target: torch.Tensor,
                warmup: torch.Tensor | None, slow_s: float) -> tuple[torch.Tensor, list[float]]:
    """Score the rows of ``x`` one at a time: ``(scores [n, n_train], seconds per query)``.

    A warm-up query on ``warmup`` comes first (untimed); when it is slower than ``slow_s``
    only the first row is queried.
    """
    if warmup is not None:
        t0 = time.perf_counter()
        score(warmup[:1], None)
        if time.perf_counter() - t0 > slow_s:
            x, target = x[:1], target[:1]
    rows, seconds = [], []
    for i in range(len(x)):
        t0 = time.perf_counter()
        rows.append(score(x[i: i + 1], target[i: i + 1]).detach().double())
        seconds.append(time.perf_counter() - t0)
    return torch.cat(rows), seconds


def bench_method(name: str, trained, data, x: torch.Tensor, target: torch.Tensor, warmup: torch.Tensor,
                 reference: torch.Tensor | None, opts: BenchOptions, log: Log, keep: bool = False,
                 **params: Any) -> tuple[dict, Any]:
    """Fit ``name`` in a fresh temporary cache and time single-sample queries; ``(record, method or None)``."""
    from core.methods import create

    record: dict[str, Any] = {"name": name, "params": params or "defaults", "error": None}
    method = None
    with tempfile.TemporaryDirectory(prefix="attrex-bench-") as tmp:
        try:
            method = create(name, trained, data, cache=Cache(tmp), **params)
            record["params"] = method.hparams
            log(f"fit {name} {params or ''}")
            t0 = time.perf_counter()
            method.fit()
            record["fit_wall_seconds"] = time.perf_counter() - t0
            record["fit_seconds"] = method.fit_seconds
            record["fit_status"] = method.fit_status
            record["info"] = _jsonable(method.info)
        except Exception as exc:  # noqa: BLE001  (any failure is reported and the method skipped)
            record["error"] = _error(exc)
            record["stage"] = "fit"
            log(f"  {name}: fit failed, skipped ({record['error']})")
            return record, None
        try:
            scores, seconds = _query_each(method.scores, x, target, warmup, opts.slow_query_s)
        except Exception as exc:  # noqa: BLE001
            record["error"] = _error(exc)
            record["stage"] = "query"
            log(f"  {name}: query failed, skipped ({record['error']})")
            return record, None
    record["query"] = timing(seconds)
    record["query_seconds"] = seconds
    try:
        record["agreement_with_tracin"] = agreement(scores, reference, opts.k) if name != "tracin" else None
    except AttrexError as exc:  # scores that are not finite numbers
        record["error"], record["stage"] = _error(exc), "agreement"
        log(f"  {name}: agreement failed, skipped ({record['error']})")
        return record, None
    record["_scores"] = scores
    log(f"  {name}: fit {record['fit_wall_seconds']:.1f} s, query {record['query']['median_ms']:.1f} ms")
    return record, method if keep else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 64 else f"tensor{list(value.shape)}"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# ----------------------------------------------------------------------------- Captum


class _ExactNeighbors:
    """Exact largest-dot-product search for ``TracInCPFastRandProj`` (in place of its Annoy default).

    Implements Captum's ``NearestNeighbors`` interface (``setup`` / ``get_nearest_neighbors``);
    the benchmark queries full score vectors (``k=None``), so this is only set up, never searched.
    """

    def setup(self, data: torch.Tensor) -> None:
        self.data = data.flatten(1)

    def get_nearest_neighbors(self, query: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        top = (query.flatten(1) @ self.data.T).topk(k, dim=1)
        return top.indices, top.values


def _captum_checkpoints(trained, folder: Path) -> tuple[list[str], Callable]:
    """The checkpoints as files, and the loader Captum calls (it returns the checkpoint's learning rate)."""
    paths = []
    for c in trained.checkpoints:
        path = folder / f"checkpoint-{c.index}.pt"
        torch.save({"state": c.state, "lr": c.lr}, path)
        paths.append(str(path))

    def load(model: torch.nn.Module, path: str) -> float:
        ckpt = torch.load(path, weights_only=True)
        model.load_state_dict(ckpt["state"])
        return float(ckpt["lr"])

    return paths, load


def bench_captum(trained, data, x: torch.Tensor, target: torch.Tensor, warmup: torch.Tensor,
                 reference: torch.Tensor | None, opts: BenchOptions, log: Log) -> dict:
    """Captum's three TracIn implementations on the same model, checkpoints and test samples."""
    try:
        import captum
        from captum.influence import TracInCP, TracInCPFast, TracInCPFastRandProj
    except ImportError as exc:
        return {"available": False, "error": _error(exc), "variants": []}
    from torch.utils.data import TensorDataset

    out: dict[str, Any] = {"available": True, "version": captum.__version__, "variants": []}
    dataset = TensorDataset(data.x, data.y)
    with tempfile.TemporaryDirectory(prefix="attrex-captum-") as tmp, warnings.catch_warnings():
        # Captum warns that test inputs get requires_grad set, and that TracInCPFastRandProj keeps
        # its training quantities in memory: both known and expected here
        warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\.")
        paths, load = _captum_checkpoints(trained, Path(tmp))
        head = "head"
        # Captum's rules: with sample_wise_grads_per_batch=True the loss must reduce by sum (or
        # mean); the TracInCPFast family needs a "sum" reduction.
        variants = [
            ("TracInCP", "all parameters (sample-wise gradient trick, CrossEntropyLoss(reduction='sum'))",
             lambda: TracInCP(trained.model_at(0), dataset, paths, checkpoints_load_func=load,
                              loss_fn=torch.nn.CrossEntropyLoss(reduction="sum"), batch_size=256,
                              sample_wise_grads_per_batch=True), opts.captum_cp_points, False),
            ("TracInCPFast", "last layer (head.weight; Captum leaves out its bias)",
             lambda: TracInCPFast(trained.model_at(0), head, dataset, paths, checkpoints_load_func=load,
                                  loss_fn=torch.nn.CrossEntropyLoss(reduction="sum"), batch_size=1024),
             opts.points, True),
            ("TracInCPFastRandProj", "last layer (head.weight), Captum's default projection_dim=None "
             "(no projection), exact nearest neighbours (Annoy not used)",
             lambda: TracInCPFastRandProj(trained.model_at(0), head, dataset, paths, checkpoints_load_func=load,
                                          loss_fn=torch.nn.CrossEntropyLoss(reduction="sum"), batch_size=1024,
                                          nearest_neighbors=_ExactNeighbors()), opts.points, True),
        ]
        for name, scope, make, n_points, warm in variants:
            rec: dict[str, Any] = {"name": name, "scope": scope, "error": None}
            if n_points == 0:
                rec["error"] = "skipped (0 test points asked for)"
                out["variants"].append(rec)
                continue
            try:
                log(f"captum {name}")
                t0 = time.perf_counter()
                impl = make()
                rec["preprocess_seconds"] = time.perf_counter() - t0 if name == "TracInCPFastRandProj" else None

                def score(xb, tb, impl=impl):
                    if tb is None:
                        tb = trained.model(xb).argmax(1)
                    return impl.influence((xb, tb), k=None)

                scores, seconds = _query_each(score, x[:n_points], target[:n_points],
                                              warmup if warm else None, float("inf"))
                rec["query"] = timing(seconds)
                rec["query_seconds"] = seconds
                rec["agreement_with_tracin"] = agreement(scores, reference, opts.k)
                log(f"  {name}: query {rec['query']['median_ms']:.1f} ms")
            except Exception as exc:  # noqa: BLE001
                rec["error"] = _error(exc)
                log(f"  {name} failed: {rec['error']}")
            out["variants"].append(rec)
            gc.collect()
    return out



# ----------------------------------------------------------------------------- FLIA


def bench_flia(trained, data, x: torch.Tensor, target: torch.Tensor, reference: torch.Tensor | None, log: Log) -> dict:
    """Time FLIA (10 descent steps, uncached) for one pair per test point: the point and its top TracIn proponent."""
    from core.features import FLIA

    if not trained.checkpoints:
        return {"error": "the model has no checkpoints"}
    seconds, gaps = [], []
    for r in range(len(x)):
        j = int(reference[r].argmax()) if reference is not None else r
        t0 = time.perf_counter()
        ex = FLIA(trained, x[r], int(target[r]))
        res = ex.run(data.x[j: j + 1], data.y[j: j + 1])
        seconds.append(time.perf_counter() - t0)
        gaps.append(float(res.gap[0]))
    log(f"  FLIA: {_median(seconds):.2f} s per pair (median of {len(seconds)})")
    return {"seconds": seconds, "median_seconds": _median(seconds), "gap_median": _median(gaps),
            "steps": 10, "pairs": "each test point with its top exact-TracIn proponent"}


# ----------------------------------------------------------------------------- full MNIST (child process)


def _status_gb(field: str) -> float | None:
    """A memory figure of this process (``VmRSS``, ``VmHWM``) in GB, or ``None`` where there is no ``/proc``."""
    kib = status_kib(field)
    return None if kib is None else kib * 1024 / 1e9


def _peak_gb() -> float:
    """This process's own peak resident memory: ``VmHWM`` where there is ``/proc``, else ``ru_maxrss``."""
    hwm = _status_gb("VmHWM")
    return hwm if hwm is not None else _rss_gb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _full_mnist_child(path: str, dim: int, cache_dir: str | None, threads: int, queue: Any) -> None:
    """Build the full MNIST, train its default model (cached), fit ``tracin-rp`` at ``dim``; report on ``queue``."""
    try:
        torch.set_num_threads(threads)  # as many as the parent uses (a spawned child starts with torch's default)
        from core.methods import TrainingData, create
        from core.models import train

        out: dict[str, Any] = {"dim": dim}
        scenario = build(get_spec("mnist", data_dir=path))
        out["n_train"] = len(scenario.y_train)
        t0 = time.perf_counter()
        trained = train(scenario, cache=Cache(cache_dir) if cache_dir else None)
        out.update(model_cache=trained.cache_status, model_seconds=time.perf_counter() - t0,
                   test_accuracy=trained.test_accuracy)
        gc.collect()
        out["rss_before_fit_gb"] = _status_gb("VmRSS")
        out["peak_before_fit_gb"] = _peak_gb()
        with tempfile.TemporaryDirectory(prefix="attrex-bench-full-") as tmp:
            method = create("tracin-rp", trained, TrainingData.of(scenario), cache=Cache(tmp), dim=dim)
            t0 = time.perf_counter()
            method.fit()
            out["fit_seconds"] = time.perf_counter() - t0
            x = scenario.x_test[:6]
            method.scores(x[:1])
            seconds = []
            for i in range(1, 6):
                t0 = time.perf_counter()
                method.scores(x[i: i + 1])
                seconds.append(time.perf_counter() - t0)
            out["query"] = timing(seconds)
            out["cache_bytes"] = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
        out["peak_rss_gb"] = _peak_gb()
        queue.put(out)
    except BaseException as exc:  # noqa: BLE001  (reported to the parent, which decides)
        queue.put({"dim": dim, "error": _error(exc), "traceback": traceback.format_exc(limit=4)})


def _run_full_mnist_child(path: str, dim: int, cache_dir: str | None, log: Log) -> dict:
    """Run :func:`_full_mnist_child` in a fresh process (spawned: nothing inherited) and collect its report."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_full_mnist_child, args=(path, dim, cache_dir, torch.get_num_threads(), queue),
                       daemon=True)
    log(f"full MNIST: tracin-rp dim={dim} in a child process (trains the 60,000-image model unless cached)")
    proc.start()
    result = None
    while result is None and (proc.is_alive() or not queue.empty()):
        try:
            result = queue.get(timeout=2)
        except Exception:  # noqa: BLE001  (queue.Empty: keep waiting while the child lives)
            continue
    proc.join()
    if result is None:
        result = {"dim": dim, "error": f"the child process died with exit code {proc.exitcode} "
                  "(killed for memory?)"}
    return result


def bench_full_mnist(path: str | None, dim: int, opts: BenchOptions, log: Log) -> dict:
    """Peak memory of ``tracin-rp`` on the full MNIST; if the default ``dim`` breaks the target, the dim that fits."""
    if path is None:
        return {"status": "skipped", "detail": "not asked for"}
    folder = Path(path).expanduser().resolve()
    if not (folder / "mnist.npz").is_file() and not (folder / "MNIST").is_dir():
        return {"status": "absent", "path": str(folder), "detail": f"no full MNIST in {folder}"}
    rec: dict[str, Any] = {"status": "done", "path": str(folder), "target_gb": TARGET_PEAK_GB, "runs": []}
    first = _run_full_mnist_child(str(folder), dim, opts.cache_dir, log)
    rec["runs"].append(first)
    if "error" in first:
        rec["status"] = "failed"
        return rec
    rec["peak_rss_gb"] = first["peak_rss_gb"]
    rec["pass"] = first["peak_rss_gb"] <= TARGET_PEAK_GB
    if not rec["pass"]:
        # memory beyond the process before the fit grows with the projected dimension: the
        # cached projections are n_train x checkpoints x dim floats
        base = first.get("rss_before_fit_gb") or 0.0
        per_dim = max(first["peak_rss_gb"] - base, 1e-9) / dim
        fit = max(16, int((TARGET_PEAK_GB - base) / per_dim))
        fit = 1 << int(math.log2(fit)) if fit >= 16 else 16
        rec["estimated_fitting_dim"] = fit
        if opts.full_mnist_verify and fit < dim:
            second = _run_full_mnist_child(str(folder), fit, opts.cache_dir, log)
            rec["runs"].append(second)
            if "error" not in second:
                rec["fitting_dim_verified"] = second["peak_rss_gb"] <= TARGET_PEAK_GB
    return rec


# ----------------------------------------------------------------------------- the whole benchmark


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _targets(records: dict[str, dict], captum: dict, full: dict, opts: BenchOptions, flia: dict | None = None) -> list[dict]:
    from core.methods.defaults import default_methods

    out: list[dict] = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        out.append({"target": name, "pass": ok, "detail": detail})

    ref = records.get("tracin")
    cp = next((v for v in captum.get("variants", []) if v["name"] == "TracInCP"), None)
    name = f"exact tracin >= {TARGET_SPEEDUP:g}x faster per query than Captum TracInCP, identical top-{opts.k}"
    if ref is None or ref.get("error"):
        add(name, None, "exact tracin not measured" + (f": {ref['error']}" if ref else ""))
    elif not captum.get("available") or cp is None or cp.get("error"):
        add(name, None, "Captum TracInCP not measured" + (f": {cp['error']}" if cp else ""))
    else:
        n = len(cp["query_seconds"])
        ratio = _median(cp["query_seconds"]) / _median(ref["query_seconds"][:n])
        agree = cp["agreement_with_tracin"]
        ok = ratio >= TARGET_SPEEDUP and agree["identical_topk"]
        add(name, ok, f"{ratio:.0f}x faster on the same {n} test sample(s); top-{opts.k} overlap "
            f"{_counts(agree['topk_overlap'])} (Spearman {agree['spearman_mean']:.6f})")

    rp = records.get("tracin-rp")
    name = (f"tracin-rp <= {TARGET_QUERY_MS:g} ms per query with >= {TARGET_RP_OVERLAP:g} of exact tracin's "
            f"top-{opts.k}")
    if rp is None or rp.get("error") or not rp.get("agreement_with_tracin"):
        add(name, None, "not measured" + (f": {rp['error']}" if rp and rp.get("error") else ""))
    else:
        a = rp["agreement_with_tracin"]
        ms = rp["query"]["median_ms"]
        ok = ms <= TARGET_QUERY_MS and a["topk_overlap_mean"] >= TARGET_RP_OVERLAP
        add(name, ok, f"{ms:.1f} ms median; top-{opts.k} overlap {a['topk_overlap_mean']:.1f} "
            f"(per point {_counts(a['topk_overlap'])}); Spearman {a['spearman_mean']:.4f}")

    for m in default_methods("bench-fast"):
        rec = records.get(m)
        if rec is None:
            continue  # not registered, or not among --methods
        name = f"{m} <= {TARGET_QUERY_MS:g} ms per query after fit"
        if rec.get("error"):
            add(name, None, f"not measured: {rec['error']}")
        else:
            ms = rec["query"]["median_ms"]
            add(name, ms <= TARGET_QUERY_MS, f"{ms:.1f} ms median over {rec['query']['n']} queries "
                f"(min {rec['query']['min_ms']:.1f} ms)")

    name = f"FLIA for one pair (10 steps, all checkpoints) <= {TARGET_FLIA_SECONDS:g} s"
    if not flia or flia.get("error"):
        add(name, None, (flia or {}).get("error", "not measured"))
    else:
        add(name, flia["median_seconds"] <= TARGET_FLIA_SECONDS,
            f"{flia['median_seconds']:.2f} s median over {len(flia['seconds'])} pairs")

    name = f"full MNIST (60,000 train): tracin-rp peak memory <= {TARGET_PEAK_GB:g} GB"
    if full.get("status") == "done":
        run0 = full["runs"][0]
        detail = f"peak {full['peak_rss_gb']:.2f} GB at dim {run0['dim']}"
        if "estimated_fitting_dim" in full:
            detail += f"; dim {full['estimated_fitting_dim']} would fit"
            if "fitting_dim_verified" in full:
                peak = full["runs"][1]["peak_rss_gb"]
                detail += f" (measured: peak {peak:.2f} GB)"
        add(name, full["pass"], detail)
    else:
        add(name, None, f"{full.get('status')}: {full.get('detail') or full.get('runs', [{}])[-1].get('error')}")
    return out


def run(opts: BenchOptions | None = None, log: Log | None = None) -> dict:
    """Run the benchmark (see the module docstring) and return its report as a JSON-able dict."""
    from core.methods import REGISTRY, TrainingData
    from core.models import default_config, predict, train

    opts = opts or BenchOptions()
    log = log or (lambda message: None)
    names = list(REGISTRY) if opts.methods is None else list(dict.fromkeys(opts.methods))
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise AttrexError(f"unknown method(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(sorted(REGISTRY))}")
    t_start = time.perf_counter()
    load_start = os.getloadavg()

    spec = get_spec(opts.scenario, n_train=opts.n_train)
    scenario = build(spec)
    config = default_config(spec.dataset, epochs=opts.epochs)
    log(f"model: {config.arch} on {spec.name} ({len(scenario.y_train)} train), trained or loaded from the cache")
    trained = train(scenario, config, cache=Cache(opts.cache_dir) if opts.cache_dir else None)
    data = TrainingData.of(scenario)
    if len(scenario.y_test) < opts.points + 1:
        raise AttrexError(f"the scenario has {len(scenario.y_test)} test samples; {opts.points + 1} are needed")
    x = scenario.x_test[: opts.points]
    target = predict(trained.model, x).argmax(1)
    warmup = scenario.x_test[opts.points: opts.points + 1]

    report: dict[str, Any] = {
        "scenario": spec.name, "n_train": len(scenario.y_train), "test_points": list(range(opts.points)),
        "explained_classes": target.tolist(), "k": opts.k,
        "model": trained.summary(),
        "machine": {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__},
        "options": _jsonable(asdict(opts)),
    }

    records: dict[str, dict] = {}
    ref_rec, _ = bench_method("tracin", trained, data, x, target, warmup, None, opts, log)
    reference = ref_rec.pop("_scores", None)
    if ref_rec.get("error"):
        log(f"exact tracin failed ({ref_rec['error']}): no agreement figures")
    if "tracin" in names:
        records["tracin"] = ref_rec
    for name in names:
        if name == "tracin":
            continue
        rec, _ = bench_method(name, trained, data, x, target, warmup, reference, opts, log)
        rec.pop("_scores", None)
        records[name] = rec
        gc.collect()

    captum = (bench_captum(trained, data, x, target, warmup, reference, opts, log) if opts.captum
              else {"available": False, "error": "skipped (--no-captum)", "variants": []})

    # speed ratios: each Captum variant's median query time over each method's, on the same samples
    for rec in [ref_rec, *records.values()]:
        if rec.get("error"):
            continue
        rec["captum_query_time_ratio"] = {
            v["name"]: _median(v["query_seconds"]) / _median(rec["query_seconds"][: len(v["query_seconds"])])
            for v in captum["variants"] if not v.get("error")}

    log("FLIA for one pair (10 steps, uncached)")
    flia_rec = bench_flia(trained, data, x, target, reference, log)

    sweep = []
    if "tracin-rp" in REGISTRY and opts.dims:
        default_dim = next(p.default for p in REGISTRY["tracin-rp"].params if p.name == "dim")
        for dim in opts.dims:
            if dim == default_dim and "tracin-rp" in records and not records["tracin-rp"].get("error"):
                rec = records["tracin-rp"]
            else:
                rec, _ = bench_method("tracin-rp", trained, data, x, target, warmup, reference, opts, log, dim=dim)
                rec.pop("_scores", None)
            sweep.append({"dim": dim, "error": rec.get("error"), "fit_seconds": rec.get("fit_wall_seconds"),
                          "query": rec.get("query"), "agreement_with_tracin": rec.get("agreement_with_tracin")})
            gc.collect()

    full_path = opts.full_mnist
    if full_path == "auto":
        full_path = str(DEFAULT_FULL_MNIST) if (DEFAULT_FULL_MNIST / "mnist.npz").is_file() else None
        if full_path is None:
            full = {"status": "absent", "detail": f"no full MNIST at {DEFAULT_FULL_MNIST} (pass --full-mnist PATH)"}
    if full_path is not None:
        dim = next((p.default for p in REGISTRY["tracin-rp"].params if p.name == "dim"), 2048) \
            if "tracin-rp" in REGISTRY else 2048
        full = bench_full_mnist(full_path, dim, opts, log)
    elif opts.full_mnist != "auto":
        full = {"status": "skipped", "detail": "not asked for (--full-mnist none)"}

    ref_rec.pop("_scores", None)
    report["reference"] = ref_rec
    report["methods"] = list(records.values())
    report["captum"] = captum
    report["dim_sweep"] = sweep
    report["full_mnist"] = full
    report["flia"] = flia_rec
    report["targets"] = _targets({"tracin": ref_rec, **records}, captum, full, opts, flia_rec)
    report["machine"]["load_average"] = {"start": list(load_start), "end": list(os.getloadavg())}
    report["seconds"] = time.perf_counter() - t_start
    return _jsonable(report)


# ----------------------------------------------------------------------------- output


def _f(value: Any, fmt: str, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or isinstance(value, str):
        return missing
    return format(value, fmt)


def format_report(r: dict) -> str:
    """The report as readable tables."""
    lines = []
    m = r["model"]
    load = r["machine"]["load_average"]
    lines.append(f"bench · {r['scenario']} · {r['n_train']} train · {m['arch']} "
                 f"(test accuracy {m['test_accuracy']:.4f}) · {len(m['checkpoints'])} checkpoints · "
                 f"{len(r['test_points'])} test points, k={r['k']}")
    lines.append(f"torch {r['machine']['torch']}, {r['machine']['torch_threads']} threads, "
                 f"{r['machine']['cpu_count']} CPUs; load average {load['start'][0]:.1f} -> {load['end'][0]:.1f} "
                 "(timings are wall clock: compare within this run)")
    k = r["k"]
    lines.append("")
    head = (f"{'method':<22}{'fit s':>9}{'query ms':>10}{'min ms':>9}{'n':>3}{f'top-{k}':>8}{'Spearman':>10}"
            f"{'TracInCP/x':>12}{'FastRP/x':>10}")
    lines.append(head)
    lines.append("-" * len(head))
    for rec in [r["reference"], *[x for x in r["methods"] if x["name"] != "tracin"]]:
        if rec.get("error"):
            lines.append(f"{rec['name']:<22}  skipped ({rec.get('stage', '')} failed): {rec['error'][:100]}")
            continue
        a = rec.get("agreement_with_tracin") or {}
        q = rec["query"]
        ratio = rec.get("captum_query_time_ratio", {})
        name = rec["name"] + (" (reference)" if rec is r["reference"] else "")
        lines.append(f"{name:<22}{_f(rec['fit_wall_seconds'], '9.1f'):>9}{_f(q['median_ms'], '10.1f'):>10}"
                     f"{_f(q['min_ms'], '9.1f'):>9}{q['n']:>3}{_f(a.get('topk_overlap_mean'), '8.1f'):>8}"
                     f"{_f(a.get('spearman_mean'), '10.4f'):>10}{_f(ratio.get('TracInCP'), '11.1f'):>11}x"
                     f"{_f(ratio.get('TracInCPFastRandProj'), '9.1f'):>9}x")
    lines.append("  TracInCP/x, FastRP/x: Captum's median query time divided by the method's, same test samples")

    c = r["captum"]
    lines.append("")
    if not c.get("available"):
        lines.append(f"Captum: not run ({c.get('error')})")
    else:
        lines.append(f"Captum {c['version']} on the same model, checkpoints and test samples")
        head = f"{'variant':<22}{'prep s':>8}{'query ms':>11}{'n':>3}{f'top-{k}':>8}{'Spearman':>10}  scope"
        lines.append(head)
        lines.append("-" * len(head))
        for v in c["variants"]:
            if v.get("error"):
                lines.append(f"{v['name']:<22}  failed: {v['error'][:110]}")
                continue
            a = v.get("agreement_with_tracin") or {}
            lines.append(f"{v['name']:<22}{_f(v.get('preprocess_seconds'), '8.1f'):>8}"
                         f"{_f(v['query']['median_ms'], '11.1f'):>11}{v['query']['n']:>3}"
                         f"{_f(a.get('topk_overlap_mean'), '8.1f'):>8}{_f(a.get('spearman_mean'), '10.4f'):>10}"
                         f"  {v['scope']}")

    if r["dim_sweep"]:
        lines.append("")
        lines.append("tracin-rp projected dimension vs exact tracin")
        head = f"{'dim':>6}{'fit s':>9}{'query ms':>10}{f'top-{k}':>8}{'Spearman':>10}  per point"
        lines.append(head)
        lines.append("-" * len(head))
        for s in r["dim_sweep"]:
            if s.get("error"):
                lines.append(f"{s['dim']:>6}  failed: {s['error'][:100]}")
                continue
            a = s.get("agreement_with_tracin") or {}
            lines.append(f"{s['dim']:>6}{_f(s['fit_seconds'], '9.1f'):>9}{_f(s['query']['median_ms'], '10.1f'):>10}"
                         f"{_f(a.get('topk_overlap_mean'), '8.1f'):>8}{_f(a.get('spearman_mean'), '10.4f'):>10}"
                         f"  {_counts(a.get('topk_overlap'))}")

    fl = r.get("flia") or {}
    lines.append("")
    if fl.get("error"):
        lines.append(f"FLIA: not measured ({fl['error']})")
    elif fl:
        lines.append(f"FLIA, one pair (10 descent steps, uncached; {fl['pairs']}): "
                     f"{fl['median_seconds']:.2f} s median, completeness gap median {fl['gap_median']:.3f}")

    f = r["full_mnist"]
    lines.append("")
    if f.get("status") == "done" or f.get("runs"):
        lines.append(f"full MNIST ({f['path']})")
        for run_ in f.get("runs", []):
            if run_.get("error"):
                lines.append(f"  dim {run_['dim']}: failed: {run_['error']}")
                continue
            lines.append(f"  dim {run_['dim']}: {run_['n_train']} train; model {run_['model_cache']} "
                         f"({run_['model_seconds']:.0f} s, test accuracy {run_['test_accuracy']:.4f}); "
                         f"fit {run_['fit_seconds']:.0f} s; query {run_['query']['median_ms']:.1f} ms; "
                         f"cache {run_['cache_bytes'] / 1e9:.2f} GB; RSS before fit "
                         f"{_f(run_.get('rss_before_fit_gb'), '.2f')} GB; peak {run_['peak_rss_gb']:.2f} GB")
    else:
        lines.append(f"full MNIST: {f.get('status')} ({f.get('detail')})")

    lines.append("")
    lines.append("targets")
    for t in r["targets"]:
        mark = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
        lines.append(f"  [{mark}] {t['target']}: {t['detail']}")
    lines.append(f"\ndone in {r['seconds']:.0f} s")
    return "\n".join(lines)


def _int_list(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise AttrexError(f"--dims takes comma-separated integers (e.g. 512,1024) or none; got {text!r}") from None


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_attribution.py",
                                description="time every method and Captum's TracIn on a scenario's default model")
    p.add_argument("--scenario", default="mnist", help=f"one of: {', '.join(PRESETS)} (default mnist)")
    p.add_argument("--methods", help="comma-separated method names (default: every registered method)")
    p.add_argument("--repeats", type=int, default=5, help="test samples each method is queried on, one at a time "
                   "(timed and used for the agreement with exact tracin; default 5)")
    p.add_argument("--captum-queries", type=int, default=2,
                   help="of those, how many go to Captum's slow TracInCP (default 2; 0 skips it)")
    p.add_argument("--no-captum", action="store_true", help="skip the Captum comparison")
    p.add_argument("--k", type=int, default=10, help="top-k for the agreement figures (default 10)")
    p.add_argument("--dims", default="512,1024,2048,4096",
                   help="tracin-rp projected dimensions to sweep against exact tracin (or none)")
    p.add_argument("--full-mnist", default="auto", metavar="PATH",
                   help="folder with the full MNIST (mnist.npz) for the peak-memory run; default: ../shared/data "
                   "if present; none skips it")
    p.add_argument("--no-verify", action="store_true",
                   help="do not re-run full MNIST at the projected dimension estimated to fit the memory target")
    p.add_argument("--n-train", type=int, help="class-balanced subset of the training split (a quick run)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the data set's)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--cache-dir", help="model cache folder (methods always use a fresh temporary cache)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return p


def _run(args: argparse.Namespace) -> int:
    if args.threads is not None and args.threads < 1:
        raise AttrexError(f"--threads must be a positive integer; got {args.threads}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    full = args.full_mnist
    opts = BenchOptions(
        scenario=args.scenario, methods=methods, points=args.repeats, k=args.k, captum=not args.no_captum,
        captum_cp_points=min(args.captum_queries, args.repeats), dims=_int_list(args.dims),
        full_mnist=None if full.lower() == "none" else full, full_mnist_verify=not args.no_verify,
        n_train=args.n_train, epochs=args.epochs, cache_dir=args.cache_dir)

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    threads = torch.get_num_threads()
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        report = run(opts, log)
    finally:
        torch.set_num_threads(threads)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line; bad input exits with status 2 and a message, as ``attrex`` does."""
    args = make_parser().parse_args(argv)
    try:
        return _run(args)
    except AttrexError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # the guard matters: the full-MNIST run spawns a child process that imports this file
    sys.exit(main())
