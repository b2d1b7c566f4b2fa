"""The app's session state, declared once: every key a page reads or writes, and the pair view's record.

Widgets take their ``key=`` from here and code reads ``st.session_state`` through these names,
so a key is spelt in one place. Keys that depend on a scenario, split or method are built by
the functions below.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass

import streamlit as st

# the sidebar (drawn by every page: its widgets' values are kept across page switches, see restore)
SCENARIO = "scenario"
SEED = "seed"
SOURCE = "data-source"         # built-in scenario or your own data (the radio)
OWN_FORM = "own-form"
OWN_SELECTION = "own-selection"  # the last of your own data and model that loaded (a Selection)
OWN_ERROR = "own-error"
OWN_UPLOADS = "own-uploads"      # the session's upload folder (core.data.uploads.UploadFolder), removed with it
OWN_DATA_FROM = "own-data-from"  # where the data comes from: upload, the operator's list, a path (local only)
OWN_MODEL_FROM = "own-model-from"
# the attribution panel
METHODS = "methods"
EXPLAIN = "explain"
TOP_K = "top-k"
PAIRS = "pairs"                # the open pair views by scenario, oldest first ({scenario: tuple of OpenPair})
MAX_PAIRS = 3                  # open pair views at once; opening another closes the oldest
# a person's own inputs (digest -> tensor); the one being explained is custom_active(scenario)
CUSTOM_INPUTS = "custom-inputs"
CUSTOM_UPLOAD = "custom-upload"
CUSTOM_TEXT = "custom-text"
# evaluations finished in this session, by (selection, methods, tasks, settings)
EVALUATIONS = "evaluations"
# the Mislabels page
MISLABEL_METHODS = "mislabel-methods"
MISLABEL_RANK = "mislabel-rank"
MISLABEL_SHOWN = "mislabel-shown"
MISLABEL_TABLE = "mislabel-table"  # a prefix: see mislabel_table
RETRAIN = "retrain"            # the retraining asked for on a page, by selection: {(selection, page): (drop, relabel)}
# the Backdoor page
BACKDOOR_METHOD = "backdoor-method"
BACKDOOR_EXTRA = "backdoor-method-extra"  # the methods measured besides the candidates
BACKDOOR_SAMPLE = "backdoor-sample"  # a prefix: see backdoor_sample
BACKDOOR_FLAGGED = "backdoor-flagged"  # a prefix: see backdoor_flagged
# the Evaluate page
EVAL_FORM = "evaluate-form"
EVAL_METHODS = "eval-methods"
EVAL_TASKS = "eval-tasks"
EVAL_RUN = "eval-run"          # the (selection, methods, tasks) the user asked to evaluate
# points flagged on the Mislabels and Backdoor pages, shown on Explore: {(scenario, page): (label, ids)}
FLAGGED = "flagged"
FLAGGED_PICK = "flagged-pick"  # which flagged list Explore marks
FLAGGED_ONLY = "flagged-only"  # Explore lists only flagged proponents and opponents
# the Compare page
COMPARE_METHODS = "compare-a-methods"
COMPARE_SAMPLE = "compare-a-sample"  # a prefix: see compare_sample
COMPARE_A = "compare-a"
COMPARE_B = "compare-b"
# the Cache page
CACHE_CONFIRM = "cache-confirm"
CACHE_KIND = "cache-kind"


def digest(value: Hashable) -> str:
    """A short name of ``value`` for a key, the same in every process (unlike ``hash``, salted per process): its
    ``repr``'s SHA-1. For values whose ``repr`` shows what they are (tuples, strings, frozen dataclasses)."""
    return hashlib.sha1(repr(value).encode()).hexdigest()[:12]


def job_button(action: str, job_key: Hashable) -> str:
    """The key of a background job's button (``action``: "cancel", "retry"): one per job, as a job is one per key."""
    return f"{action}-{digest(job_key)}"


def ask_retrain(selection: Hashable, page: str, drop: tuple[int, ...] = (),
                relabel: tuple[tuple[int, int], ...] = ()) -> None:
    """Record the retraining asked for on ``page`` (its title) for ``selection`` (the sidebar's choice): the ids
    belong to its data and model, so another scenario, seed or model never shows it."""
    st.session_state.setdefault(RETRAIN, {})[(selection, page)] = (tuple(drop), tuple(relabel))


def retrain_asked(selection: Hashable, page: str) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]] | None:
    """The retraining last asked for on ``page`` for ``selection``: ``(drop, relabel)``, or ``None``."""
    return st.session_state.get(RETRAIN, {}).get((selection, page))


def flag(scenario: str, page: str, label: str, ids) -> None:
    """Record the training points a page flags for ``scenario`` (the latest list per page)."""
    st.session_state.setdefault(FLAGGED, {})[(scenario, page)] = (label, tuple(int(i) for i in ids))


