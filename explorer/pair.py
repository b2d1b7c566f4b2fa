"""The pair view of the Explore page: one test sample and one of its proponents or opponents, feature by feature.

Test and training image side by side; FLIA's heatmap on the training image (which of its
pixels carry its influence on this prediction); DualView-LRP relevance on both images (which
pixels make up the DualView score of the pair, red for support, blue against); and IL along
FLIA's perturbation path. Everything is computed by :mod:`core.features` and cached on disk.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.data import Scenario
from core.errors import AttrexError
from core.features.render import flia_tokens_html, overlay
from core.methods import REGISTRY
from core.models import TrainedModel
from explorer import session, state
from explorer.components import flags_markdown, ready
from explorer.render import inert, test_name, to_image


def toggle(scenario: str, method: str, kind: str, train_id: int, rank: int, context: tuple) -> None:
    """An *Inspect* button: open the pair view of this card (closing the oldest beyond
    :data:`session.MAX_PAIRS`), or close it if it is open."""
    if is_open(scenario, method, train_id):
        close(scenario, method, train_id)
    else:
        opened = (*session.open_pairs(scenario), session.OpenPair(method, kind, train_id, rank, context))
        session.set_open_pairs(scenario, opened[-session.MAX_PAIRS:])


def close(scenario: str, method: str, train_id: int) -> None:
    session.set_open_pairs(scenario, tuple(p for p in session.open_pairs(scenario)
                                           if (p.method, p.train) != (method, train_id)))


def is_open(scenario: str, method: str, train_id: int) -> bool:
    return any((p.method, p.train) == (method, train_id) for p in session.open_pairs(scenario))


def render(sc: Scenario, trained: TrainedModel, selection: state.Selection, method: str, kind: str, split: str,
           row: int, test_id: int, target: int, context: tuple, shown: dict[int, tuple[int, float]], score_of) -> None:
    """The pair views opened from the row of ``kind`` cards of ``method``, below it. They stay open when the sample
    or class changes: the same training point is then shown against this sample. ``shown``: the row's cards,
    training id -> (rank, score); ``score_of(i)``: the score of a training point not among them."""
    for p in session.open_pairs(sc.spec.name):
        if p.method == method and p.kind == kind and p.train < len(sc.y_train):  # (your data may have changed)
            _one(p, sc, trained, selection, split, row, test_id, target, context, shown, score_of)


def _one(p: session.OpenPair, sc: Scenario, trained: TrainedModel, selection: state.Selection, split: str, row: int,
         test_id: int, target: int, context: tuple, shown: dict[int, tuple[int, float]], score_of) -> None:
    method = p.method
    i, names = p.train, [inert(n) for n in sc.class_names]
    x_test = state.test_input(selection, split, row)
    x_train = sc.x_train[i]
    scale = 6 if sc.input_shape[-1] <= 28 else 4
    with st.container(border=True):
        head, close_ = st.columns([8, 1])
        role = "proponent" if p.kind == "proponents" else "opponent"
        title = REGISTRY[method].title
        if i in shown:
            rank, score = shown[i]
            why = f"{role.capitalize()} #{rank} of {title} for class **{names[target]}** (score `{score:+.3g}`)"
        else:
            where = ("from a link" if p.context is None else f"as {role} #{p.rank}"
                     + ("" if p.context == context else " of another sample or class"))
            why = f"Opened {where}; its {title} score for class **{names[target]}** of this sample is " \
                  f"`{score_of(i):+.3g}`"
        planted = flags_markdown(sc, i, sc.truth.train_flags([i])[0])
        head.markdown(f"#### Pair view: {test_name(test_id)} and training #{i}\n"
                      f"{why}; training label **{names[int(sc.y_train[i])]}**." + (f" {planted}" if planted else ""))
        close_.button("Close", key=session.pair_widget(p, "close"), on_click=close,
                      args=(sc.spec.name, method, i), width="stretch")
        direction = st.segmented_control(
            "FLIA direction", ["descent", "ascent"], default="descent", required=True,
            key=session.pair_widget(p, "direction"),
            help="Descent perturbs the training image to lower its influence on the test sample, ascent to raise "
                 "it. A feature at the end of the pixel range (a black-and-white trigger) can only move one way, so "
                 "a backdoor trigger often shows in one direction only; which one depends on the model.")
        with st.spinner("FLIA: perturbing the training image in 10 small steps…"):
            try:
                f = state.flia_pair(selection, split, row, i, target, trained, direction=direction)
            except AttrexError as exc:
                st.error(f"FLIA cannot run here: {inert(exc)}")
                return
        cols = st.columns(5, gap="small")
        cols[0].image(to_image(x_test, scale), caption=test_name(test_id).capitalize(), width="stretch")
        cols[1].image(to_image(x_train, scale), caption=f"Training #{i}", width="stretch")
        cols[2].image(overlay(x_train, f["heatmap"], False, scale), width="stretch",
                      caption=f"FLIA ({direction}) on the training image: |attribution|, yellow (low) to red (most)")
        _lrp(sc, trained, selection, split, row, i, target, x_test, x_train, scale, cols[3], cols[4])
        chart, notes = st.columns([3, 2])
        chart.plotly_chart(_il_path_figure(f["il_path"]), width="stretch", key=session.pair_widget(p, "il-path"))
        conf = f["confidence"]
        notes.markdown(
            f"**IL** (TracIn of this pair over the checkpoints) went from `{f['il_path'][0]:+.3g}` to "
            f"`{f['il_path'][-1]:+.3g}` ({f['il_change']:+.0%}) while no pixel moved by more than one grey "
            f"level; the model's confidence in the training label moved by {conf[1] - conf[0]:+.4f}.  \n"
            f"FLIA splits that change over the pixels. Its sum misses {f['gap']:.0%} of it, mostly the part "
            "that comes from activations switching along the path, which no gradient sees.")
        notes.caption("FLIA: Feature level instance attribution (anonymous, under review); "
                      "DualView-LRP: Yolcu et al. 2024.")


def _lrp(sc, trained, selection, split, row, i, target, x_test, x_train, scale, col_train, col_test) -> None:
    defaults = REGISTRY["dualview"].defaults()
    try:
        dualview = ready(state.method_or_job(selection, trained, "dualview", defaults), "The precompute",
                         "DualView is being precomputed for the LRP views…", bar_in=col_train)
    except AttrexError as exc:
        col_train.warning(f"DualView cannot run here: {inert(exc)}")
        return
    if dualview is None:
        return
    try:
        lrp = state.lrp_pair(selection, split, row, i, target, dualview)
    except AttrexError as exc:
        col_train.warning(inert(exc))
        return
    if not np.abs(lrp["train"]).any():
        col_train.info(f"Training #{i} is no support vector of DualView's SVM: its DualView score is 0, so there "
                       "is nothing to propagate.")
        return
    col_train.image(overlay(x_train, lrp["train"], True, scale), width="stretch",
                    caption="DualView-LRP on the training image: red supports, blue opposes")
    col_test.image(overlay(x_test, lrp["test"], True, scale), width="stretch",
                   caption=f"… and on the test image (DualView score {lrp['score']:+.3g})")


def _il_path_figure(il_path: np.ndarray) -> go.Figure:
    fig = go.Figure(go.Scatter(x=list(range(len(il_path))), y=il_path, mode="lines+markers",
                               hovertemplate="step %{x}: IL %{y:.4g}<extra></extra>"))
    fig.update_layout(height=220, margin=dict(l=10, r=10, t=30, b=10), title="IL along FLIA's perturbation path",
                      xaxis_title="step (1/2550 per pixel each)", yaxis_title="IL",
                      yaxis_tickformat=".2~e")  # plotly's default SI suffixes would read 2e-7 as "200n"
    return fig


def text_rows(sc: Scenario, trained: TrainedModel, selection: state.Selection, split: str, row: int, target: int,
              ids: np.ndarray, scores: np.ndarray, flags: list[list[str]], flags_markdown) -> None:
    """Training texts with FLIA token highlights (red: the token carries support for the class, blue: against);
    ``flags``: each text's badges (planted ground truth, flagged by a page)."""
    with st.spinner("FLIA: token scores of these texts…"):
        try:
            heat = state.flia_texts(selection, split, row, tuple(int(i) for i in ids), target, trained)
        except AttrexError as exc:
            st.error(f"FLIA cannot run here: {inert(exc)}")
            heat = None
    for r, (i, s, f) in enumerate(zip(ids.tolist(), scores.tolist(), flags, strict=True)):
        st.markdown(f"**#{i}** · {inert(sc.class_names[int(sc.y_train[i])])} · `{s:+.3g}`"
                    + (f" · {flags_markdown(sc, i, f)}" if f else ""))
        if heat is None:
            st.markdown(inert(sc.texts_train[i]))
        else:
            st.html(flia_tokens_html(sc.vocab, sc.x_train[i].tolist(), heat[r]))
