"""The FLIA paper's experiments (its Tables 1–3) and backdoor-trigger detection, on attrex's scenarios.

Pairs. The paper draws 100 training and 10 test images per class of CIFAR-10 (and of three
other data sets; ResNet-18, DenseNet-121) and pairs each test image with the training images
of its own class: 10 × 100 × 10 = 10,000 pairs, the count its Table 1 gives. Here a test
sample (drawn round-robin over the classes) is paired with ``per_test`` training points of
three kinds (:data:`PAIR_KINDS`): its strongest TracIn proponents (``tracin-rp``, the pairs a
user opens in the app; IL > 0), random training points of its own class (the paper's
pairs, scaled down), and random training points of any class (Table 1 only).

- **Table 1** (:func:`il_change_table`): after ``steps`` sign-gradient steps, the mean and
  median relative IL change ``(IL(x^T) − IL(x^0)) / |IL(x^0)|`` and the mean change of the
  final model's confidence in the training point's label, descent and ascent.
- **Table 2** (:func:`cdci`): at each point ``x^s`` of the path, unlearn it from the final
  model by one gradient-ascent SGD step (``θ + lr ∇θ ℓ(x^s, y)``, lr 0.01, no momentum or
  weight decay; eval mode) and take ``|Δ confidence|`` of the test sample's explained class;
  CDCI is the Pearson correlation of that with the step index ``s``, averaged over pairs
  (the paper's Table 2 reports ascent; descent is given too, where it should be negative).
- **Table 3** (:func:`insertion_deletion`): features ranked by ``|FLIA|`` (descent path);
  insertion puts the perturbed values of the top 10%, 20%, … 100% into the original input,
  deletion restores the original values of the top features into the perturbed input; IL
  after each of the 10 steps, normalised by the largest |IL| of the pair's two curves (and
  of ``x^0``, ``x^T``), averaged over the steps. INS < DEL means the ranking finds the
  features that carry the change. A random ranking is reported beside it.
- **Backdoor** (:func:`flia_on_poisoned`): on poisoned proponents of triggered test samples,
  the FLIA mass inside the trigger region divided by the region's share of the image; for
  text, the rank of the trigger token among the text's tokens by ``|FLIA|`` token score. The
  methods' own backdoor figures (top-k share, detection AUROC) are the evaluation suite's
  ``backdoor`` task (:mod:`core.evaluation`).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

from core.cache import Cache
from core.data.scenario import Scenario
from core.errors import AttrexError
from core.features.flia import FLIA, FLIAResult
from core.methods import TrainingData, create
from core.metrics.backdoor import trigger_mass_ratio
from core.models.training import TrainedModel
from core.stats import pearson

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _mean(xs) -> float:
    xs = [x for x in xs if x == x]  # drop NaN
    return float(statistics.fmean(xs)) if xs else float("nan")


def _median(xs) -> float:
    xs = [x for x in xs if x == x]
    return float(statistics.median(xs)) if xs else float("nan")


# ----------------------------------------------------------------------------- pairs


def proponent_pairs(scenario: Scenario, trained: TrainedModel, n_test: int, per_test: int, seed: int = 0,
                    cache: Cache | None = None, method: str = "tracin-rp") -> list[tuple[int, torch.Tensor]]:
    """``(test index, training ids)`` for ``n_test`` test samples spread over the classes, each with its top proponents."""
    ranker = create(method, trained, TrainingData.of(scenario), cache=cache).fit()
    picked = pick_tests(scenario, n_test, seed)
    top = ranker.top_k(scenario.x_test[picked], k=per_test)
    return [(i, top.proponents[r]) for r, i in enumerate(picked)]


def pick_tests(scenario: Scenario, n_test: int, seed: int = 0) -> list[int]:
    """``n_test`` random test indices, round-robin over the classes so that every class is represented."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(scenario.y_test), generator=g)
    by_class = [order[scenario.y_test[order] == c] for c in range(scenario.n_classes)]
    return [int(ids[j]) for j in range(len(order)) for ids in by_class if j < len(ids)][:n_test]