def flagged(scenario: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The flagged lists of ``scenario`` by page: how they were flagged, and the ids."""
    return {page: entry for (sc, page), entry in st.session_state.get(FLAGGED, {}).items() if sc == scenario}


def own(field: str) -> str:
    """The key of a field of the sidebar's "Your data" form."""
    return f"own-{field}"


def url_read(scenario: str) -> str:
    """Whether this session has read the link's view for ``scenario`` (once; :func:`explorer.links.read`)."""
    return f"url-read-{scenario}"


def arch(dataset: str) -> str:
    return f"arch-{dataset}"


def epochs(dataset: str) -> str:
    return f"epochs-{dataset}"


def model_form(dataset: str) -> str:
    return f"model-{dataset}"


def split(scenario: str) -> str:
    return f"split-{scenario}"


def classes(scenario: str) -> str:
    return f"classes-{scenario}"


def show(scenario: str) -> str:
    return f"show-{scenario}"


def order(scenario: str) -> str:
    return f"order-{scenario}"


def page(scenario: str, split_name: str) -> str:
    return f"page-{scenario}-{split_name}"


def sample(scenario: str, split_name: str) -> str:
    """The chosen row of a test split (an int)."""
    return f"sample-{scenario}-{split_name}"


def picks(scenario: str, split_name: str) -> str:
    """The start of the keys of the gallery's buttons of a test split (:func:`pick`)."""
    return f"pick-{scenario}-{split_name}-"


def pick(scenario: str, split_name: str, row: int) -> str:
    return f"{picks(scenario, split_name)}{row}"


def table(scenario: str, view: str) -> str:
    """Explore's table of the texts of ``scenario`` in view ``view`` (which samples, in which order)."""
    return f"table-{scenario}-{digest(view)}"


def own_input_form(scenario: str) -> str:
    """Explore's form for a person's own image or text (one per scenario: its input shape)."""
    return f"own-{scenario}"


def custom_active(scenario: str) -> str:
    """The person's input being explained on ``scenario`` (digest, note, typed text): each scenario its own, as an
    input fits one scenario's model."""
    return f"custom-active-{scenario}"


def backdoor_sample(scenario: str) -> str:
    """The Backdoor page's triggered test sample (a row of ``scenario``'s triggered split)."""
    return f"{BACKDOOR_SAMPLE}-{scenario}"


def compare_sample(scenario: str) -> str:
    """The Compare page's test sample (an index into ``scenario``'s spread of test points)."""
    return f"{COMPARE_SAMPLE}-{scenario}"


def compare_points(scenario: str) -> str:
    """Compare's number of test points (its range is the scenario's)."""
    return f"{COMPARE_A}-points-{scenario}"


def mislabel_table(scenario: str, rank_by: str, shown: int) -> str:
    """The Mislabels ranking's table, whose selected rows are ids of ``scenario``'s ranking by ``rank_by``."""
    return f"{MISLABEL_TABLE}-{scenario}-{rank_by}-{shown}"


def backdoor_flagged(scenario: str) -> str:
    """How many points the Backdoor page flags (its range is the scenario's)."""
    return f"{BACKDOOR_FLAGGED}-{scenario}"


def eval_bars(task: str) -> str:
    return f"bars-{task}"


def cache_table(kind: str, n: int) -> str:
    """The Cache page's table of ``n`` entries of ``kind`` (a new key when the list changes: no stale selection)."""
    return f"cache-table-{kind}-{n}"


def params(method: str) -> str:
    """The applied parameters of a method (a dict); a widget of one is ``param(method, name)``."""
    return f"params-{method}"


def param(method: str, name: str) -> str:
    return f"params-{method}-{name}"


def params_form(method: str) -> str:
    return f"form-{method}"


def inspect(method: str, kind: str, train_id: int) -> str:
    return f"inspect-{method}-{kind}-{train_id}"


@dataclass(frozen=True)
class OpenPair:
    """One open pair view: a training point of a method's cards, and where it was opened (``rank`` and
    ``context`` are ``None`` for a pair a link opened)."""

    method: str
    kind: str           # "proponents" or "opponents"
    train: int
    rank: int | None = None
    context: tuple | None = None  # (split, row, explained class) of the sample it was opened on

    def url(self) -> str:
        """How a link names it: ``method:kind:train``."""
        return f"{self.method}:{self.kind}:{self.train}"


def open_pairs(scenario: str) -> tuple[OpenPair, ...]:
    """The pair views open on ``scenario`` (each scenario keeps its own: training ids belong to its data)."""
    return st.session_state.get(PAIRS, {}).get(scenario, ())


def set_open_pairs(scenario: str, value: tuple[OpenPair, ...]) -> None:
    st.session_state.setdefault(PAIRS, {})[scenario] = tuple(value)


def pair_widget(p: OpenPair, what: str) -> str:
    """The key of widget ``what`` (close, direction, il-path) of pair view ``p``."""
    return f"pair-{what}-{p.method}-{p.kind}-{p.train}"


# ----- widget values that outlive page switches --------------------------------------------------
# A widget belongs to the page that drew it: switching pages drops its value, even where the next page
# draws a widget with the same key (the sidebar, the method picker). Such a widget's value is kept in a
# plain key: restore() hands it to the widget before the page draws it, remember() (its callback) keeps it.

def kept(key: str) -> str:
    return f"{key}::kept"


def restore(key: str, default: object) -> None:
    """Before drawing widget ``key`` (with no default of its own): its last value on any page, else ``default``."""
    st.session_state[key] = st.session_state.setdefault(kept(key), default)


def remember(*keys: str) -> None:
    """A widget's (or a form's) callback: keep the values of ``keys`` for the next page that draws them."""
    for key in keys:
        if key in st.session_state:
            st.session_state[kept(key)] = st.session_state[key]
