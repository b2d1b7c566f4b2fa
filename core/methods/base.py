"""The one interface every instance-level attribution method implements, and its parameter schema.

A method is built from a trained model (its final weights and its checkpoints) and the
training set, with keyword parameters checked against the method's schema::

    method = create("tracin-rp", trained, TrainingData.of(scenario), dim=1024)
    method.fit(progress)                     # precompute once; cached on disk
    S = method.scores(x_test)                # [n_test, n_train], positive = proponent
    top = method.top_k(x_test, k=8)          # the k largest and k smallest scores per row
    s = method.self_scores()                 # [n_train]: S[i, i] with test set = train set

**Sign convention**: a positive score means the training point's presence supports the
explained output (lowers the test loss); negative means it works against it.
**Target**: the explained class is the model's predicted class unless ``target`` is given.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from core.cache import Artefact, Cache, CacheError, make_key
from core.errors import AttrexError
from core.models.training import TrainedModel, predict

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Param:
    """One parameter of a method: its type, default, range and help text.

    ``kind`` is ``int``, ``float``, ``bool``, ``choice`` or ``text`` (a non-empty string the
    method interprets, e.g. a parameter subset; the method rejects what it cannot use); numeric parameters have an
    inclusive range ``[low, high]`` (``None`` = unbounded); ``log`` marks a parameter best
    stepped on a log scale (the UI uses it).
    """

    name: str
    kind: str
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    log: bool = False

    def check(self, value: Any) -> Any:
        """``value`` coerced to the parameter's type, or an :class:`AttrexError` saying what is accepted."""
        where = f"parameter {self.name!r}"
        if self.kind == "choice":
            if value not in self.choices:
                raise AttrexError(f"{where} must be one of {', '.join(map(str, self.choices))}; got {value!r}")
            return value
        if self.kind == "text":
            if not isinstance(value, str) or not value.strip():
                raise AttrexError(f"{where} must be a non-empty string; got {value!r}")
            return value.strip()
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            raise AttrexError(f"{where} must be true or false; got {value!r}")
        try:
            if self.kind == "int":
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                number = int(value)
                if isinstance(value, str) and str(number) != value.strip():
                    raise ValueError
            else:
                if isinstance(value, bool):
                    raise ValueError
                number = float(value)
        except (TypeError, ValueError):
            raise AttrexError(f"{where} must be {'an integer' if self.kind == 'int' else 'a number'}; got {value!r}") from None
        if self.kind != "int" and not math.isfinite(number):  # an int is finite (and may be too large for a float)
            raise AttrexError(f"{where} must be finite; got {value!r}")
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise AttrexError(f"{where} must lie in {self.range_text()}; got {value!r}")
        return number

    def range_text(self) -> str:
        if self.kind == "choice":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        if self.kind == "bool":
            return "{true, false}"
        if self.kind == "text":
            return "text"
        def fmt(v: float) -> str:
            return str(int(v)) if self.kind == "int" else f"{v:g}"

        lo = "-inf" if self.low is None else fmt(self.low)
        hi = "inf" if self.high is None else fmt(self.high)
        return f"[{lo}, {hi}]"

    def describe(self) -> dict:
        d = {"name": self.name, "type": self.kind, "default": self.default, "help": self.help,
             "range": self.range_text()}
        if self.kind in ("int", "float"):
            d.update(low=self.low, high=self.high, log=self.log)
        if self.kind == "choice":
            d["choices"] = list(self.choices)
        return d


@dataclass(frozen=True)
class TrainingData:
    """The training set a method attributes to: inputs ``x`` ``[n, ...]``, labels ``y`` ``[n]``.

    ``key`` identifies the data in cache keys (a scenario's fingerprint). ``scenario`` is the
    :class:`~core.data.Scenario` it came from, when there is one (a method that retrains,
    e.g. an ensemble of independently trained models, needs it); it is not part of the key.
    """

    x: torch.Tensor
    y: torch.Tensor
    n_classes: int
    key: str
    scenario: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, scenario) -> TrainingData:
        return cls(scenario.x_train, scenario.y_train, scenario.n_classes, scenario.fingerprint, scenario)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def is_text(self) -> bool:
        return not torch.is_floating_point(self.x)


@dataclass
class TopK:
    """Per test row: the ``k`` proponents (largest scores, descending) and opponents (smallest, ascending)."""

    proponents: torch.Tensor          # [n_test, k] training indices
    proponent_scores: torch.Tensor    # [n_test, k]
    opponents: torch.Tensor           # [n_test, k]
    opponent_scores: torch.Tensor     # [n_test, k]
    targets: torch.Tensor             # [n_test] the explained classes


