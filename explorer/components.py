"""Small pieces the pages share."""

from __future__ import annotations

import time
from typing import TypeVar

import streamlit as st

from core.data import Scenario
from core.data.scenario import CUSTOM
from core.errors import AttrexError
from core.evaluation import EvaluationResult
from core.jobs import Job
from core.models import TrainedModel
from explorer import access, nav, session, state
from explorer.render import GROUND_TRUTH_COLOURS, badge, inert
from explorer.sidebar import model_status, pick_scenario

T = TypeVar("T")
POLL_SECONDS = 3.0  # each open page's progress update costs the work it waits for (see the app's timings in benchmarks/README.md)


def job_progress(job: Job, explanation: str) -> None:
    """A background job's progress, polled every ``POLL_SECONDS``; the page reruns when it is done. *Cancel* stops it
    at its next progress report."""
    row = st.container(horizontal=True, vertical_alignment="center")  # the button keeps its width; the note takes the rest
    row.info(explanation)
    row.button("Cancel", key=session.job_button("cancel", job.key), on_click=state.cancel_job, args=(job.key,),
                  help="Stop this computation; nothing half-done is kept")

    @st.fragment(run_every=POLL_SECONDS)
    def poll() -> None:
        if job.done:
            st.rerun()
        st.progress(min(job.fraction, 1.0), text=f"{inert(job.message)} · {time.time() - job.started:.0f} s")

    poll()


def job_panel(job: Job, what: str, explanation: str) -> None:
    """A job still running (its progress) or failed (its error and a *Try again* button)."""
    if job.error:
        st.error(f"{what} was cancelled." if job.cancelled else f"{what} failed: {inert(job.error)}")
        st.button("Try again", key=session.job_button("retry", job.key), on_click=state.forget_job, args=(job.key,))
    else:
        job_progress(job, explanation)


def ready(result: T | Job, what: str, explanation: str, bar_in=None) -> T | None:
    """The one way a page waits for what ``state``'s ``..._or_job`` functions return: ``result`` once it is ready;
    until then ``None``, and the job drawn here (:func:`job_panel`: its progress, or its error and *Try again*).
    ``bar_in``: a container where only a progress bar is drawn instead, ``explanation`` its text."""
    if not isinstance(result, Job):
        return result
    if bar_in is not None:
        bar_in.progress(min(result.fraction, 1.0), text=explanation)
    else:
        job_panel(result, what, explanation)
    return None


CARD_PX, THUMB_PX = 80, 56  # the narrowest a card (image, number, score, badges) or a gallery thumbnail gets
PANE_PX = 340  # the narrowest a side-by-side pane (a table beside its chart) gets before they stack
CONTROL_PX = 110  # the narrowest a select box in a row of them gets (a short value and its arrow still read)
# rows of cards wrap where the page is too narrow for all of them at their narrowest (a 900 px window, say)
# instead of squeezing numbers, scores and badges out of sight, and a long badge ("flipped from 7", anywhere) wraps
# instead of being cut; the class comes from the container's key
GRID_STYLE = f"""<style>
[class*="st-key-cards-"] [data-testid="stHorizontalBlock"] {{flex-wrap: wrap; row-gap: 0.5rem}}
[class*="st-key-cards-{CARD_PX}-"] [data-testid="stColumn"] {{min-width: {CARD_PX}px; flex-grow: 0}}
[class*="st-key-cards-{THUMB_PX}-"] [data-testid="stColumn"] {{min-width: {THUMB_PX}px; flex-grow: 0}}
[class*="st-key-panes-"] [data-testid="stHorizontalBlock"] {{flex-wrap: wrap; row-gap: 1rem}}
[class*="st-key-panes-"] [data-testid="stColumn"] {{min-width: {PANE_PX}px}}
[class*="st-key-controls-"] [data-testid="stHorizontalBlock"] {{flex-wrap: wrap; row-gap: 0.25rem}}
[class*="st-key-controls-"] [data-testid="stColumn"] {{min-width: {CONTROL_PX}px}}
.stMarkdownBadge {{white-space: normal !important; overflow: visible !important}}
</style>"""


