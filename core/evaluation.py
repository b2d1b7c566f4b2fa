"""Evaluation: how well each method does each job on a scenario, against what the scenario planted.

``evaluate(scenario, trained, methods, tasks)`` runs every (method, task) pair and returns one
JSON-able document: per method and task the metric values, or an entry saying why there is
none (``n/a``: the task or the method does not apply; ``error``: it failed). Each pair's
result is cached (kind ``evaluation``), keyed on the scenario, the model, the method's
precompute key and the settings, so a second run, the CLI's ``attrex evaluate`` and the
app's pages read what the first computed. Metrics are the pure functions of
:mod:`core.metrics`; this module only picks the test points and ground truth and wires them.

Tasks (:data:`TASKS`), each on the scenarios that have its ground truth:

- ``mislabel`` (flipped labels): a per-training-point suspicion score (self-influence, or a
  baseline's score) against the flips: AUROC, AUPRC, precision@k with k = the number of
  flips, the share found after checking 10% of the data; the detection curve is kept.
- ``backdoor`` (poisoned points): the first ``n_triggered`` triggered test samples the model
  sends to the target class, explained for the target: poisoned share of the top-``k``
  proponents against the base rate, detection AUROC of the mean score over all training
  points and within the target class; the aggregated ranking is kept.
- ``identical-class``, ``identical-subclass``, ``label-poisoning``, ``domain-mismatch``: the
  DualView paper's four (:mod:`core.metrics.dualview`), on ``n_test`` seeded clean test
  points explained for their predicted class (domain mismatch: the stamped other-class test
  images the model sends to the mark class).
- ``lds``: the linear datamodeling score (:mod:`core.metrics.lds`) on ``lds_test`` seeded
  test points explained for their true class, against ``lds_subsets`` models trained on
  random subsets of a fraction ``lds_alpha`` (:mod:`core.models.subsets`, cached, in
  ``workers`` processes). Costly: not among the default tasks.

Methods without per-test-point scores (``per_test = False``) apply to ``mislabel`` only;
methods without a self-influence (``self_influence = False``) to every task but ``mislabel``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property

import torch

from core.cache import Cache, CacheError, make_key
from core.data import Scenario
from core.errors import AttrexError
from core.methods import Attributor, TrainingData, create, get_method
from core.metrics import agreement, backdoor, dualview, lds, mislabel
from core.models.subsets import default_workers, random_subsets, train_subsets
from core.models.training import Progress, TrainedModel, predict

VERSION = "2"  # 2: results keyed by the method's name too (GAS shares TracIn's precompute, not its scores)
CURVE_POINTS = 101  # the detection curves kept in a result, sampled at 0%, 1%, ..., 100% of the data checked


@dataclass(frozen=True)
class Settings:
    """What an evaluation measures on; every field enters the cache key of its results."""

    n_test: int = 100          # clean test points of the DualView tasks
    k: int = 10                # top-k of the backdoor share
    n_triggered: int = 20      # triggered test samples of the backdoor task
    lds_test: int = 50         # test points of LDS
    lds_subsets: int = 20      # M: subset models of LDS
    lds_alpha: float = 0.5     # fraction of the training set in each LDS subset
    seed: int = 0              # seed of the test-point draws and the LDS subsets

    def __post_init__(self) -> None:
        for name in ("n_test", "k", "n_triggered", "lds_test"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise AttrexError(f"{name} must be a positive integer; got {getattr(self, name)!r}")
        if not isinstance(self.lds_subsets, int) or self.lds_subsets < 3:
            raise AttrexError(f"lds_subsets must be an integer >= 3; got {self.lds_subsets!r}")
        if not 0 < self.lds_alpha < 1:
            raise AttrexError(f"lds_alpha must lie strictly between 0 and 1; got {self.lds_alpha!r}")


class Context:
    """One scenario and model under evaluation: the test points and ground truth every task draws on, made once."""

    def __init__(self, scenario: Scenario, trained: TrainedModel, settings: Settings, cache: Cache,
                 workers: int, progress: Progress | None = None):
        self.scenario, self.trained, self.settings, self.cache = scenario, trained, settings, cache
        self.workers = workers
        self.progress = progress
        self.data = TrainingData.of(scenario)
        self._scores: dict[tuple[str, str], torch.Tensor] = {}

    def draw(self, n_total: int, n: int, salt: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.settings.seed * 7919 + salt)
        return torch.randperm(n_total, generator=g)[:min(n, n_total)].sort().values

    @cached_property
    def clean_ids(self) -> torch.Tensor:
        """Ids of the seeded clean test points of the DualView tasks."""
        return self.draw(len(self.scenario.y_test), self.settings.n_test, 1)

    @cached_property
    def clean(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, predicted class)`` of :attr:`clean_ids`."""
        x = self.scenario.x_test[self.clean_ids]
        return x, predict(self.trained.model, x).argmax(1)

    @cached_property
    def triggered(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n_triggered`` triggered test samples the model sends to the target class, and that class."""
        x_trig, target = self.scenario.test_split("triggered")
        hit = (predict(self.trained.model, x_trig).argmax(1) == target).nonzero().squeeze(1)[:self.settings.n_triggered]
        if not len(hit):
            raise AttrexError("the model resists the backdoor: no triggered test sample reaches the target class")
        return x_trig[hit], target[hit]

    @cached_property
    def marked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stamped other-class test images and the model's predictions for them."""
        x, _ = self.scenario.test_split("marked")
        return x, predict(self.trained.model, x).argmax(1)

    @cached_property
    def lds_points(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, true labels, subset masks [M, n_train], margins [M, n_test])`` of LDS; trains the subset models."""
        s = self.settings
        ids = self.draw(len(self.scenario.y_test), s.lds_test, 2)
        x, y = self.scenario.x_test[ids], self.scenario.y_test[ids]
        masks = random_subsets(len(self.data), s.lds_subsets, s.lds_alpha, seed=s.seed)
        models = train_subsets(self.scenario, list(masks), self.trained.config, cache=self.cache,
                               workers=self.workers, progress=self.progress)
        outputs = torch.stack([lds.margin(predict(m.model, x), y) for m in models])
        return x, y, masks, outputs

    def scores(self, method: Attributor, split: str, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``method.scores(x, target)``, computed once per method and split in this evaluation."""
        key = (method.name, method.cache_key(), split)  # methods may share a precompute (gas and tracin)
        if key not in self._scores:
            self._scores[key] = method.scores(x, target)
        return self._scores[key]


@dataclass(frozen=True)
class Task:
    """A job a method is measured on: where it applies, what it needs from the method, how it is scored."""

    name: str
    title: str
    description: str
    applies: Callable[[Scenario], str | None]        # None where it applies, else why not
    run: Callable[[Context, Attributor], tuple[dict, dict[str, torch.Tensor]]]  # metric values, tensors kept
    needs_self: bool = False                          # needs self-scores (else per-test scores)
    default: bool = True                              # among the tasks run when none are named
    higher_is_better: dict[str, bool] = field(default_factory=dict)


def _needs(attr: str, what: str) -> Callable[[Scenario], str | None]:
    def applies(scenario: Scenario) -> str | None:
        return None if getattr(scenario.truth, attr) is not None else f"the scenario has no {what}"
    return applies


def _always(scenario: Scenario) -> str | None:
    return None


def _curve(scores: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return _sample(*mislabel.detection_curve(scores, truth))


def _sample(checked: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
    """A detection curve at CURVE_POINTS evenly spaced shares of the data checked, ``[2, CURVE_POINTS]``."""
    at = torch.linspace(0, 1, CURVE_POINTS, dtype=torch.float64)
    idx = (at * (len(checked) - 1)).round().long()
    return torch.stack([checked[idx], found[idx]]).float()


def _mislabel(ctx: Context, method: Attributor) -> tuple[dict, dict]:
    flipped = ctx.scenario.truth.flipped_ids
    s = method.self_scores()
    checked, found = mislabel.detection_curve(s, flipped)
    curve = _sample(checked, found)
    found_10 = float(found[round(0.1 * len(s))])  # exact, not the sampled curve
    values = {"auroc": mislabel.auroc(s, flipped), "auprc": mislabel.auprc(s, flipped),
              "precision_at_k": mislabel.precision_at_k(s, flipped, len(flipped)), "k": len(flipped),
              "found_at_10pct": found_10, "base_rate": len(flipped) / len(s)}
    return values, {"curve": curve, "ranking": s.float()}


def _backdoor(ctx: Context, method: Attributor) -> tuple[dict, dict]:
    truth, k = ctx.scenario.truth, ctx.settings.k
    x, target = ctx.triggered
    s = ctx.scores(method, "triggered", x, target)
    base = backdoor.base_rate(truth.poisoned_ids, s.shape[1])
    share = backdoor.top_k_poisoned_share(s, truth.poisoned_ids, k)
    mean = s.double().mean(0)
    values = {"top_k_share": share, "k": k, "base_rate": base, "lift": share / base,
              "auroc": backdoor.detection_auroc(s, truth.poisoned_ids),
              "auroc_in_class": backdoor.detection_auroc_in_class(s, truth.poisoned_ids, ctx.scenario.y_train,
                                                                   truth.target_class),
              "triggered_test": len(x)}
    return values, {"ranking": mean.float(), "curve": _curve(mean, truth.poisoned_ids)}


def _identical_class(ctx: Context, method: Attributor) -> tuple[dict, dict]:
    x, pred = ctx.clean
    s = ctx.scores(method, "clean", x, pred)
    return {"identical_class": dualview.identical_class(s, ctx.scenario.y_train, pred), "n_test": len(x)}, {}


def _identical_subclass(ctx: Context, method: Attributor) -> tuple[dict, dict]:
    x, pred = ctx.clean
    s = ctx.scores(method, "clean", x, pred)
    truth = ctx.scenario.truth
    return {"identical_subclass": dualview.identical_subclass(s, truth.subclass_train,
                                                              truth.subclass_test[ctx.clean_ids]),
            "n_test": len(x)}, {}


def _label_poisoning(ctx: Context, method: Attributor) -> tuple[dict, dict]:
    x, pred = ctx.clean
    s = ctx.scores(method, "clean", x, pred)
    return {"label_poisoning": dualview.label_poisoning(s, ctx.scenario.truth.flipped_ids), "n_test": len(x)}, {}


def _domain_mismatch(ctx: Context, method: Attributor) -> tuple[dict, dict]:
    truth = ctx.scenario.truth
    x, pred = ctx.marked
    s = ctx.scores(method, "marked", x, pred)
    return {"domain_mismatch": dualview.domain_mismatch(s, truth.marked_ids, pred, truth.mark_class),
            "fooled": int((pred == truth.mark_class).sum()), "stamped": len(x)}, {}


def _lds(ctx: Context, method: Attributor) -> tuple[dict, dict]:
    x, y, masks, outputs = ctx.lds_points
    s = ctx.scores(method, "lds", x, y)
    rows = torch.tensor(lds.lds_rows(s, masks, outputs), dtype=torch.float64)
    defined = rows.isfinite()
    return {"lds": lds.lds(s, masks, outputs), "n_test": len(x), "defined": int(defined.sum()),
            "subsets": ctx.settings.lds_subsets, "alpha": ctx.settings.lds_alpha}, {"per_test": rows.float()}


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("mislabel", "Mislabel detection", "ranking training points by suspicion finds the flipped labels",
         _needs("flipped_ids", "flipped labels"), _mislabel, needs_self=True,
         higher_is_better={"auroc": True, "auprc": True, "precision_at_k": True, "found_at_10pct": True}),
    Task("backdoor", "Backdoor detection", "the proponents of triggered predictions are the poisoned points",
         _needs("poisoned_ids", "backdoor"), _backdoor,
         higher_is_better={"top_k_share": True, "lift": True, "auroc": True, "auroc_in_class": True}),
    Task("identical-class", "Identical class", "the top proponent has the explained class (DualView §5.1)",
         _always, _identical_class, higher_is_better={"identical_class": True}),
    Task("identical-subclass", "Identical subclass",
         "the top proponent has the test point's original class under merged labels (DualView §5.1)",
         _needs("subclass_train", "superclasses"), _identical_subclass, higher_is_better={"identical_subclass": True}),
    Task("label-poisoning", "Label poisoning", "summed |attributions| rank the flipped labels first (DualView §5.1)",
         _needs("flipped_ids", "flipped labels"), _label_poisoning, higher_is_better={"label_poisoning": True}),
    Task("domain-mismatch", "Domain mismatch", "the top proponent of a mark-fooled prediction carries the mark "
         "(DualView §5.1)", _needs("marked_ids", "domain mark"), _domain_mismatch,
         higher_is_better={"domain_mismatch": True}),
    Task("lds", "Linear datamodeling score", "summed scores rank subset-trained models' outputs (TRAK §2.2)",
         _always, _lds, default=False, higher_is_better={"lds": True}),
)}


def check_tasks(names: list[str]) -> list[str]:
    """``names`` without repeats, or an :class:`AttrexError` naming the unknown ones and the accepted."""
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise AttrexError(f"unknown metric group {', '.join(map(repr, unknown))}; accepted: {', '.join(TASKS)}")
    return list(dict.fromkeys(names))


def tasks_for(scenario: Scenario, names: list[str] | None = None) -> list[str]:
    """The tasks named (checked), or every default task that applies to ``scenario``."""
    if names:
        return check_tasks(names)
    return [n for n, t in TASKS.items() if t.default and t.applies(scenario) is None]


def _method_reason(task: Task, cls: type[Attributor]) -> str | None:
    if task.needs_self and not cls.self_influence:
        return f"{cls.name} has no self-influence to rank training points by"
    if not task.needs_self and not cls.per_test:
        return f"{cls.name} scores training points only, and {task.name} needs per-test-point scores"
    return None


def result_key(ctx: Context, method: Attributor, task: str) -> str:
    parts = {"task": task, "settings": asdict(ctx.settings), "method": method.name, "precompute": method.cache_key(),
             "scenario": ctx.scenario.fingerprint, "model": ctx.trained.key}
    return make_key(parts, f"evaluation-{VERSION}")


class NotCached(Exception):
    """Raised inside :func:`evaluate` with ``compute=False`` when a result is not in the cache."""


def _run_pair(ctx: Context, method: Attributor, task: Task, compute: bool = True) -> dict:
    def run():
        t0 = time.perf_counter()
        values, tensors = task.run(ctx, method)
        return tensors, {"values": values, "seconds": time.perf_counter() - t0,
                         "label": f"{task.name} of {method.name} on {ctx.scenario.spec.name} (seed {ctx.scenario.spec.seed})"}

    key = result_key(ctx, method, task.name)
    if compute:
        art = ctx.cache.get_or_compute("evaluation", key, run)
    else:
        try:
            art = ctx.cache.load("evaluation", key)
        except (FileNotFoundError, CacheError):
            raise NotCached from None
    out = {"status": "ok", "values": art.meta["values"], "seconds": art.meta["seconds"],
           "cache": art.status.split(":")[0], "tensors": sorted(art.tensors)}
    if "curve" in art.tensors:  # small (2 x CURVE_POINTS): kept in the result for plots
        out["curve"] = [[round(v, 6) for v in row] for row in art.tensors["curve"].tolist()]
    return out


def load_tensors(scenario: Scenario, trained: TrainedModel, method: Attributor, task: str,
                 settings: Settings | None = None, cache: Cache | None = None) -> dict[str, torch.Tensor] | None:
    """The tensors an evaluation kept (curve, ranking, ...), if it is cached; ``None`` otherwise."""
    ctx = Context(scenario, trained, settings or Settings(), cache or Cache(), 1)
    try:
        return ctx.cache.load("evaluation", result_key(ctx, method, task)).tensors
    except (FileNotFoundError, CacheError):
        return None


def evaluate(scenario: Scenario, trained: TrainedModel, methods: list[str] | dict[str, dict],
             tasks: list[str] | None = None, settings: Settings | None = None, cache: Cache | None = None,
             workers: int | None = None, progress: Progress | None = None, agreement_k: int = 10,
             compute: bool = True) -> dict | None:
    """Every method on every task; see the module docstring. ``methods``: names, or names with parameters.

    ``compute=False``: only what the cache holds, nothing fitted or computed (cheap: a page's
    first look); ``None`` if any result is missing. Its ``agreement`` is left empty.
    """
    settings = settings or Settings()
    cache = cache or Cache()
    specs = {m: {} for m in methods} if isinstance(methods, list) else dict(methods)
    if not specs:
        raise AttrexError("name at least one method to evaluate")
    classes = {name: get_method(name) for name in specs}  # unknown names fail here, before any work
    names = tasks_for(scenario, tasks)
    ctx = Context(scenario, trained, settings, cache, workers or default_workers(), progress)
    steps, done = len(specs) * (len(names) + 1), 0
    out: dict = {"scenario": scenario.spec.name or scenario.spec.dataset, "seed": scenario.spec.seed,
                 "model": {"arch": trained.config.arch, "key": trained.key[:12], "test_acc": trained.test_accuracy,
                           "attack_success": trained.attack_success},
                 "settings": asdict(settings), "tasks": {}, "results": {}, "methods": {}}
    for name in names:
        task = TASKS[name]
        reason = task.applies(scenario)
        out["tasks"][name] = {"title": task.title, "description": task.description, "applies": reason is None,
                              **({"reason": reason} if reason else {}), "higher_is_better": task.higher_is_better}

    def tick(message: str) -> None:
        if progress:
            progress(done / steps, message)

    score_rows: dict[str, torch.Tensor] = {}
    for mname, params in specs.items():
        cls = classes[mname]
        row = out["results"][mname] = {}
        try:
            method = create(mname, trained, ctx.data, cache=cache, **params)
            tick(f"{mname}: precompute")
            t0 = time.perf_counter()
            if compute:
                method.fit()
            elif not cache.contains("method", method.cache_key()):
                return None
            out["methods"][mname] = {"title": cls.title, "baseline": cls.baseline, "params": method.hparams,
                                     "fit_seconds": method.fit_seconds, "fit_status": method.fit_status.split(":")[0],
                                     "load_seconds": time.perf_counter() - t0, "info": method.info}
        except (AttrexError, RuntimeError, MemoryError, ValueError) as exc:
            out["methods"][mname] = {"title": cls.title, "baseline": cls.baseline, "error": f"{type(exc).__name__}: {exc}"}
            for name in names:
                row[name] = {"status": "error", "error": f"precompute failed: {exc}"}
            done += len(names) + 1
            continue
        done += 1
        for name in names:
            task = TASKS[name]
            tick(f"{mname}: {name}")
            reason = out["tasks"][name].get("reason") or _method_reason(task, cls)
            if reason:
                row[name] = {"status": "n/a", "reason": reason}
            else:
                try:
                    row[name] = _run_pair(ctx, method, task, compute)
                except NotCached:
                    return None
                except (AttrexError, RuntimeError, MemoryError, ValueError) as exc:
                    row[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            done += 1
        if compute and cls.per_test and "identical-class" in names and row.get("identical-class", {}).get("status") == "ok":
            x, pred = ctx.clean
            score_rows[mname] = ctx.scores(method, "clean", x, pred)
    out["agreement"] = _agreement(score_rows, agreement_k)
    tick("done")
    return out


def _agreement(rows: dict[str, torch.Tensor], k: int) -> dict:
    """Pairwise Spearman and top-k overlap of the methods' scores on the identical-class test points."""
    names = list(rows)
    if len(names) < 2:
        return {}
    out: dict = {"methods": names, "k": k, "spearman": [], "top_k_overlap": []}
    for a in names:
        sp, ov = [], []
        for b in names:
            try:
                sp.append(agreement.spearman(rows[a], rows[b]))
            except AttrexError:
                sp.append(None)
            ov.append(agreement.top_k_overlap(rows[a], rows[b], min(k, rows[a].shape[1])) / min(k, rows[a].shape[1]))
        out["spearman"].append(sp)
        out["top_k_overlap"].append(ov)
    return out


def best_method(result: dict, task: str, keys: tuple[str, ...]) -> str | None:
    """The method (not a baseline) with the highest ``keys`` values on ``task`` in an :func:`evaluate` result,
    later keys breaking ties; the first listed among equals; ``None`` if none has a value."""
    ok = [m for m, row in result["results"].items()
          if row.get(task, {}).get("status") == "ok" and not result["methods"][m].get("baseline")]
    return max(ok, key=lambda m: tuple(result["results"][m][task]["values"][k] for k in keys), default=None)


def table(result: dict) -> str:
    """The evaluation as a plain-text table: one row per method, one column per task's headline value."""
    headline = {"mislabel": ("auroc", "mislabel AUROC"), "backdoor": ("top_k_share", "backdoor top-k"),
                "identical-class": ("identical_class", "ident. class"),
                "identical-subclass": ("identical_subclass", "ident. subclass"),
                "label-poisoning": ("label_poisoning", "label poison."),
                "domain-mismatch": ("domain_mismatch", "domain mism."), "lds": ("lds", "LDS")}
    tasks = list(result["tasks"])
    cols = [headline[t][1] for t in tasks]
    width = max([len(m) for m in result["results"]] + [8])
    lines = [f"{result['scenario']} (seed {result['seed']}, {result['model']['arch']}, test accuracy "
             f"{result['model']['test_acc']:.1%})",
             f"{'method':<{width}}  " + "  ".join(f"{c:>15}" for c in cols) + "   fit s"]
    for m, row in result["results"].items():
        cells = []
        for t in tasks:
            r = row.get(t, {})
            cells.append(f"{r['values'][headline[t][0]]:>15.3f}" if r.get("status") == "ok"
                         else f"{r.get('status', '-'):>15}")
        fit = result["methods"][m].get("fit_seconds")
        lines.append(f"{m:<{width}}  " + "  ".join(cells) + (f"   {fit:5.1f}" if fit is not None else "     -"))
    if "backdoor" in tasks:
        lines.append("backdoor: poisoned share of the top-k proponents of triggered samples "
                     "(base rate " + next((f"{r['backdoor']['values']['base_rate']:.3f}" for r in result["results"].values()
                                           if r.get("backdoor", {}).get("status") == "ok"), "-") + ")")
    errors = [(m, t, r) for m, row in result["results"].items() for t, r in row.items() if r.get("status") != "ok"]
    for m, t, r in errors:
        lines.append(f"  {m} / {t}: {r['status']}: {r.get('reason') or r.get('error')}")
    return "\n".join(lines)
