"""What the app keeps between reruns: built scenarios, training jobs, predictions.

Everything here wraps a ``core`` call in a Streamlit cache, so a rerun costs nothing.
Training runs in a background thread owned by a process-wide job registry: a rerun (any
click) never interrupts it, and every session asking for the same model shares one job.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import streamlit as st

from core.data import Scenario, build, get_spec
from core.errors import AttrexError
from core.models import TrainConfig, TrainedModel, predict_proba, train


@dataclass(frozen=True)
class Selection:
    """What the sidebar chose: a preset, its seed, and how to train its model."""

    scenario: str
    seed: int
    config: TrainConfig


@st.cache_resource(show_spinner=False, max_entries=8)
def scenario(name: str, seed: int) -> Scenario:
    return build(get_spec(name, seed=seed))


@dataclass
class TrainingJob:
    """A model being trained (or loaded) in a background thread."""

    selection: Selection
    fraction: float = 0.0
    message: str = "starting"
    result: TrainedModel | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    thread: threading.Thread | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def _progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = fraction, message

    def _run(self) -> None:
        try:
            sc = scenario(self.selection.scenario, self.selection.seed)
            self.result = train(sc, self.selection.config, progress=self._progress)
        except AttrexError as exc:
            self.error = str(exc)
        except Exception as exc:  # shown to the user, never a silent failure
            self.error = f"{type(exc).__name__}: {exc}"


@st.cache_resource(show_spinner=False)
def _jobs() -> dict[Selection, TrainingJob]:
    return {}


_jobs_lock = threading.Lock()


def training_job(selection: Selection, wait: float = 1.0) -> TrainingJob:
    """The job for ``selection``, started if needed; waits up to ``wait`` s so cached models come back at once."""
    with _jobs_lock:
        jobs = _jobs()
        job = jobs.get(selection)
        if job is None or job.error is not None:
            job = TrainingJob(selection)
            job.thread = threading.Thread(target=job._run, name=f"attrex-train-{selection.scenario}", daemon=True)
            jobs[selection] = job
            job.thread.start()
    job.thread.join(timeout=wait)
    return job


@st.cache_data(show_spinner=False, max_entries=32)
def probabilities(model_key: str, scenario_name: str, seed: int, split: str, _trained: TrainedModel) -> np.ndarray:
    """Class probabilities ``[n, n_classes]`` of a test split; cached per model key and split."""
    x, _ = scenario(scenario_name, seed).test_split(split)
    return predict_proba(_trained.model, x).numpy()