def card_columns(n: int, key: str, thumbs: bool = False, container=None) -> list:
    """``n`` columns for a row of image cards (``thumbs``: small thumbnails) that wraps onto more rows where each
    would be narrower than ``CARD_PX`` (``THUMB_PX``; see GRID_STYLE). ``key`` is unique on the page;
    ``container``: where (default: here)."""
    box = (container or st).container(key=f"cards-{THUMB_PX if thumbs else CARD_PX}-{key}")
    return box.columns(n, gap="small")


def panes(spec: list[float], key: str) -> list:
    """Side-by-side panes (``st.columns(spec)``) that stack where one would be narrower than ``PANE_PX``.
    Only for panes without columns of their own. ``key`` is unique on the page."""
    return st.container(key=f"panes-{key}").columns(spec, gap="large")


def controls(spec: int | list[float], key: str, container=None) -> list:
    """A row of input widgets (``st.columns(spec)``) that wraps onto more rows where one would be narrower than
    ``CONTROL_PX``, so that no select box cuts its value short. ``key`` is unique on the page."""
    return (container or st).container(key=f"controls-{key}").columns(spec)


def scenario_and_model(page: nav.Page, wait: bool = True) -> tuple[state.Selection, Scenario, TrainedModel | None]:
    """What every page starts with: the sidebar's scenario, its header, and its trained model.

    While the model trains the page shows the data's summary and the training's progress, then
    stops (``wait=False``: returns ``None`` for the model instead, so that the page can show what
    needs no model); it reruns by itself when the model is ready.
    """
    st.html(GRID_STYLE)  # a style only: it takes no room on the page
    selection = pick_scenario()
    try:
        sc = state.scenario_of(selection)
    except AttrexError as exc:
        st.error(f"This scenario cannot be built: {inert(exc)}")
        st.stop()
    scenario_header(sc, page.title)
    cfg = selection.config
    trained = ready(state.model_or_job(selection), "Training",
                    f"Training {inert(cfg.arch)} on **{inert(sc.spec.name)}** ({cfg.epochs} epochs). The model is "
                    "cached on disk: next time it loads at once. Meanwhile you can pick another scenario or page; this "
                    "training goes on.")
    if trained is None and wait:
        st.stop()
    if trained is not None:
        model_status(trained)
    return selection, sc, trained


def scenario_header(sc: Scenario, page: str) -> None:
    """The page title (page, scenario and seed, so a screenshot says what it shows) and what was planted."""
    spec = sc.spec
    st.title(f"{page} · {inert(spec.name)} · seed {spec.seed}")
    chips = [badge(f"{len(sc.y_train):,} train · {len(sc.y_test):,} test", "gray")]
    t = sc.truth
    if t.flipped_ids is not None:
        chips.append(badge(f"{len(t.flipped_ids)} " + ("known bad (your list)" if t.flips_known else "flipped labels"),
                           GROUND_TRUTH_COLOURS["flipped"]))
    if t.poisoned_ids is not None:
        trigger = f"trigger word “{t.trigger_token}”" if t.trigger_token else "trigger patch"
        chips.append(badge(f"{len(t.poisoned_ids)} poisoned → {sc.class_names[t.target_class]} · {trigger}",
                           GROUND_TRUTH_COLOURS["poisoned"]))
    if t.marked_ids is not None:
        chips.append(badge(f"{len(t.marked_ids)} marked {sc.class_names[t.mark_class]}s", GROUND_TRUTH_COLOURS["marked"]))
    if t.superclass_of is not None:
        chips.append(badge(f"{sc.n_classes} superclasses: " + " | ".join(sc.class_names), "blue"))
    st.markdown(" ".join(chips))
    shown = spec.name if spec.dataset == CUSTOM and access.shared() else sc.source  # no server path to a visitor
    st.caption(f"{inert(spec.description)}. Data: {inert(shown)}.")


