"""What the app keeps between reruns: built scenarios, models, fitted methods, predictions.

Everything here wraps a ``core`` call in a Streamlit cache, so a rerun costs nothing. A
model or a method precompute already in the disk cache (and sound) is loaded at once; one
that is not is computed by the process's :class:`core.jobs.JobRunner` in a background
thread, so a rerun (any click) never interrupts it, every session asking for the same thing
shares one job, and computations run one after another.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import streamlit as st

from core.cache import Cache
from core.data import Scenario, ScenarioSpec, build, get_spec
from core.errors import AttrexError
from core.evaluation import EvaluationResult, Settings, evaluate, load_kept
from core.features import FLIA, dualview_lrp, flia_many
from core.jobs import Job, JobRunner, in_process
from core.methods import Attributor, TrainingData, create, get_method
from core.methods.base import fit_for
from core.models import ModelSource, TrainConfig, TrainedModel, load_cached, predict_proba, train
from explorer import session


@dataclass(frozen=True)
class Selection:
    """What the sidebar chose: a preset and its seed (or ``spec``, a person's own data), and how to train
    its model (or ``ModelSource``, the person's own model, loaded)."""

    scenario: str
    seed: int
    config: TrainConfig | ModelSource
    spec: ScenarioSpec | None = None

    def scenario_spec(self) -> ScenarioSpec:
        return self.spec or get_spec(self.scenario, seed=self.seed)


@st.cache_resource(show_spinner=False, max_entries=8)
def _built(spec: ScenarioSpec) -> Scenario:
    return build(spec)


@st.cache_resource(show_spinner=False)
def _own_selections() -> dict[str, Selection]:
    """A person's own data and model as loaded in this server process, by a short token that a link can
    carry (the paths themselves stay out of links)."""
    return {}


def remember_own(selection: Selection) -> str:
    """The token a link carries for ``selection`` (random, and the same each time it is asked for)."""
    held = _own_selections()
    for token, kept in held.items():
        if kept == selection:
            return token
    token = secrets.token_urlsafe(16)
    held[token] = selection
    return token


def recall_own(token: str | None) -> Selection | None:
    return _own_selections().get(token or "")


def scenario_of(selection: Selection) -> Scenario:
    """The selection's scenario, built once per process."""
    return _built(selection.scenario_spec())


class _NotCached(Exception):
    """Raised (so never memoised) by the loaders below when the disk cache lacks a sound entry."""


@st.cache_resource(show_spinner=False, max_entries=6)
def _cached_model(selection: Selection) -> TrainedModel:
    """The model if the disk cache holds it sound (read and checked once per process)."""
    model = load_cached(scenario_of(selection), selection.config)
    if model is None:
        raise _NotCached
    return model


def _or_none(load, *args):
    try:
        return load(*args)
    except _NotCached:
        return None


@st.cache_resource(show_spinner=False)
def runner() -> JobRunner:
    """The process's background jobs: every session shares them, one computes at a time."""
    return JobRunner()


# Long work runs in a worker process (core.jobs.in_process), where the pages' reruns cannot starve it;
# in a thread of this process where the cache cannot be written (the worker's result could not be read
# back) or where WORKERS is off (a test that patches a function here).
WORKERS = True


def _work(fn, *args, load=None):
    """The job work for ``fn(*args, progress=...)``, decided when it runs (not on every rerun that builds it):
    in a worker process, whose result is then read back with ``load()`` (what the worker left in the disk
    cache; without ``load`` the worker sends its result), or in the job's thread (see WORKERS)."""
    def run(progress):
        root = Cache().root
        if WORKERS and os.access(root if root.exists() else root.parent, os.W_OK):
            result = in_process(fn, *args, send_result=load is None)(progress)
        else:
            result = fn(*args, progress=progress)
        if result is not None or load is None:
            return result
        result = load()  # what the work left in the cache (a worker's, or fit_for's, which returns nothing)
        if result is None:
            raise AttrexError("the work finished but its result cannot be read from the cache")
        return result
    return run


def model_or_job(selection: Selection) -> TrainedModel | Job:
    """The trained model if it is cached and sound; otherwise its background training :class:`Job`.

    A damaged cache entry goes through the same queue (the job retrains it, with progress).
    """
    sc = scenario_of(selection)

    return runner().run_or_job(
        ("train", selection), f"training {selection.config.arch} on {selection.scenario}",
        load=lambda: _or_none(_cached_model, selection),
        work=_work(train, sc, selection.config, load=lambda: _or_none(_cached_model, selection)))


def forget_cached() -> None:
    """Drop what this process read from the disk cache (after the cache was cleared): models and fitted methods.
    The job runner, the built scenarios and the sessions' own data are kept."""
    for loader in (_cached_model, _cached_method):
        loader.clear()


def forget_job(key: Hashable) -> None:
    runner().forget(key)


def cancel_job(key: Hashable) -> None:
    runner().cancel(key)


CUSTOM = "custom"  # the split name of a person's own input; its row is the input's digest


def test_input(selection: Selection, split: str, row: int):
    """The input being explained: row ``row`` of a test split, or (``split == "custom"``) the person's own
    input kept in the session under its digest ``row``."""
    if split == CUSTOM:
        return st.session_state[session.CUSTOM_INPUTS][row]
    return scenario_of(selection).test_split(split)[0][row]


def method_key(name: str, params: dict) -> tuple:
    return name, tuple(sorted(params.items()))


@st.cache_resource(show_spinner=False, max_entries=12)
def _cached_method(selection: Selection, name: str, params: tuple, _trained: TrainedModel) -> Attributor:
    """A fitted method whose precompute the disk cache holds sound (``_trained`` is the selection's model)."""
    sc = scenario_of(selection)
    method = create(name, _trained, TrainingData.of(sc), **dict(params))
    if not method.fit_cached():
        raise _NotCached
    return method


def check_method(selection: Selection, trained: TrainedModel, name: str, params: dict) -> None:
    """Raise :class:`AttrexError` if the method cannot be built with ``params`` for this model (nothing is fitted)."""
    create(name, trained, TrainingData.of(scenario_of(selection)), **params)


MODEL_GONE = "the model was removed from the cache before its precompute ran; it trains again when a page asks for it"


def method_or_job(selection: Selection, trained: TrainedModel, name: str, params: dict) -> Attributor | Job:
    """The fitted method (from the disk cache) or the background :class:`Job` precomputing it.

    The precompute fits the model in the disk cache. Removed from there (the Cache page) after the page had
    it, the model would be retrained unseen inside the precompute, behind "starting a worker process": the job
    fails at once with :data:`MODEL_GONE` instead, and the model this process holds is dropped (by the job), so the
    page's next run trains it the usual way, with its progress.
    """
    sc = scenario_of(selection)
    cls = get_method(name)
    cls.check(trained, TrainingData.of(sc), params)  # at once, and without building the method on every rerun
    key = method_key(name, params)
    fit = _work(fit_for, sc, selection.config, name, params,
                load=lambda: _or_none(_cached_method, selection, *key, trained))

    def work(progress):
        if isinstance(selection.config, TrainConfig) and load_cached(sc, selection.config) is None:
            _cached_model.clear(selection)  # (a process-wide cache: any thread may clear it)
            raise AttrexError(MODEL_GONE)
        return fit(progress)

    return runner().run_or_job(("fit", selection, key), f"precomputing {cls.title}",
                               load=lambda: _or_none(_cached_method, selection, *key, trained), work=work)


@st.cache_data(show_spinner=False, max_entries=256)
def top_k(selection: Selection, key: tuple, split: str, row: int, target: int | None, k: int,
          _method: Attributor) -> dict[str, np.ndarray]:
    """Proponents and opponents of one test sample (``_method`` is determined by ``selection`` and ``key``)."""
    x = test_input(selection, split, row)[None]
    t0 = time.perf_counter()
    top = _method.top_k(x, target, k=k)
    return {"proponents": top.proponents[0].numpy(), "proponent_scores": top.proponent_scores[0].numpy(),
            "opponents": top.opponents[0].numpy(), "opponent_scores": top.opponent_scores[0].numpy(),
            "target": int(top.targets[0]), "seconds": time.perf_counter() - t0}


@st.cache_data(show_spinner=False, max_entries=64)
def top_k_among(selection: Selection, key: tuple, split: str, row: int, target: int | None, k: int,
                among: tuple[int, ...], _method: Attributor) -> dict[str, np.ndarray]:
    """:func:`top_k` restricted to the training points ``among`` (a flagged list): the sample's whole score row
    (one matrix product), then its ``k`` largest and ``k`` smallest entries there."""
    x = test_input(selection, split, row)[None]
    t0 = time.perf_counter()
    _, targets = _method.prepare_inputs(x, target)
    scores = _method.scores(x, targets)[0].numpy()
    ids = np.asarray(among, dtype=np.int64)
    order = ids[np.argsort(-scores[ids], kind="stable")]
    k = min(k, len(ids))
    return {"proponents": order[:k], "proponent_scores": scores[order[:k]],
            "opponents": order[::-1][:k], "opponent_scores": scores[order[::-1][:k]],
            "target": int(targets[0]), "seconds": time.perf_counter() - t0}


@st.cache_data(show_spinner=False, max_entries=32)
def probabilities(selection: Selection, split: str, _trained: TrainedModel) -> np.ndarray:
    """Class probabilities ``[n, n_classes]`` of a test split of the selection's model (which it determines)."""
    x, _ = scenario_of(selection).test_split(split)
    return predict_proba(_trained.model, x).numpy()


def flia_pair(selection: Selection, split: str, row: int, train_id: int, target: int,
              _trained: TrainedModel, direction: str = "descent") -> dict[str, np.ndarray]:
    """FLIA of training point ``train_id`` for test sample ``row`` of ``split``: :func:`flia_pairs` of one (which
    keeps it in memory; on disk it is cached as :func:`core.features.flia` caches it)."""
    return flia_pairs(selection, split, row, (train_id,), target, _trained, direction)[0]


@st.cache_data(show_spinner=False, max_entries=128)
def flia_pairs(selection: Selection, split: str, row: int, train_ids: tuple[int, ...], target: int,
               _trained: TrainedModel, direction: str = "descent") -> list[dict[str, np.ndarray]]:
    """FLIA of several training points for one test sample: those not on disk yet in one batched run, each
    disk-cached as :func:`flia_pair` caches it (:func:`core.features.flia_many`)."""
    sc = scenario_of(selection)
    ids = list(train_ids)
    results = flia_many(_trained, sc.x_train[ids], sc.y_train[ids], test_input(selection, split, row), target,
                        direction=direction)
    return [{"heatmap": r.heatmap.numpy(), "il_path": r.il_path.numpy(), "gap": float(r.gap),
             "il_change": float(r.il_change), "confidence": r.confidence.numpy()} for r in results]


@st.cache_data(show_spinner=False, max_entries=64)
def flia_texts(selection: Selection, split: str, row: int, train_ids: tuple[int, ...], target: int,
               _trained: TrainedModel) -> np.ndarray:
    """FLIA token scores ``[len(train_ids), L]`` of training texts for a test text, in one batched run."""
    sc = scenario_of(selection)
    ids = list(train_ids)
    return FLIA(_trained, test_input(selection, split, row), target).run(sc.x_train[ids], sc.y_train[ids]).heatmap.numpy()


@st.cache_data(show_spinner=False, max_entries=128)
def lrp_pair(selection: Selection, split: str, row: int, train_id: int, target: int,
             _dualview: Attributor) -> dict[str, np.ndarray]:
    """DualView-LRP heatmaps of a (test, training) pair (``_dualview``: the selection's fitted DualView)."""
    r = dualview_lrp(_dualview, test_input(selection, split, row), train_id, target)
    return {"test": r.test_heatmap.numpy(), "train": r.train_heatmap.numpy(), "score": r.score,
            "conservation": (r.conservation_test, r.conservation_train), "composite": r.composite}


# ----------------------------------------------------------------------------- evaluation and retraining


def evaluation_or_job(selection: Selection, trained: TrainedModel, methods: tuple[str, ...], tasks: tuple[str, ...],
                      settings: Settings | None = None) -> EvaluationResult | Job:
    """The evaluation of ``methods`` on ``tasks`` (:func:`core.evaluation.evaluate`): read at once if the disk
    cache holds every result, else a background :class:`Job` computing what is missing, with progress."""
    sc = scenario_of(selection)
    settings = settings or Settings()
    return runner().run_or_job(
        ("evaluate", selection, methods, tasks, settings), f"evaluating {len(methods)} method(s)",
        load=lambda: cached_evaluation(selection, trained, methods, tasks, settings),
        work=_work(evaluate, sc, trained, list(methods), list(tasks), settings))


def cached_evaluation(selection: Selection, trained: TrainedModel, methods: tuple[str, ...], tasks: tuple[str, ...],
                      settings: Settings) -> EvaluationResult | None:
    """The evaluation if the disk cache holds every result (nothing is computed), else ``None``."""
    sc = scenario_of(selection)
    return evaluate(sc, trained, list(methods), list(tasks), settings, compute=False)


def retrain_or_job(selection: Selection, drop: tuple[int, ...] = (), relabel: tuple[tuple[int, int], ...] = ()
                   ) -> TrainedModel | Job:
    """The selection's model retrained without the training points ``drop`` and with ``relabel``'s
    ``(id, label)`` pairs applied, with the same recipe (cached on disk like any model)."""
    if not isinstance(selection.config, TrainConfig):
        raise AttrexError("attrex does not know how this model was trained (you brought it), so it cannot train it "
                          "again; export the list and retrain it with your own recipe")
    sc = scenario_of(selection)
    if relabel:
        sc = sc.relabel([i for i, _ in relabel], [y for _, y in relabel])
    if drop:
        gone = set(drop)
        sc = sc.subset([i for i in range(len(sc.y_train)) if i not in gone])
    what = " and ".join(x for x in (f"without {len(drop)} point(s)" if drop else "",
                                     f"with {len(relabel)} relabelled" if relabel else "") if x)
    return runner().run_or_job(("retrain", selection, drop, relabel), f"retraining {what}",
                               load=lambda: load_cached(sc, selection.config),
                               work=_work(train, sc, selection.config, load=lambda: load_cached(sc, selection.config)))


@st.cache_data(show_spinner=False, max_entries=32)
def self_scores(selection: Selection, key: tuple, _method: Attributor) -> np.ndarray:
    """A fitted method's self-influence ``[n_train]`` (``_method`` is determined by ``selection`` and ``key``)."""
    return _method.self_scores().numpy()


@st.cache_data(show_spinner=False, max_entries=16)
def train_probabilities(selection: Selection, _trained: TrainedModel) -> np.ndarray:
    """Class probabilities ``[n_train, n_classes]`` of the training points under the selection's model."""
    return predict_proba(_trained.model, scenario_of(selection).x_train).numpy()


@st.cache_data(show_spinner=False, max_entries=32)
def evaluation_ranking(selection: Selection, _trained: TrainedModel, method: str, task: str,
                       settings: Settings) -> np.ndarray | None:
    """The per-training-point ranking an evaluation kept (mean score over triggered samples, self-scores), if cached."""
    sc = scenario_of(selection)
    m = create(method, _trained, TrainingData.of(sc))  # only its cache key is needed: nothing is fitted
    kept = load_kept(sc, _trained, m, task, settings)
    return None if kept is None or kept.ranking is None else kept.ranking.numpy()


@st.cache_data(show_spinner=False, max_entries=32)
def score_rows(selection: Selection, key: tuple, rows: tuple[int, ...], _method: Attributor) -> np.ndarray:
    """A fitted method's scores ``[len(rows), n_train]`` for clean test rows, each explained for its predicted class."""
    x = scenario_of(selection).x_test[list(rows)]
    return _method.scores(x).numpy()
