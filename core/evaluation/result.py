"""The typed result of an evaluation: :class:`EvaluationResult`, one :class:`TaskResult` per method and task.

``to_json()`` gives the JSON document ``attrex evaluate --json`` prints and the report saves;
``from_json()`` reads one back (``from_json(d).to_json() == d``). The tensors a task keeps
(the ranking, the full curve) stay in the cache (:class:`~core.evaluation.tasks.Kept`); the
sampled detection curve, small, rides along for plots.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from core.evaluation.settings import Settings
from core.evaluation.tasks import TASKS, Task

OK, NA, ERROR = "ok", "n/a", "error"


@dataclass
class TaskResult:
    """One method on one task: its values (``status`` ``ok``), or why there are none (``n/a``, ``error``)."""

    status: str
    values: dict[str, float] = field(default_factory=dict)
    reason: str | None = None                 # n/a: why it does not apply; error: what failed
    seconds: float | None = None              # time of the computation (as first measured, also on a cache hit)
    cache: str | None = None                  # hit / computed
    tensors: list[str] = field(default_factory=list)  # names of the tensors kept in the cache
    curve: list[list[float]] | None = None    # the detection curve sampled: [share checked, share found]

    @classmethod
    def na(cls, reason: str) -> TaskResult:
        return cls(NA, reason=reason)

    @classmethod
    def failed(cls, reason: str) -> TaskResult:
        return cls(ERROR, reason=reason)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_json(self) -> dict:
        if not self.ok:
            return {"status": self.status, ("error" if self.status == ERROR else "reason"): self.reason}
        out = {"status": self.status, "values": self.values, "seconds": self.seconds, "cache": self.cache,
               "tensors": self.tensors}
        return out if self.curve is None else {**out, "curve": self.curve}

    @classmethod
    def from_json(cls, doc: dict) -> TaskResult:
        return cls(doc["status"], doc.get("values", {}), doc.get("reason", doc.get("error")), doc.get("seconds"),
                   doc.get("cache"), doc.get("tensors", []), doc.get("curve"))


@dataclass
class MethodInfo:
    """A method in an evaluation: its precompute (parameters, times, diagnostics), or the error it failed with."""

    title: str
    baseline: bool
    params: dict | None = None
    fit_seconds: float | None = None
    fit_status: str | None = None             # hit / computed / recomputed
    load_seconds: float | None = None
    info: dict | None = None                  # diagnostics of the precompute (None: a document saved without them)
    error: str | None = None                  # the precompute failed

    def to_json(self) -> dict:
        if self.error is not None:
            return {"title": self.title, "baseline": self.baseline, "error": self.error}
        out = {"title": self.title, "baseline": self.baseline, "params": self.params, "fit_seconds": self.fit_seconds,
               "fit_status": self.fit_status, "load_seconds": self.load_seconds}
        return out if self.info is None else {**out, "info": self.info}

    @classmethod
    def from_json(cls, doc: dict) -> MethodInfo:
        return cls(**doc)


@dataclass
class ModelInfo:
    arch: str
    key: str                                  # the first 12 characters of the model's cache key
    test_acc: float
    attack_success: float | None = None


@dataclass
class TaskInfo:
    """A task as run in an evaluation: what it measures, and whether it applies to the scenario."""

    title: str
    description: str
    applies: bool
    reason: str | None = None
    higher_is_better: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def of(cls, task: Task, reason: str | None) -> TaskInfo:
        return cls(task.title, task.description, reason is None, reason, dict(task.higher_is_better))

    def to_json(self) -> dict:
        return {"title": self.title, "description": self.description, "applies": self.applies,
                **({"reason": self.reason} if self.reason else {}), "higher_is_better": self.higher_is_better}


@dataclass
class Agreement:
    """Pairwise Spearman and top-k overlap of the methods' scores (rows and columns in ``methods``' order)."""

    methods: list[str]
    k: int
    spearman: list[list[float | None]]
    top_k_overlap: list[list[float]]


@dataclass
class EvaluationResult:
    """Every method on every task of one scenario and model (:func:`core.evaluation.evaluate`)."""

    scenario: str
    seed: int
    model: ModelInfo
    settings: Settings
    tasks: dict[str, TaskInfo] = field(default_factory=dict)
    results: dict[str, dict[str, TaskResult]] = field(default_factory=dict)  # method -> task -> result
    methods: dict[str, MethodInfo] = field(default_factory=dict)
    agreement: Agreement | None = None        # None: fewer than two methods with scores (``{}`` in JSON)
    seconds: float | None = None              # the whole run, where a caller timed it
    extra: dict = field(default_factory=dict)  # further top-level keys a caller adds (the report's date), as given

    def to_json(self) -> dict:
        out = {"scenario": self.scenario, "seed": self.seed, "model": asdict(self.model),
               "settings": asdict(self.settings), "tasks": {n: t.to_json() for n, t in self.tasks.items()},
               "results": {m: {t: r.to_json() for t, r in row.items()} for m, row in self.results.items()},
               "methods": {m: i.to_json() for m, i in self.methods.items()},
               "agreement": asdict(self.agreement) if self.agreement else {}}
        if self.seconds is not None:
            out["seconds"] = self.seconds
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, doc: dict) -> EvaluationResult:
        known = {"scenario", "seed", "model", "settings", "tasks", "results", "methods", "agreement", "seconds"}
        return cls(doc["scenario"], doc["seed"], ModelInfo(**doc["model"]), Settings(**doc["settings"]),
                   {n: TaskInfo(**t) for n, t in doc["tasks"].items()},
                   {m: {t: TaskResult.from_json(r) for t, r in row.items()} for m, row in doc["results"].items()},
                   {m: MethodInfo.from_json(i) for m, i in doc["methods"].items()},
                   Agreement(**doc["agreement"]) if doc.get("agreement") else None, doc.get("seconds"),
                   {k: v for k, v in doc.items() if k not in known})

    def entry(self, method: str, task: str) -> TaskResult | None:
        """``method``'s result on ``task``; ``None`` if the pair was not run."""
        return self.results.get(method, {}).get(task)

    def value(self, method: str, task: str, key: str) -> float | None:
        """The value ``key`` of ``method`` on ``task``; ``None`` unless that result is ``ok``."""
        r = self.entry(method, task)
        return r.values[key] if r is not None and r.ok else None

    def headline(self, method: str, task: str) -> float | None:
        """The task's headline figure (:attr:`Task.headline`) for ``method``; ``None`` unless ``ok``."""
        return self.value(method, task, TASKS[task].headline)

    def ok(self, task: str) -> dict[str, TaskResult]:
        """The methods with a value on ``task``, in order, and their results."""
        return {m: row[task] for m, row in self.results.items() if task in row and row[task].ok}

    def problems(self) -> list[tuple[str, str, TaskResult]]:
        """``(method, task, result)`` of every pair without values (n/a or error), in order."""
        return [(m, t, r) for m, row in self.results.items() for t, r in row.items() if not r.ok]

    def best(self, task: str, keys: tuple[str, ...]) -> str | None:
        """The method (not a baseline) with the highest ``keys`` values on ``task``, later keys breaking ties;
        the first listed among equals; ``None`` if none has a value."""
        ok = {m: r for m, r in self.ok(task).items() if not self.methods[m].baseline}
        return max(ok, key=lambda m: tuple(ok[m].values[k] for k in keys), default=None)