# ----------------------------------------------------------------------------- Table 1


def il_change_table(results: dict[str, list[FLIAResult]]) -> dict:
    """Table 1 from FLIA runs keyed ``"<pairs>/<direction>"`` (e.g. ``proponents/descent``)."""
    out = {}
    for key, runs in results.items():
        change = torch.cat([r.il_change for r in runs]).tolist()
        conf = torch.cat([r.confidence_change for r in runs]).tolist()
        gap = torch.cat([r.gap.reshape(-1) for r in runs]).tolist()
        out[key] = {"pairs": len(change), "il_change_mean": _mean(change), "il_change_median": _median(change),
                    "confidence_change_mean": _mean(conf), "abs_confidence_change_mean": _mean([abs(c) for c in conf]),
                    "completeness_gap_median": _median(gap)}
    return out


# ----------------------------------------------------------------------------- Table 2


def unlearning_confidence_change(trained: TrainedModel, x_points: torch.Tensor, y: int, x_test: torch.Tensor,
                                 target: int, lr: float = 0.01) -> torch.Tensor:
    """``|Δ confidence|`` of ``target`` at ``x_test`` after one gradient-ascent step on each of ``x_points`` ``[S, ...]``."""
    model = trained.model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    label = torch.tensor([y])

    def loss(p, x):
        return F.cross_entropy(functional_call(model, (p, buffers), (x[None],)), label)

    # probabilities in float64: a confident model's float32 softmax rounds to exactly 1 and hides the change
    with torch.no_grad():
        before = model(x_test[None]).double().softmax(1)[0, target]
    out = []
    for x in x_points:
        g = grad(loss)(params, x)
        with torch.no_grad():
            moved = {k: params[k] + lr * g[k] for k in params}  # ascent: unlearn the point
            after = functional_call(model, (moved, buffers), (x_test[None],)).double().softmax(1)[0, target]
        out.append((after - before).abs())
    return torch.stack(out)


def cdci(trained: TrainedModel, run: FLIAResult, y_train: torch.Tensor, x_test: torch.Tensor, lr: float = 0.01) -> list[float]:
    """CDCI of each pair of a batched run made with ``keep_path=True``: corr(step, |Δ confidence|)."""
    if run.trajectory is None:
        raise AttrexError("CDCI needs the path: run FLIA with keep_path=True")
    steps = torch.arange(run.trajectory.shape[1], dtype=torch.float64)
    return [pearson(steps, unlearning_confidence_change(trained, run.trajectory[b], int(y_train[b]), x_test,
                                                        run.target, lr))
            for b in range(len(run.trajectory))]


# ----------------------------------------------------------------------------- Table 3


def insertion_deletion(ex: FLIA, x0: torch.Tensor, y: torch.Tensor, run: FLIAResult, fractions: int = 10,
                       order: str = "flia", seed: int = 0) -> tuple[list[float], list[float]]:
    """INS and DEL per pair of a batched descent run (images): see the module docstring."""
    ins, dele = [], []
    g = torch.Generator().manual_seed(seed)
    for b in range(len(x0)):
        start, end = x0[b].flatten(), run.perturbed[b].flatten()
        n = start.numel()
        rank = (run.attribution[b].flatten().abs().argsort(descending=True) if order == "flia"
                else torch.randperm(n, generator=g))
        inserted, deleted = [], []
        for k in range(1, fractions + 1):
            top = rank[: round(n * k / fractions)]
            a, d = start.clone(), end.clone()
            a[top], d[top] = end[top], start[top]
            inserted.append(a.view_as(x0[b]))
            deleted.append(d.view_as(x0[b]))
        batch = torch.stack(inserted + deleted)
        il = ex.il(batch, y[b].expand(len(batch))).double()
        scale = max(il.abs().max().item(), abs(run.il_path[b, 0].item()), abs(run.il_path[b, -1].item()))
        ins.append((il[:fractions] / scale).mean().item())
        dele.append((il[fractions:] / scale).mean().item())
    return ins, dele


# ----------------------------------------------------------------------------- all three tables


