"""The task registry (:data:`TASKS`), the one list of what an evaluation measures, and the seven task functions.

A :class:`Task` carries everything said about it elsewhere: its name, title, short label and
headline figure (the value tables and the Evaluate page show), the ground truth it needs, and
its function. Adding one here adds it to ``attrex evaluate``'s ``--tasks``, its table, the
Evaluate page and the JSON; nothing else spells the list. The metrics a task computes are the
pure functions of :mod:`core.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch

from core.data import Scenario
from core.errors import AttrexError
from core.evaluation.context import Context
from core.methods import Attributor
from core.metrics import backdoor, dualview, lds, mislabel

CURVE_POINTS = 101  # the detection curves kept in a result, sampled at 0%, 1%, ..., 100% of the data checked


@dataclass(frozen=True)
class Kept:
    """The tensors a task keeps beside its values, cached with them (:func:`core.evaluation.load_kept`)."""

    curve: torch.Tensor | None = None     # detection curve [2, CURVE_POINTS]: share checked, share found
    ranking: torch.Tensor | None = None   # one suspicion score per training point [n_train]
    per_test: torch.Tensor | None = None  # one value per test point (LDS: each point's Spearman)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The kept tensors by name (as the cache stores them)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def of(cls, tensors: dict[str, torch.Tensor]) -> Kept:
        return cls(**{f.name: tensors.get(f.name) for f in fields(cls)})


Measure = Callable[[Context, Attributor], tuple[dict[str, float], Kept]]  # metric values, tensors kept


@dataclass(frozen=True)
class Task:
    """A job a method is measured on: where it applies, what it needs from the method, how it is scored."""

    name: str
    title: str                                  # the Evaluate page's column and chart title
    label: str                                  # the short column name of the text table
    headline: str                               # the key of the value tables show for it
    description: str
    run: Measure
    truth: tuple[str, str] | None = None        # (the Truth field it reads, what it is called); None: any scenario
    needs_self: bool = False                    # needs self-scores (else per-test scores)
    default: bool = True                        # among the tasks run when none are named
    higher_is_better: dict[str, bool] = field(default_factory=dict)

    def applies(self, scenario: Scenario) -> str | None:
        """``None`` where the task applies to ``scenario``, else why not."""
        if self.truth is None or getattr(scenario.truth, self.truth[0]) is not None:
            return None
        return f"the scenario has no {self.truth[1]}"

    def method_reason(self, cls: type[Attributor]) -> str | None:
        """``None`` where the method ``cls`` can be measured on this task, else why not."""
        if self.needs_self and not cls.self_influence:
            return f"{cls.name} has no self-influence to rank training points by"
        if not self.needs_self and not cls.per_test:
            return f"{cls.name} scores training points only, and {self.name} needs per-test-point scores"
        return None


def _sample(checked: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
    """A detection curve at CURVE_POINTS evenly spaced shares of the data checked, ``[2, CURVE_POINTS]``."""
    at = torch.linspace(0, 1, CURVE_POINTS, dtype=torch.float64)
    idx = (at * (len(checked) - 1)).round().long()
    return torch.stack([checked[idx], found[idx]]).float()


def _mislabel(ctx: Context, method: Attributor) -> tuple[dict, Kept]:
    flipped = ctx.scenario.truth.flipped_ids
    s = method.self_scores()
    checked, found = mislabel.detection_curve(s, flipped)
    found_10 = float(found[round(0.1 * len(s))])  # exact, not the sampled curve
    values = {"auroc": mislabel.auroc(s, flipped), "auprc": mislabel.auprc(s, flipped),
              "precision_at_k": mislabel.precision_at_k(s, flipped, len(flipped)), "k": len(flipped),
              "found_at_10pct": found_10, "base_rate": len(flipped) / len(s)}
    return values, Kept(curve=_sample(checked, found), ranking=s.float())


def _backdoor(ctx: Context, method: Attributor) -> tuple[dict, Kept]:
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
    curve = _sample(*mislabel.detection_curve(mean, truth.poisoned_ids))
    return values, Kept(curve=curve, ranking=mean.float())


def _identical_class(ctx: Context, method: Attributor) -> tuple[dict, Kept]:
    x, pred = ctx.clean
    s = ctx.scores(method, "clean", x, pred)
    return {"identical_class": dualview.identical_class(s, ctx.scenario.y_train, pred), "n_test": len(x)}, Kept()


def _identical_subclass(ctx: Context, method: Attributor) -> tuple[dict, Kept]:
    x, pred = ctx.clean
    s = ctx.scores(method, "clean", x, pred)
    truth = ctx.scenario.truth
    return {"identical_subclass": dualview.identical_subclass(s, truth.subclass_train,
                                                              truth.subclass_test[ctx.clean_ids]),
            "n_test": len(x)}, Kept()


def _label_poisoning(ctx: Context, method: Attributor) -> tuple[dict, Kept]:
    x, pred = ctx.clean
    s = ctx.scores(method, "clean", x, pred)
    return {"label_poisoning": dualview.label_poisoning(s, ctx.scenario.truth.flipped_ids), "n_test": len(x)}, Kept()


def _domain_mismatch(ctx: Context, method: Attributor) -> tuple[dict, Kept]:
    truth = ctx.scenario.truth
    x, pred = ctx.marked
    s = ctx.scores(method, "marked", x, pred)
    return {"domain_mismatch": dualview.domain_mismatch(s, truth.marked_ids, pred, truth.mark_class),
            "fooled": int((pred == truth.mark_class).sum()), "stamped": len(x)}, Kept()


def _lds(ctx: Context, method: Attributor) -> tuple[dict, Kept]:
    x, y, masks, outputs = ctx.lds_points
    s = ctx.scores(method, "lds", x, y)
    rows = torch.tensor(lds.lds_rows(s, masks, outputs), dtype=torch.float64)
    defined = rows.isfinite()
    return {"lds": lds.lds(s, masks, outputs), "n_test": len(x), "defined": int(defined.sum()),
            "subsets": ctx.settings.lds_subsets, "alpha": ctx.settings.lds_alpha}, Kept(per_test=rows.float())


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` to :data:`TASKS`: ``attrex evaluate --tasks``, its table, the Evaluate page and the JSON then
    know it. A second task under the same name, or a headline the task does not say the direction of, is refused."""
    if task.name in TASKS and TASKS[task.name] != task:
        raise AttrexError(f"two tasks named {task.name!r}")
    if task.headline not in task.higher_is_better:
        raise AttrexError(f"task {task.name!r}: its headline {task.headline!r} needs an entry in higher_is_better")
    TASKS[task.name] = task
    return task


