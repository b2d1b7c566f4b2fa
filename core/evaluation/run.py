"""The run: :func:`evaluate` every (method, task) pair, each result cached under :func:`result_key`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict

import torch

from core.cache import Cache, CacheError, make_key
from core.data import Scenario
from core.errors import AttrexError
from core.evaluation.context import Context
from core.evaluation.result import (
    Agreement,
    EvaluationResult,
    MethodInfo,
    ModelInfo,
    TaskInfo,
    TaskResult,
)
from core.evaluation.settings import Settings
from core.evaluation.tasks import TASKS, Kept, Task, tasks_for
from core.jobs import Cancelled
from core.methods import Attributor, create, get_method
from core.metrics import agreement
from core.models.subsets import default_workers
from core.models.training import Progress, TrainedModel

VERSION = "2"  # 2: results keyed by the method's name too (GAS shares TracIn's precompute, not its scores)


def result_key(ctx: Context, method: Attributor, task: str) -> str:
    parts = {"task": task, "settings": asdict(ctx.settings), "method": method.name, "precompute": method.cache_key(),
             "scenario": ctx.scenario.fingerprint, "model": ctx.trained.key}
    return make_key(parts, f"evaluation-{VERSION}")


class NotCached(Exception):
    """Raised inside :func:`evaluate` with ``compute=False`` when a result is not in the cache."""


STOPS = (Cancelled, NotCached)  # they end the whole evaluation; any other failure is one method's or task's entry


def _run_pair(ctx: Context, method: Attributor, task: Task, compute: bool = True) -> TaskResult:
    def run():
        t0 = time.perf_counter()
        values, kept = task.run(ctx, method)
        return kept.tensors(), {"values": values, "seconds": time.perf_counter() - t0,
                                "label": f"{task.name} of {method.name} on {ctx.scenario.spec.name} "
                                         f"(seed {ctx.scenario.spec.seed})"}

    key = result_key(ctx, method, task.name)
    if compute:
        art = ctx.cache.get_or_compute("evaluation", key, run)
    else:
        try:
            art = ctx.cache.load("evaluation", key)
        except (FileNotFoundError, CacheError):
            raise NotCached from None
    curve = Kept.of(art.tensors).curve  # small (2 x CURVE_POINTS): kept in the result for plots
    return TaskResult("ok", art.meta["values"], seconds=art.meta["seconds"], cache=art.status.split(":")[0],
                      tensors=sorted(art.tensors),
                      curve=None if curve is None else [[round(v, 6) for v in row] for row in curve.tolist()])


def load_kept(scenario: Scenario, trained: TrainedModel, method: Attributor, task: str,
              settings: Settings | None = None, cache: Cache | None = None) -> Kept | None:
    """The tensors an evaluation kept (curve, ranking, ...), if it is cached; ``None`` otherwise."""
    ctx = Context(scenario, trained, settings or Settings(), cache or Cache(), 1)
    try:
        return Kept.of(ctx.cache.load("evaluation", result_key(ctx, method, task)).tensors)
    except (FileNotFoundError, CacheError):
        return None


def evaluate(scenario: Scenario, trained: TrainedModel, methods: list[str] | dict[str, dict],
             tasks: list[str] | None = None, settings: Settings | None = None, cache: Cache | None = None,
             workers: int | None = None, progress: Progress | None = None, agreement_k: int = 10,
             compute: bool = True) -> EvaluationResult | None:
    """Every method on every task; see :mod:`core.evaluation`. ``methods``: names, or names with parameters.

    ``compute=False``: only what the cache holds, nothing fitted or computed (cheap: a page's
    first look); ``None`` if any result is missing. Its ``agreement`` is left empty.
    """
    settings = settings or Settings()
    cache = cache or Cache()
    specs = {m: {} for m in methods} if isinstance(methods, list) else dict(methods)
    if not specs:
        raise AttrexError("name at least one method to evaluate")
    for name in specs:
        get_method(name)  # unknown names fail here, before any work
    names = tasks_for(scenario, tasks)
    ctx = Context(scenario, trained, settings, cache, workers or default_workers(), progress)
    out = EvaluationResult(scenario.spec.name or scenario.spec.dataset, scenario.spec.seed,
                           ModelInfo(trained.config.arch, trained.key[:12], trained.test_accuracy,
                                     trained.attack_success),
                           settings, {n: TaskInfo.of(TASKS[n], TASKS[n].applies(scenario)) for n in names})
    steps = len(specs) * (len(names) + 1)
    score_rows: dict[str, torch.Tensor] = {}
    for i, (mname, params) in enumerate(specs.items()):
        try:
            row, method = _method(ctx, out, mname, params, names, _ticker(progress, steps, i * (len(names) + 1)),
                                  compute)
        except NotCached:
            return None
        if compute and method is not None and method.per_test and "identical-class" in row \
                and row["identical-class"].ok:
            x, pred = ctx.clean
            score_rows[mname] = ctx.scores(method, "clean", x, pred)
    out.agreement = _agreement(score_rows, agreement_k)
    if progress:
        progress(1.0, "done")
    return out


def _ticker(progress: Progress | None, steps: int, base: int) -> Callable[[int, str], None]:
    """``tick(j, message)``: report step ``base + j`` of ``steps`` to ``progress``, if any."""
    def tick(j: int, message: str) -> None:
        if progress:
            progress((base + j) / steps, message)
    return tick


def _method(ctx: Context, out: EvaluationResult, name: str, params: dict, tasks: list[str],
            tick: Callable[[int, str], None], compute: bool) -> tuple[dict[str, TaskResult], Attributor | None]:
    """One method's precompute and its entries on ``tasks``, written into ``out``, and the method (``None`` if its
    precompute failed); :class:`NotCached` where ``compute=False`` and something is missing."""
    cls = get_method(name)
    row = out.results[name] = {}
    try:
        method = create(name, ctx.trained, ctx.data, cache=ctx.cache, **params)
        tick(0, f"{name}: precompute")
        t0 = time.perf_counter()
        if compute:
            method.fit()
        elif not ctx.cache.contains("method", method.cache_key()):
            raise NotCached
        out.methods[name] = MethodInfo(cls.title, cls.baseline, method.hparams, method.fit_seconds,
                                       method.fit_status.split(":")[0], time.perf_counter() - t0, method.info)
    except STOPS:
        raise
    except Exception as exc:  # one method's failure is its entry, whatever raised it: the others go on
        out.methods[name] = MethodInfo(cls.title, cls.baseline, error=f"{type(exc).__name__}: {exc}")
        row.update({t: TaskResult.failed(f"precompute failed: {exc}") for t in tasks})
        return row, None
    for j, t in enumerate(tasks, 1):
        tick(j, f"{name}: {t}")
        reason = out.tasks[t].reason or TASKS[t].method_reason(cls)
        if reason:
            row[t] = TaskResult.na(reason)
            continue
        try:
            row[t] = _run_pair(ctx, method, TASKS[t], compute)
        except STOPS:
            raise
        except Exception as exc:
            row[t] = TaskResult.failed(f"{type(exc).__name__}: {exc}")
    return row, method


def _agreement(rows: dict[str, torch.Tensor], k: int) -> Agreement | None:
    """Pairwise Spearman and top-k overlap of the methods' scores on the identical-class test points."""
    names = list(rows)
    if len(names) < 2:
        return None
    out = Agreement(names, k, [], [])
    for a in names:
        sp, ov = [], []
        for b in names:
            try:
                sp.append(agreement.spearman(rows[a], rows[b]))
            except AttrexError:
                sp.append(None)
            ov.append(agreement.top_k_overlap(rows[a], rows[b], min(k, rows[a].shape[1])) / min(k, rows[a].shape[1]))
        out.spearman.append(sp)
        out.top_k_overlap.append(ov)
    return out