def evaluation_panel(selection: state.Selection, trained: TrainedModel, methods: tuple[str, ...],
                     tasks: tuple[str, ...], what: str, settings=None, start: bool = True) -> EvaluationResult | None:
    """The evaluation of ``methods`` on ``tasks``: read from the cache, or computed in the background
    with progress (``None`` meanwhile). The finished result is kept in the session, so a failure
    in it is shown rather than recomputed on every rerun. ``start=False``: only what is cached."""
    from core.evaluation import Settings

    settings = settings or Settings()
    key = ("evaluation", selection, methods, tasks, settings)
    kept = st.session_state.setdefault(session.EVALUATIONS, {})
    if key in kept:
        return kept[key]
    if not start:
        result = state.cached_evaluation(selection, trained, methods, tasks, settings)
        if result is None:
            st.info(f"Not measured yet for this model: press **Evaluate** to measure {what}.")
        else:
            kept[key] = result
        return result
    result = ready(state.evaluation_or_job(selection, trained, methods, tasks, settings), "Evaluation",
                   f"Measuring {what}: each method's precompute and score are cached on disk, so this runs once. You "
                   "can leave the page; the work goes on.")
    if result is not None:
        kept[key] = result
    return result


FLAG_TEXT = {"flipped": "flipped label", "poisoned": "poisoned", "marked": "marked", "flagged": "flagged"}


def flags_markdown(sc: Scenario, i: int, flags: list[str]) -> str:
    """Badges of what was planted on training point ``i``, with the class it had before."""
    out = []
    for f in flags:
        text = FLAG_TEXT[f]
        if f in ("flipped", "poisoned"):
            was = sc.class_names[int(sc.truth.original_labels[i])]
            text = sc.truth.flip_text(i, sc.class_names, int(sc.y_train[i])) if f == "flipped" else f"poisoned, was {was}"
        out.append(badge(text, GROUND_TRUTH_COLOURS[f]))
    return " ".join(out)


def retrain_panel(selection: state.Selection, trained: TrainedModel, drop: tuple[int, ...],
                  relabel: tuple[tuple[int, int], ...]) -> None:
    """Retrain the model without ``drop`` / with ``relabel`` in the background; then accuracy before and after."""
    what = f"without {len(drop)} point(s)" if drop else f"with {len(relabel)} point(s) relabelled"
    try:
        after = state.retrain_or_job(selection, drop, relabel)
    except AttrexError as exc:
        st.error(f"Cannot retrain {what}: {inert(exc)}")
        return
    after = ready(after, "Retraining", f"Retraining `{selection.config.arch}` {what}, same recipe and seed "
                  "(cached on disk).")
    if after is None:
        return
    st.markdown(f"**Retrained {what}** (same recipe and seed)")
    cols = st.columns(3)
    cols[0].metric("Test accuracy", f"{after.test_accuracy:.1%}",
                   f"{100 * (after.test_accuracy - trained.test_accuracy):+.1f} points", delta_color="normal")
    if after.attack_success is not None and trained.attack_success is not None:
        cols[1].metric("Attack success", f"{after.attack_success:.1%}",
                       f"{100 * (after.attack_success - trained.attack_success):+.1f} points", delta_color="inverse")
    cols[2].caption(f"before: test accuracy {trained.test_accuracy:.1%}" +
                    (f", attack success {trained.attack_success:.1%}" if trained.attack_success is not None else ""))


def fitted_methods(selection: state.Selection, trained: TrainedModel, names: list[str]) -> dict | None:
    """Each named method fitted with its default parameters (from the disk cache, or precomputed in the
    background with progress: ``None`` meanwhile). One that cannot run here is reported and left out."""
    from core.methods import REGISTRY

    fitted = {}
    for name in names:
        try:
            method = state.method_or_job(selection, trained, name, {})
        except AttrexError as exc:
            st.error(f"{REGISTRY[name].title} cannot run here: {inert(exc)}")
            continue
        method = ready(method, "The precompute", f"Precomputing **{REGISTRY[name].title}** (once; cached on disk).")
        if method is None:
            return None
        fitted[name] = method
    return fitted