FLIPS = ("flipped_ids", "flipped labels")
for _task in (
    Task("mislabel", "Mislabel detection", "mislabel AUROC", "auroc",
         "ranking training points by suspicion finds the flipped labels", _mislabel, FLIPS, needs_self=True,
         higher_is_better={"auroc": True, "auprc": True, "precision_at_k": True, "found_at_10pct": True}),
    Task("backdoor", "Backdoor detection", "backdoor top-k", "top_k_share",
         "the proponents of triggered predictions are the poisoned points", _backdoor, ("poisoned_ids", "backdoor"),
         higher_is_better={"top_k_share": True, "lift": True, "auroc": True, "auroc_in_class": True}),
    Task("identical-class", "Identical class", "ident. class", "identical_class",
         "the top proponent has the explained class (DualView §5.1)", _identical_class,
         higher_is_better={"identical_class": True}),
    Task("identical-subclass", "Identical subclass", "ident. subclass", "identical_subclass",
         "the top proponent has the test point's original class under merged labels (DualView §5.1)",
         _identical_subclass, ("subclass_train", "superclasses"), higher_is_better={"identical_subclass": True}),
    Task("label-poisoning", "Label poisoning", "label poison.", "label_poisoning",
         "summed |attributions| rank the flipped labels first (DualView §5.1)", _label_poisoning, FLIPS,
         higher_is_better={"label_poisoning": True}),
    Task("domain-mismatch", "Domain mismatch", "domain mism.", "domain_mismatch",
         "the top proponent of a mark-fooled prediction carries the mark (DualView §5.1)", _domain_mismatch,
         ("marked_ids", "domain mark"), higher_is_better={"domain_mismatch": True}),
    Task("lds", "Linear datamodeling score", "LDS", "lds",
         "summed scores rank subset-trained models' outputs (TRAK §2.2)", _lds, default=False,
         higher_is_better={"lds": True}),
):
    register_task(_task)


def check_tasks(names: list[str]) -> list[str]:
    """``names`` without repeats, or an :class:`AttrexError` naming the unknown ones and the accepted."""
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise AttrexError(f"unknown task {', '.join(map(repr, unknown))}; accepted: {', '.join(TASKS)}")
    return list(dict.fromkeys(names))


def tasks_for(scenario: Scenario, names: list[str] | None = None) -> list[str]:
    """The tasks named (checked), or every default task that applies to ``scenario``."""
    if names:
        return check_tasks(names)
    return [n for n, t in TASKS.items() if t.default and t.applies(scenario) is None]


def tasks_help() -> str:
    """The tasks as ``attrex evaluate --tasks`` lists them: every name, the default ones said."""
    off = [n for n, t in TASKS.items() if not t.default]
    return (f"comma-separated tasks: {', '.join(TASKS)} (default: every one that applies to the scenario"
            + (f", except {', '.join(off)})" if off else ")"))