REGISTRY: dict[str, type[Attributor]] = {}


def register(cls: type[Attributor]) -> type[Attributor]:
    """Class decorator: add a method to the registry under ``cls.name``."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise RuntimeError(f"two methods named {cls.name!r}")
    names = [p.name for p in cls.params]
    if len(set(names)) != len(names):
        raise RuntimeError(f"{cls.name}: duplicate parameter names")
    for p in cls.params:
        p.check(p.default)  # a default outside its own range is a programming error
    REGISTRY[cls.name] = cls
    return cls


def offered(**flags: bool) -> list[str]:
    """The registered methods whose class attributes equal ``flags`` (e.g. ``per_test=True``): the methods
    by name, then the baselines by name. Every list of methods the CLI, the pages and the benchmarks offer."""
    return sorted((n for n, c in REGISTRY.items() if all(getattr(c, f) == v for f, v in flags.items())),
                  key=lambda n: (REGISTRY[n].baseline, n))


class Attributor(ABC):
    """Base class: validation, caching and the query plumbing shared by every method.

    A subclass sets ``name``, ``title``, ``description``, ``params``, ``version`` and
    implements ``_compute`` (the precompute, returning tensors and JSON metadata that are
    cached), ``_restore`` (load them), ``_scores`` and ``_self_scores``.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    version: ClassVar[str] = "1"
    needs_checkpoints: ClassVar[bool] = False
    # Whether :meth:`self_scores` means something: a point's influence on its own loss, which
    # carries a label-quality signal (mislabeled points stand out). A method whose self-score
    # ignores the label (a gradient cosine is 1 for every point; a logit gradient's norm
    # does not see the label) sets it False, and its ``self_scores()`` refuses.
    self_influence: ClassVar[bool] = True
    # Whether the self-score is the diagonal of ``scores(x_train, y_train)``; a method whose
    # queries depend on the test point in a way its self-score does not (Integrated
    # Influence's baseline unlearns the test point) sets it False and says how in its docstring.
    self_is_diagonal: ClassVar[bool] = True
    # Whether a positive score predicts that removing the point raises the explained loss (an
    # influence estimate). Similarities (GradDot, GradCos: the DualView paper's SIM baseline)
    # share the sign convention only loosely: similar means positive, whatever the label.
    estimates_removal: ClassVar[bool] = True
    # Whether :meth:`scores` exists: a baseline that only scores training points (the training
    # loss) sets it False; its ``scores()`` and ``top_k()`` refuse and only ``self_scores()`` answers.
    per_test: ClassVar[bool] = True
    # Whether the precompute retrains models of the scenario's recipe (cleanlab's k folds): it
    # then needs ``TrainingData.of(scenario)`` and refuses bare tensors with a clear error.
    retrains: ClassVar[bool] = False
    # A reference point rather than an attribution method (random scores, the training loss):
    # listed after the methods wherever they are offered.
    baseline: ClassVar[bool] = False
    # The name its precompute is cached under (default: its own): a method that only reads
    # another's cached precompute differently (GAS normalises TracIn's gradients) shares it.
    cache_name: ClassVar[str] = ""
    # A shardable method's precompute is per training row (``_compute_rows``) plus a global
    # step on all rows (``_finish``), so it can run in shards in separate processes or
    # machines and be merged (see :meth:`fit_shard`, :meth:`merge_shards`).
    shardable: ClassVar[bool] = False
    query_batch: ClassVar[int] = 64  # test rows scored at once by :meth:`scores`

    def __init__(self, trained: TrainedModel, data: TrainingData, cache: Cache | None = None, **params: Any):
        hparams = self.check(trained, data, params)
        self.trained = trained
        self.model = trained.model.eval()
        self.data = data
        self.cache = cache
        self.hparams = hparams
        self.fitted = False
        self.fit_seconds: float | None = None
        self.fit_status = ""
        self.info: dict = {}  # diagnostics reported by the precompute (duality gap, solver residuals, ...)

    # ----- parameters -------------------------------------------------------------------------
    @classmethod
    def check(cls, trained: TrainedModel, data: TrainingData, params: dict[str, Any]) -> dict[str, Any]:
        """What building the method checks first, without building it: raises :class:`AttrexError` if it
        cannot run on this model and data with ``params``; returns the parameters with defaults filled in.
        (A method may check more when it is built, e.g. a parameter subset against the model's layers.)"""
        if len(data.x) != len(data.y) or len(data) == 0:
            raise AttrexError(f"training data needs as many labels as inputs (got {len(data.x)} and {len(data.y)})")
        if cls.needs_checkpoints and not trained.checkpoints_given:
            raise AttrexError(f"{cls.name} sums over the model's training checkpoints, and this model came without "
                              "them: pass its checkpoint folder (--checkpoints DIR with checkpoints.json)")
        if cls.retrains and not trained.retrainable:
            raise AttrexError(f"{cls.name} retrains the model on parts of the training set, and attrex does not know "
                              "how this model was trained (it was loaded, not trained here)")
        return cls.check_params(params)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """All parameters with defaults filled in and values checked against the schema."""
        known = {p.name: p for p in cls.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            accepted = ", ".join(known) or "none"
            raise AttrexError(f"method {cls.name!r} has no parameter {', '.join(map(repr, unknown))}; accepted: {accepted}")
        return {name: p.check(params[name]) if name in params else p.default for name, p in known.items()}

    @classmethod
    def describe(cls) -> dict:
        return {"name": cls.name, "title": cls.title, "description": cls.description,
                "reference": cls.reference, "self_influence": cls.self_influence,
                "estimates_removal": cls.estimates_removal, "per_test": cls.per_test, "baseline": cls.baseline,
                "retrains": cls.retrains,
                "params": [p.describe() for p in cls.params]}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every parameter's default value, by name."""
        return {p.name: p.default for p in cls.params}

    # ----- precompute and cache ---------------------------------------------------------------
    def cache_key(self) -> str:
        name = self.cache_name or self.name
        parts = {"method": name, "params": self.hparams, "model": self.trained.key, "data": self.data.key}
        return make_key(parts, f"{name}-{self.version}")

    def fit(self, progress: Progress | None = None) -> Attributor:
        """Precompute what queries need (training representations, solver state), cached on disk.

        ``fit_seconds`` is the precompute's time (as first measured, also on a cache hit);
        ``fit_status`` is the cache's ``hit`` / ``computed`` / ``recomputed: <why>``.
        """
        return self._fit_with(self._compute, progress)

    def _fit_with(self, precompute: Callable[[Progress | None], tuple[dict[str, torch.Tensor], dict]],
                  progress: Progress | None) -> Attributor:
        """:meth:`fit` with ``precompute`` standing for :meth:`_compute` (the merge of shards, say)."""
        if self.fitted:
            return self

        def compute():
            t0 = time.perf_counter()
            tensors, meta = precompute(progress)
            label = f"{self.name} ({', '.join(f'{k}={v}' for k, v in self.hparams.items()) or 'no parameters'})"
            return tensors, {**meta, "fit_seconds": time.perf_counter() - t0, "label": label}

        art: Artefact = (self.cache or Cache()).get_or_compute("method", self.cache_key(), compute, self._validate)
        self._take(art)
        if progress:
            progress(1.0, "loaded from cache" if art.status == "hit" else "precomputed")
        return self

    def fit_cached(self) -> bool:
        """Load the precompute if the cache holds it sound (nothing is computed); whether it did."""
        if self.fitted:
            return True
        try:
            art = (self.cache or Cache()).load("method", self.cache_key(), self._validate)
        except (FileNotFoundError, CacheError):
            return False
        self._take(art)
        return True

    def _take(self, art: Artefact) -> None:
        self._restore(art.tensors, art.meta)
        self.info = dict(art.meta.get("info", {}))
        self.fit_seconds = art.meta.get("fit_seconds")
        self.fit_status = art.status
        self.fitted = True

    @abstractmethod
    def _compute(self, progress: Progress | None) -> tuple[dict[str, torch.Tensor], dict]:
        """The precompute: tensors (per-training-row ones named ``train/...``) and JSON metadata, cached by :meth:`fit`."""

    # ----- sharded precompute -----------------------------------------------------------------
    @staticmethod
    def shard_rows(i: int, n: int, total: int) -> tuple[int, int]:
        """Training rows ``[start, stop)`` of shard ``i`` of ``n`` (contiguous, sizes differ by at most one)."""
        if not (isinstance(i, int) and isinstance(n, int) and n >= 1 and 0 <= i < n):
            raise AttrexError(f"shard must be i/n with 0 <= i < n; got {i}/{n}")
        if n > total:
            raise AttrexError(f"cannot split {total} training points into {n} shards")
        return i * total // n, (i + 1) * total // n

    def _shard_key(self, i: int, n: int) -> str:
        return make_key({"method": self.cache_key(), "shard": i, "of": n}, "shard-1")

    def fit_shard(self, i: int, n: int, progress: Progress | None = None) -> Artefact:
        """Precompute shard ``i`` of ``n`` of the training rows and cache it (run one per process or machine).

        A cached shard that is damaged or holds other rows is reported and recomputed.
        """
        if not self.shardable:
            raise AttrexError(f"method {self.name!r} cannot be precomputed in shards (its precompute is not per row)")
        start, stop = self.shard_rows(i, n, len(self.data))

        def validate(tensors: dict[str, torch.Tensor], meta: dict) -> None:
            if meta.get("rows") != [start, stop]:
                raise ValueError(f"it holds rows {meta.get('rows')}, not [{start}, {stop}]")
            for k, t in tensors.items():
                if t.shape[0] != stop - start:
                    raise ValueError(f"{k} has {t.shape[0]} rows, not the {stop - start} of rows {start}:{stop}")

        cache = self.cache or Cache()
        return cache.get_or_compute("shard", self._shard_key(i, n),
                                    lambda: (self._compute_rows(start, stop, progress), {"rows": [start, stop]}),
                                    validate)

    def missing_shards(self, n: int) -> list[int]:
        cache = self.cache or Cache()
        return [i for i in range(n) if not cache.contains("shard", self._shard_key(i, n))]

    def merge_shards(self, n: int, progress: Progress | None = None) -> Attributor:
        """Merge the ``n`` cached shards into the full precompute (cached as :meth:`fit` caches it) and load it.

        A shard never computed is an error naming the ``--shard i/n`` runs still to do; one found
        damaged or holding other rows is reported and recomputed here (see :meth:`fit_shard`).
        """
        if not self.shardable:
            raise AttrexError(f"method {self.name!r} cannot be precomputed in shards")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise AttrexError(f"the number of shards to merge must be a positive integer; got {n!r}")
        self.shard_rows(0, n, len(self.data))  # at most one shard per training point
        missing = self.missing_shards(n)
        if missing:
            raise AttrexError(f"shards {missing} of {n} are not in the cache yet; run `attrex prepare --shard i/{n}` for them")

        def merged(progress: Progress | None) -> tuple[dict[str, torch.Tensor], dict]:
            parts = [self.fit_shard(i, n, progress).tensors for i in range(n)]
            tensors, meta = self._finish({k: torch.cat([p[k] for p in parts]) for k in parts[0]}, progress)
            self._validate(tensors, meta)
            return tensors, {**meta, "merged_from": n}

        self.fitted = False
        return self._fit_with(merged, progress)

    @abstractmethod
    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Take over the precompute's tensors and metadata (fresh or from the cache)."""

    def _validate(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Check a cached artefact before use (raise ``ValueError`` when unusable); subclasses extend it."""
        n = len(self.data)
        for k, t in tensors.items():
            if k.startswith("train/") and t.shape[0] != n:
                raise ValueError(f"{k} has {t.shape[0]} rows for {n} training points")

    # ----- queries ----------------------------------------------------------------------------
    def prepare_inputs(self, x: torch.Tensor, target: torch.Tensor | int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` as a batch ``[n, *input_shape]`` and the explained classes ``[n]``; clear errors otherwise."""
        if not isinstance(x, torch.Tensor):
            raise AttrexError(f"x must be a torch.Tensor; got {type(x).__name__}")
        shape = tuple(self.data.x.shape[1:])
        if tuple(x.shape) == shape:
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != shape:
            raise AttrexError(f"x must have shape [n, {', '.join(map(str, shape))}] (or one sample of shape "
                              f"{list(shape)}); got {list(x.shape)}")
        if self.data.is_text and torch.is_floating_point(x):
            raise AttrexError("x must hold token ids (an integer tensor) for a text model")
        if not self.data.is_text:
            if not torch.is_floating_point(x):
                raise AttrexError(f"x must be a floating-point image tensor; got {x.dtype}")
            if not torch.isfinite(x).all():
                raise AttrexError("x holds NaN or infinite values")
            x = x.to(self.data.x.dtype)
        n_classes = self.data.n_classes
        if target is None:
            target = predict(self.model, x).argmax(1)
        else:
            target = torch.as_tensor(target)
            if target.dim() == 0:
                target = target.expand(len(x))
            if target.shape != (len(x),):
                raise AttrexError(f"target must be one class or one per sample ([{len(x)}]); got shape {list(target.shape)}")
            if torch.is_floating_point(target) or target.dtype == torch.bool:
                raise AttrexError("target must hold integer class indices")
            if len(target) and (target.min() < 0 or target.max() >= n_classes):
                raise AttrexError(f"target must lie in [0, {n_classes - 1}]; got {target.tolist()[:8]}")
            target = target.long()
        return x, target

    def scores(self, x: torch.Tensor, target: torch.Tensor | int | None = None) -> torch.Tensor:
        """Attribution scores ``[n_test, n_train]`` of each training point for each test row (positive = proponent).

        Raises :class:`AttrexError` for a method without per-test-point scores (``per_test = False``).
        """
        if not self.per_test:
            raise AttrexError(f"method {self.name!r} has no per-test-point scores: it scores training points only "
                              "(self_scores()), e.g. for mislabel detection")
        x, target = self.prepare_inputs(x, target)
        self.fit()
        out = [self._scores(x[i: i + self.query_batch], target[i: i + self.query_batch])
               for i in range(0, len(x), self.query_batch)]
        return torch.cat(out) if out else torch.empty(0, len(self.data))

    def self_scores(self) -> torch.Tensor:
        """Self-influence ``[n_train]``: each training point's score on itself (with its own label as target).

        Raises :class:`AttrexError` for a method without a meaningful self-influence
        (``self_influence = False``): ranking training data by it would mislead.
        """
        if not self.self_influence:
            raise AttrexError(f"method {self.name!r} has no self-influence that reflects label quality (its score of a "
                              "point on itself ignores the label); rank training data with tracin, influence, trak "
                              "or representer instead")
        self.fit()
        return self._self_scores()

    def top_k(self, x: torch.Tensor, target: torch.Tensor | int | None = None, k: int = 8) -> TopK:
        """The ``k`` strongest proponents and opponents of each test row."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise AttrexError(f"k must be a positive integer; got {k!r}")
        x, target = self.prepare_inputs(x, target)
        s = self.scores(x, target)
        k = min(k, s.shape[1])
        hi = s.topk(k, dim=1)
        lo = s.topk(k, dim=1, largest=False)
        return TopK(hi.indices, hi.values, lo.indices, lo.values, target)

    @abstractmethod
    def _scores(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scores ``[n, n_train]`` for a checked batch ``x`` and its classes ``target`` ``[n]``."""

    @abstractmethod
    def _self_scores(self) -> torch.Tensor:
        """Self-influence ``[n_train]``."""


class RowwiseAttributor(Attributor):
    """A method whose precompute is one block of rows per training point plus a global step.

    Such a precompute can run in shards (:meth:`fit_shard` in separate processes or on
    separate machines) and be merged (:meth:`merge_shards`) into exactly what :meth:`fit`
    computes in one go.
    """

    shardable = True

    def _compute(self, progress: Progress | None) -> tuple[dict[str, torch.Tensor], dict]:
        return self._finish(self._compute_rows(0, len(self.data), progress), progress)

    @abstractmethod
    def _compute_rows(self, start: int, stop: int, progress: Progress | None) -> dict[str, torch.Tensor]:
        """Per-row precompute for training rows ``start:stop``: tensors named ``train/...`` with those rows."""

    def _finish(self, tensors: dict[str, torch.Tensor], progress: Progress | None) -> tuple[dict[str, torch.Tensor], dict]:
        """The precompute's global step, given the per-row tensors of all rows."""
        return tensors, {}


def get_method(name: str) -> type[Attributor]:
    from core import methods  # noqa: F401  (importing the package registers every method)

    if name not in REGISTRY:
        raise AttrexError(f"unknown method {name!r}; accepted: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def create(name: str, trained: TrainedModel, data: TrainingData, cache: Cache | None = None, **params: Any) -> Attributor:
    """A method by registry name, with its parameters checked against its schema."""
    return get_method(name)(trained, data, cache=cache, **params)


def fit_for(scenario, config, name: str, params: dict, progress: Progress | None = None) -> None:
    """Train (or load) the scenario's model with ``config`` and fit method ``name`` on it, in the default cache.

    Module-level and with picklable arguments, so a worker process can run it
    (:func:`core.jobs.in_process`); the caller reads the fitted method from the cache.
    """
    from core.models.training import train

    trained = train(scenario, config)
    create(name, trained, TrainingData.of(scenario), **params).fit(progress)