PAIR_KINDS = ("proponents", "same-class", "random")


def same_class_pairs(scenario: Scenario, tests: list[int], per_test: int, seed: int = 0) -> list[torch.Tensor]:
    """For each test index, ``per_test`` random training points of the test sample's own class (the paper's pairs)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in tests:
        pool = torch.nonzero(scenario.y_train == scenario.y_test[i]).flatten()
        out.append(pool[torch.randperm(len(pool), generator=g)[:per_test]])
    return out


def flia_tables(scenario: Scenario, trained: TrainedModel, n_test: int, per_test: int, steps: int = 10,
                seed: int = 0, cache: Cache | None = None, log: Log = _quiet,
                kinds: tuple[str, ...] = PAIR_KINDS) -> dict:
    """Tables 1–3 of the FLIA paper on ``scenario`` (images), with the pairs described in the module docstring:
    Table 1 for every kind in ``kinds`` (a subset of :data:`PAIR_KINDS`; without ``proponents`` no ranker is
    fitted, which spares a large model's TracIn precompute), Tables 2 and 3 for proponents and same-class pairs."""
    if scenario.kind == "text":
        raise AttrexError("the FLIA tables are for image scenarios")
    unknown = [k for k in kinds if k not in PAIR_KINDS]
    if unknown or not kinds:
        raise AttrexError(f"pair kinds {unknown or '(none)'} unknown; accepted: {', '.join(PAIR_KINDS)}")
    kinds = tuple(k for k in PAIR_KINDS if k in kinds)
    t0 = time.perf_counter()
    pairs: dict[str, list[torch.Tensor]] = {}
    if "proponents" in kinds:
        proponents = proponent_pairs(scenario, trained, n_test, per_test, seed, cache)
        tests = [i for i, _ in proponents]
        pairs["proponents"] = [ids for _, ids in proponents]
    else:
        tests = pick_tests(scenario, n_test, seed)
    if "same-class" in kinds:
        pairs["same-class"] = same_class_pairs(scenario, tests, per_test, seed + 2)
    if "random" in kinds:
        g = torch.Generator().manual_seed(seed + 1)
        pairs["random"] = [torch.randint(0, len(scenario.y_train), (per_test,), generator=g) for _ in tests]
    runs: dict[str, list[FLIAResult]] = {f"{p}/{d}": [] for p in kinds for d in ("descent", "ascent")}
    full = tuple(k for k in ("proponents", "same-class") if k in kinds)  # the kinds that get Tables 2 and 3
    cd = {p: {"ascent": [], "descent": []} for p in full}
    t3 = {p: {"ins": [], "del": [], "ins_random": [], "del_random": []} for p in full}
    pair_seconds = []
    for n, i in enumerate(tests):
        x_test = scenario.x_test[i]
        ex = FLIA(trained, x_test)
        t1 = time.perf_counter()
        for kind in kinds:
            ids = pairs[kind][n]
            x0, y = ex.batch(scenario.x_train[ids], scenario.y_train[ids])
            for d in ("descent", "ascent"):
                t2 = time.perf_counter()
                run = ex.run(x0, y, steps, direction=d, keep_path=kind in full)
                if kind == kinds[0] and d == "descent":
                    pair_seconds.append((time.perf_counter() - t2) / len(ids))
                runs[f"{kind}/{d}"].append(run)
                if kind not in full:
                    continue
                cd[kind][d] += cdci(trained, run, y, x_test)
                if d == "descent":
                    for order, suffix in (("flia", ""), ("random", "_random")):
                        a, b = insertion_deletion(ex, x0, y, run, order=order, seed=seed + n)
                        t3[kind]["ins" + suffix] += a
                        t3[kind]["del" + suffix] += b
        log(f"test sample {n + 1}/{len(tests)} (#{i}): {time.perf_counter() - t1:.1f} s")
    return {
        "scenario": scenario.spec.name or scenario.spec.dataset, "arch": trained.config.arch,
        "test_accuracy": trained.test_accuracy, "n_train": len(scenario.y_train), "test_samples": len(tests),
        "per_test": per_test, "steps": steps, "kinds": list(kinds),
        "table1": il_change_table(runs),
        "table2": {p: {d: {"pairs": len(v), "cdci_mean": _mean(v), "cdci_median": _median(v)} for d, v in cd[p].items()}
                   for p in full},
        "table3": {p: {"pairs": len(t["ins"]), **{k: _mean(v) for k, v in t.items()},
                       "ins_below_del_share": _mean([float(a < b) for a, b in zip(t["ins"], t["del"], strict=True)])}
                   for p, t in t3.items()},
        "flia_seconds_per_pair": _median(pair_seconds), "seconds": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------------- backdoor


def flia_on_poisoned(scenario: Scenario, trained: TrainedModel, x: torch.Tensor, target: torch.Tensor,
                     scores: torch.Tensor, flia_pairs: int = 2) -> dict:
    """FLIA on the strongest poisoned proponents of triggered test samples, both directions.

    ``x``, ``target``: triggered test samples the model sends to the target class and that class;
    ``scores`` ``[len(x), n_train]``: a method's attributions for them (the evaluation's best
    method for backdoor detection). For each sample its ``flia_pairs`` highest-scoring poisoned
    training points are paired with it. Images: the FLIA mass inside the trigger over the
    trigger's share of the image (:func:`core.metrics.backdoor.trigger_mass_ratio`); text: the
    trigger token's rank among the text's tokens by ``|FLIA|``.

    A trigger drawn at the ends of the pixel range (BadNets' black-and-white checkerboard)
    often can move in one direction only: where ``∂IL/∂x`` pushes a pixel past the clip, its
    step, and with it its FLIA, is 0. Which direction that is depends on the trained model
    (:func:`core.metrics.backdoor.trigger_direction`), hence both are reported.
    """
    truth = scenario.truth
    if truth.poisoned_ids is None:
        raise AttrexError(f"scenario {scenario.spec.name!r} has no backdoor")
    poisoned = torch.zeros(len(scenario.y_train), dtype=torch.bool)
    poisoned[truth.poisoned_ids] = True
    found: dict[str, list[float]] = {"descent": [], "ascent": []}
    for r in range(len(x)):
        order = scores[r].argsort(descending=True)
        ids = order[poisoned[order]][:flia_pairs]
        ex = FLIA(trained, x[r], int(target[r]))
        base, y = ex.batch(scenario.x_train[ids], scenario.y_train[ids])
        for direction, values in found.items():
            run = ex.run(base, y, direction=direction)
            for b, i in enumerate(ids.tolist()):
                if scenario.kind == "text":
                    values.append(_token_rank(scenario, i, run.heatmap[b]))
                else:
                    values.append(trigger_mass_ratio(run.heatmap[b], truth.trigger_mask))
    out: dict = {}
    for direction, values in found.items():
        if scenario.kind == "text":
            out[f"flia_trigger_token_rank/{direction}"] = {
                "pairs": len(values), "median": _median(values), "mean": _mean(values),
                "top1_share": _mean([float(v == 1) for v in values])}
        else:
            out[f"flia_trigger_mass_ratio/{direction}"] = {
                "pairs": len(values), "median": _median(values), "mean": _mean(values),
                "at_least_5_share": _mean([float(v >= 5) for v in values]),
                "region_share": truth.trigger_mask.double().mean().item()}
    return out


def _token_rank(scenario: Scenario, i: int, scores: torch.Tensor) -> float:
    """Rank (1 = strongest) of the trigger token among the distinct tokens of training text ``i`` by ``|FLIA|``."""
    ids = scenario.x_train[i]
    token = scenario.vocab.index(scenario.truth.trigger_token)
    per_token: dict[int, float] = {}
    for tok, s in zip(ids.tolist(), scores.abs().tolist(), strict=True):
        if tok:
            per_token[tok] = per_token.get(tok, 0.0) + s
    if token not in per_token:
        return float("nan")
    ordered = sorted(per_token, key=per_token.get, reverse=True)
    return float(ordered.index(token) + 1)


def fmt(x: float, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)
