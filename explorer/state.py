"""What the app keeps between reruns: built scenarios, training jobs, predictions.

Everything here wraps a ``core`` call in a Streamlit cache, so a rerun costs nothing. A
model already in the disk cache is loaded at once; one that is not is trained in a
background thread owned by a process-wide job registry, so a rerun (any click) never
interrupts it, every session asking for the same model shares one job, and trainings run
one after another.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import streamlit as st

from core.data import Scenario, build, get_spec
from core.errors import AttrexError
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
class TrainingJob:
    """A model being trained in the background. One trains at a time; the others wait their turn."""

    selection: Selection
    fraction: float = 0.0
    message: str = "waiting for another training to finish"
    result: TrainedModel | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def _progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = fraction, message

    def _run(self) -> None:
        try:
            with _train_lock:
                self.started, self.message = time.time(), "starting"
                sc = scenario(self.selection.scenario, self.selection.seed)
                self.result = train(sc, self.selection.config, progress=self._progress)
        except AttrexError as exc:
            self.error = str(exc)
        except Exception as exc:  # shown to the user, never a silent failure
            self.error = f"{type(exc).__name__}: {exc}"


@st.cache_resource(show_spinner=False)
def _jobs() -> dict[Selection, TrainingJob]:
    return {}


_jobs_lock = threading.Lock()  # guards the registry
_train_lock = threading.Lock()  # one training at a time: two at once would only split the same cores


def model_or_job(selection: Selection) -> TrainedModel | TrainingJob:
    """The trained model if it is cached; otherwise its background training job (started if needed).

    A finished job hands over its model once and is dropped; a failed job stays, with its
    error, until :func:`forget_job` (the page's "Try again").
    """
    with _jobs_lock:
        jobs = _jobs()
        job = jobs.get(selection)
        if job is not None:
            if not job.done or job.error:
                return job
            del jobs[selection]
            return job.result  # just trained; later reruns load it from the disk cache
        if not is_cached(scenario(selection.scenario, selection.seed), selection.config):
            job = jobs[selection] = TrainingJob(selection)
            threading.Thread(target=job._run, name=f"attrex-train-{selection.scenario}", daemon=True).start()
            return job
    return load_model(selection)


def forget_job(selection: Selection) -> None:
    with _jobs_lock:
        _jobs().pop(selection, None)


@st.cache_data(show_spinner=False, max_entries=32)
def probabilities(selection: Selection, split: str, _trained: TrainedModel) -> np.ndarray:
    """Class probabilities ``[n, n_classes]`` of a test split of the selection's model (which it determines)."""
    x, _ = scenario(selection.scenario, selection.seed).test_split(split)
    return predict_proba(_trained.model, x).numpy()
