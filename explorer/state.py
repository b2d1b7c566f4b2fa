"""What the app keeps between reruns: built scenarios, models, fitted methods, predictions.

Everything here wraps a ``core`` call in a Streamlit cache, so a rerun costs nothing. A
model or a method precompute already in the disk cache is loaded at once; one that is not
is computed in a background thread owned by a process-wide job registry, so a rerun (any
click) never interrupts it, every session asking for the same thing shares one job, and
computations run one after another.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st

from core.cache import Cache
from core.data import Scenario, build, get_spec
from core.errors import AttrexError
from core.features import FLIA, dualview_lrp, flia
from core.methods import Attributor, TrainingData, create
from core.models import TrainConfig, TrainedModel, is_cached, predict_proba, train


@dataclass(frozen=True)
class Selection:
    """What the sidebar chose: a preset, its seed, and how to train its model."""

    scenario: str
    seed: int
    config: TrainConfig


@st.cache_resource(show_spinner=False, max_entries=8)
def scenario(name: str, seed: int) -> Scenario:
    return build(get_spec(name, seed=seed))


@st.cache_resource(show_spinner="Loading the model from the cache…", max_entries=6)
def load_model(selection: Selection) -> TrainedModel:
    """A model that is in the disk cache (see :func:`model_or_job`)."""
    return train(scenario(selection.scenario, selection.seed), selection.config)


@dataclass
class Job:
    """Long work (a training, a method's precompute) running in a background thread.

    One job computes at a time (two at once would only split the same cores); the others
    wait their turn. ``label`` says what it is, ``result`` or ``error`` how it ended.
    """

    key: Hashable
    label: str
    work: Callable[[Callable[[float, str], None]], Any]
    fraction: float = 0.0
    message: str = "waiting for another computation to finish"
    result: Any = None
    error: str | None = None
    started: float = field(default_factory=time.time)

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def _progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = fraction, message

    def _run(self) -> None:
        try:
            with _compute_lock:
                self.started, self.message = time.time(), "starting"
                self.result = self.work(self._progress)
        except AttrexError as exc:
            self.error = str(exc)
        except Exception as exc:  # shown to the user, never a silent failure
            self.error = f"{type(exc).__name__}: {exc}"


@st.cache_resource(show_spinner=False)
def _jobs() -> dict[Hashable, Job]:
    return {}


_jobs_lock = threading.Lock()  # guards the registry
_compute_lock = threading.Lock()  # one computation at a time


def run_or_job(key: Hashable, label: str, ready: Callable[[], bool], load: Callable[[], Any],
               work: Callable[[Callable[[float, str], None]], Any]) -> Any:
    """``load()`` when ``ready()`` (the result is in the disk cache); otherwise the background :class:`Job`.

    Every session asking for the same ``key`` shares one job. A finished job hands over its
    result once and is dropped (later reruns load it from the disk cache); a failed job
    stays, with its error, until :func:`forget_job` (the page's "Try again").
    """
    with _jobs_lock:
        jobs = _jobs()
        job = jobs.get(key)
        if job is not None:
            if not job.done or job.error:
                return job
            del jobs[key]
            return job.result
        if not ready():
            job = jobs[key] = Job(key, label, work)
            threading.Thread(target=job._run, name=f"attrex-{label}", daemon=True).start()
            return job
    return load()


def model_or_job(selection: Selection) -> TrainedModel | Job:
    """The trained model if it is cached; otherwise its background training :class:`Job`."""
    sc = scenario(selection.scenario, selection.seed)
    return run_or_job(
        ("train", selection), f"training {selection.config.arch} on {selection.scenario}",
        ready=lambda: is_cached(sc, selection.config), load=lambda: load_model(selection),
        work=lambda progress: train(sc, selection.config, progress=progress))


def forget_job(key: Hashable) -> None:
    with _jobs_lock:
        _jobs().pop(key, None)


def method_key(name: str, params: dict) -> tuple:
    return name, tuple(sorted(params.items()))


@st.cache_resource(show_spinner="Loading the precomputed attributions…", max_entries=12)
def load_method(selection: Selection, name: str, params: tuple, _trained: TrainedModel) -> Attributor:
    """A fitted method whose precompute is in the disk cache (``_trained`` is determined by ``selection``)."""
    sc = scenario(selection.scenario, selection.seed)
    return create(name, _trained, TrainingData.of(sc), **dict(params)).fit()


def check_method(selection: Selection, trained: TrainedModel, name: str, params: dict) -> None:
    """Raise :class:`AttrexError` if the method cannot be built with ``params`` for this model (nothing is fitted)."""
    create(name, trained, TrainingData.of(scenario(selection.scenario, selection.seed)), **params)


def method_or_job(selection: Selection, trained: TrainedModel, name: str, params: dict) -> Attributor | Job:
    """The fitted method (from the disk cache) or the background :class:`Job` precomputing it."""
    sc = scenario(selection.scenario, selection.seed)
    method = create(name, trained, TrainingData.of(sc), **params)  # checks the parameters at once
    key = method_key(name, params)
    return run_or_job(
        ("fit", selection, key), f"precomputing {method.title}",
        ready=lambda: Cache().contains("method", method.cache_key()),
        load=lambda: load_method(selection, *key, trained),
        work=lambda progress: method.fit(progress))


@st.cache_data(show_spinner=False, max_entries=256)
def top_k(selection: Selection, key: tuple, split: str, row: int, target: int | None, k: int,
          _method: Attributor) -> dict[str, np.ndarray]:
    """Proponents and opponents of one test sample (``_method`` is determined by ``selection`` and ``key``)."""
    x, _ = scenario(selection.scenario, selection.seed).test_split(split)
    t0 = time.perf_counter()
    top = _method.top_k(x[row: row + 1], target, k=k)
    return {"proponents": top.proponents[0].numpy(), "proponent_scores": top.proponent_scores[0].numpy(),
            "opponents": top.opponents[0].numpy(), "opponent_scores": top.opponent_scores[0].numpy(),
            "target": int(top.targets[0]), "seconds": time.perf_counter() - t0}


@st.cache_data(show_spinner=False, max_entries=32)
def probabilities(selection: Selection, split: str, _trained: TrainedModel) -> np.ndarray:
    """Class probabilities ``[n, n_classes]`` of a test split of the selection's model (which it determines)."""
    x, _ = scenario(selection.scenario, selection.seed).test_split(split)
    return predict_proba(_trained.model, x).numpy()


@st.cache_data(show_spinner=False, max_entries=128)
def flia_pair(selection: Selection, split: str, row: int, train_id: int, target: int,
              _trained: TrainedModel) -> dict[str, np.ndarray]:
    """FLIA of training point ``train_id`` for test sample ``row`` of ``split`` (disk-cached by :func:`core.features.flia`)."""
    sc = scenario(selection.scenario, selection.seed)
    x, _ = sc.test_split(split)
    t0 = time.perf_counter()
    r = flia(_trained, sc.x_train[train_id], int(sc.y_train[train_id]), x[row], target)
    return {"heatmap": r.heatmap.numpy(), "il_path": r.il_path.numpy(), "gap": float(r.gap),
            "il_change": float(r.il_change), "confidence": r.confidence.numpy(), "seconds": time.perf_counter() - t0}


@st.cache_data(show_spinner=False, max_entries=64)
def flia_texts(selection: Selection, split: str, row: int, train_ids: tuple[int, ...], target: int,
               _trained: TrainedModel) -> np.ndarray:
    """FLIA token scores ``[len(train_ids), L]`` of training texts for a test text, in one batched run."""
    sc = scenario(selection.scenario, selection.seed)
    x, _ = sc.test_split(split)
    ids = list(train_ids)
    return FLIA(_trained, x[row], target).run(sc.x_train[ids], sc.y_train[ids]).heatmap.numpy()


@st.cache_data(show_spinner=False, max_entries=128)
def lrp_pair(selection: Selection, split: str, row: int, train_id: int, target: int,
             _dualview: Attributor) -> dict[str, np.ndarray]:
    """DualView-LRP heatmaps of a (test, training) pair (``_dualview``: the selection's fitted DualView)."""
    sc = scenario(selection.scenario, selection.seed)
    x, _ = sc.test_split(split)
    r = dualview_lrp(_dualview, x[row], train_id, target)
    return {"test": r.test_heatmap.numpy(), "train": r.train_heatmap.numpy(), "score": r.score,
            "conservation": (r.conservation_test, r.conservation_train), "composite": r.composite}
