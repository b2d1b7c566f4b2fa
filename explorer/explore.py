"""The Explore view: the test samples of a scenario, what the model predicts for them, and one in detail."""

from __future__ import annotations

import hashlib

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.data import Scenario
from core.data.inputs import MAX_BYTES, MAX_TEXT_CHARS, MAX_WORDS, image_input, text_input
from core.data.text import tokenize
from core.errors import AttrexError
from core.models import TrainedModel, predict_proba
from explorer import attribution, links, nav, session, state
from explorer.components import card_columns, controls, scenario_and_model
from explorer.render import GROUND_TRUTH_COLOURS, badge, inert, plot_text, to_image, token_strip

PAGE_SIZE = 40
GRID_HEIGHT = 430  # pixels: about two and a half rows of the grid
COLUMNS = 8
SPLIT_LABELS = {"clean": "Clean", "triggered": "Triggered", "marked": "Marked"}


def render() -> None:
    selection, sc, trained = scenario_and_model(nav.EXPLORE, wait=False)
    links.read(sc, attribution.offered(), attribution.MAX_METHODS)
    if trained is None:  # still training: the data and its ground truth now, the predictions when the model is ready
        _gallery(sc, None, selection)
        return
    _training_curve(trained)
    own = _own_input(sc, trained, selection)
    if own is not None:
        attribution.render(sc, trained, selection, *own)
        return
    picked = _gallery(sc, trained, selection)
    if picked is not None:
        split, row = picked[0], picked[1]
        links.write_sample(split, row)  # a reload or a shared link shows the same view
        attribution.render(sc, trained, selection, *picked)


def _own_input(sc: Scenario, trained: TrainedModel, selection: state.Selection) -> tuple | None:
    """Upload an image (or type a text) and explain it like a test sample. Returns the attribution panel's
    arguments ``(split, row, test_id, true label (None: it has none), predicted)`` while one is being explained,
    else ``None``."""
    kind = "image" if sc.kind == "image" else "text"
    active_key = session.custom_active(sc.spec.name)
    active = st.session_state.get(active_key)
    with st.expander(f"Explain your own {kind}", expanded=active is not None):
        with st.form(session.own_input_form(sc.spec.name), border=False):
            if kind == "image":
                c, h, w = sc.input_shape
                upload = st.file_uploader(f"A PNG or JPEG ({'grey' if c == 1 else 'colour'}, shown to the model at "
                                          f"{w}×{h}; at most {MAX_BYTES // 2**20} MB)", type=["png", "jpg", "jpeg"],
                                          key=session.CUSTOM_UPLOAD)
                text = None
            else:
                upload = None
                # no max_chars: the browser would drop a longer paste unseen; text_input refuses it saying the limits
                text = st.text_input(f"A headline or short text (at most {MAX_WORDS} words, {MAX_TEXT_CHARS} characters)",
                                     key=session.CUSTOM_TEXT)
            go_ = st.form_submit_button("Explain it")
        if go_:
            try:
                if kind == "image":
                    if upload is None:
                        raise AttrexError("choose a file first")
                    x, note = image_input(upload.getvalue(), sc)
                else:
                    x, unknown = text_input(text or "", sc)
                    note = f"not in the vocabulary (ignored): {', '.join(unknown[:10])}" if unknown else ""
            except AttrexError as exc:
                st.error(f"Not explained: {inert(exc)}")  # nothing else changes
            else:
                digest = int(hashlib.sha256(x.numpy().tobytes()).hexdigest()[:12], 16)
                st.session_state.setdefault(session.CUSTOM_INPUTS, {})[digest] = x
                active = st.session_state[active_key] = (digest, note, (text or "") if kind == "text" else "")
    if active is None:
        return None
    digest, note, typed = active
    x = st.session_state[session.CUSTOM_INPUTS][digest]
    p = predict_proba(trained.model, x[None])[0].numpy()
    pred = int(p.argmax())
    left, right = st.columns([1, 2], gap="large")
    with left:
        st.subheader("Your input")
        if kind == "image":
            st.image(to_image(x, 6), width="stretch")
        else:
            st.markdown(token_strip(tokenize(typed), set(sc.vocab)), unsafe_allow_html=True)
        if note:
            st.caption(inert(note))
        st.button("Back to the test samples", on_click=st.session_state.pop, args=(active_key, None))
    with right:
        names = sc.class_names
        st.markdown(badge(f"predicted {names[pred]} · {p[pred]:.1%}", "green"))
        st.bar_chart({names[c]: float(p[c]) for c in np.argsort(p)[::-1][:5]}, horizontal=True, height=180)
    return state.CUSTOM, digest, "your input", None, pred  # no true label


def _training_curve(trained: TrainedModel) -> None:
    if not trained.retrainable:  # a model brought here: attrex did not see its training
        return
    with st.expander("Training history"):
        h = trained.history
        epochs = [r["epoch"] for r in h]
        fig = go.Figure()
        fig.add_scatter(x=epochs, y=[r["train_acc"] for r in h], name="train accuracy", mode="lines+markers")
        fig.add_scatter(x=epochs, y=[r["test_acc"] for r in h], name="test accuracy", mode="lines+markers")
        marks = [dict(type="line", xref="x", yref="paper", x0=c.epoch, x1=c.epoch, y0=0, y1=1,
                      line=dict(dash="dot", color="#94a3b8")) for c in trained.checkpoints]  # add_vline: 10x slower
        fig.update_layout(shapes=marks, height=260, margin=dict(l=10, r=10, t=30, b=10), yaxis_tickformat=".0%",
                          title="accuracy per epoch (dotted: checkpoints)", xaxis_title="epoch")
        st.plotly_chart(fig, width="stretch")


def _gallery(sc: Scenario, trained: TrainedModel | None, selection: state.Selection) -> tuple | None:
    """Filters, the sample grid (or table) and the chosen sample's detail.

    Returns ``(split, row, test_id, true_label, predicted)`` of the chosen sample, or ``None``
    (also while the model trains, ``trained=None``: the samples and their labels only).
    """
    splits = sc.test_splits()
    left, right = st.columns([3, 1.15], gap="large")
    with left:
        widths = ([1.7] if len(splits) > 1 else []) + [1.7, 1.1, 1.2]
        cols = controls(widths, "filters")
        split = "clean"
        if len(splits) > 1:
            key = session.split(sc.spec.name)
            session.restore(key, "clean")
            split = cols.pop(0).segmented_control("Test split", splits, required=True, format_func=SPLIT_LABELS.get,
                                                  key=key, on_change=session.remember, args=(key,))
        classes = cols[0].multiselect("True class", list(range(sc.n_classes)), format_func=lambda c: sc.class_names[c],
                                      placeholder="all classes", key=session.classes(sc.spec.name))
        show = cols[1].selectbox("Show", ["all", "misclassified", "correct"], key=session.show(sc.spec.name))
        order = cols[2].selectbox("Order", ["index", "least confident", "most confident"],
                                   key=session.order(sc.spec.name))

    ids_in_test = sc.test_ids(split).numpy()
    y_true = sc.y_test.numpy()[ids_in_test]
    probs = state.probabilities(selection, split, trained) if trained is not None else None
    pred, conf = (probs.argmax(1), probs.max(1)) if probs is not None else (None, None)
    keep = np.ones(len(y_true), dtype=bool)
    if classes:
        keep &= np.isin(y_true, classes)
    if show != "all" and pred is not None:
        keep &= (pred != y_true) if show == "misclassified" else (pred == y_true)
    rows = np.flatnonzero(keep)
    if order != "index" and conf is not None:
        rows = rows[np.argsort(conf[rows], kind="stable")]
        rows = rows if order == "least confident" else rows[::-1]

    with left:
        summary = f"**{len(rows):,}** of {len(y_true):,} samples shown"
        if pred is None:
            summary += " · the model's predictions (and the Show and Order filters) come when its training ends"
        else:
            summary += f" · {int((pred != y_true).sum()):,} misclassified in this split"
        if split == "triggered" and pred is not None:
            hit = float((pred == sc.truth.target_class).mean())
            summary += f" · {hit:.1%} sent to the backdoor target {inert(sc.class_names[sc.truth.target_class])}"
        if split == "marked" and pred is not None:
            hit = float((pred == sc.truth.mark_class).mean())
            summary += f" · {hit:.1%} pulled to the marked class {inert(sc.class_names[sc.truth.mark_class])}"
        if not len(rows):
            st.caption(summary)
            st.info("No test sample matches these filters.")
            return None
        view = f"{split}|{sorted(classes)}|{show}|{order}"  # a table's row selection belongs to one view
        chosen = _pick(sc, split, rows, pred, conf, y_true, ids_in_test, summary, view)
    chosen = int(chosen)
    with right:
        _detail(sc, split, chosen, None if probs is None else probs[chosen], int(y_true[chosen]),
                int(ids_in_test[chosen]))
    return None if pred is None else (split, chosen, int(ids_in_test[chosen]), int(y_true[chosen]), int(pred[chosen]))


def _pick(sc: Scenario, split: str, rows: np.ndarray, pred: np.ndarray, conf: np.ndarray, y_true: np.ndarray,
          ids_in_test: np.ndarray, summary: str, view: str) -> int:
    """Show the filtered samples (image grid or text table) and return the chosen row of the split."""
    key = session.sample(sc.spec.name, split)
    if st.session_state.get(key) not in set(rows.tolist()):
        st.session_state[key] = int(rows[0])
    names = sc.class_names
    shown_names = [inert(n) for n in names]  # for captions and tooltips, which are Markdown
    if sc.kind == "text":
        st.caption(summary)
        texts = sc.texts_test_triggered if split == "triggered" else sc.texts_test
        table = {
            "#": [int(ids_in_test[r]) for r in rows],
            "text": [texts[r][:180] for r in rows],
            "label": [names[y_true[r]] for r in rows],
        }
        if pred is not None:
            table.update(prediction=[names[pred[r]] for r in rows], confidence=[float(conf[r]) for r in rows],
                         ok=["✓" if pred[r] == y_true[r] else "✗" for r in rows])
        event = st.dataframe(
            table, hide_index=True, on_select="rerun", selection_mode="single-row", height=520,
            key=session.table(sc.spec.name, view),
            column_config={"confidence": st.column_config.ProgressColumn("confidence", min_value=0, max_value=1, format="%.2f"),
                           "text": st.column_config.TextColumn("text", width="medium")},
        )
        picked = [i for i in (event.selection.rows if event is not None else []) if 0 <= i < len(rows)]
        if picked:
            st.session_state[key] = int(rows[picked[0]])
        return st.session_state[key]

    n_pages = max(1, -(-len(rows) // PAGE_SIZE))
    info, pager = st.columns([4, 1], vertical_alignment="bottom")
    info.caption(summary + (f" · {n_pages} pages" if n_pages > 1 else "") + " · click a number to inspect the sample")
    page = 1
    if n_pages > 1:
        page = int(pager.number_input("Page", min_value=1, max_value=n_pages, value=1, step=1,
                                      key=session.page(sc.spec.name, split)))
    shown = rows[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    scale = 4 if sc.input_shape[-1] <= 28 else 3
    x, _ = sc.test_split(split)
    grid = st.container(height=GRID_HEIGHT, border=False)  # scrolls inside, so the attributions stay in view
    for start in range(0, len(shown), COLUMNS):
        cols = card_columns(COLUMNS, f"gallery-{start}", thumbs=True, container=grid)
        for col, r in zip(cols, shown[start: start + COLUMNS], strict=False):
            r = int(r)
            with col:
                st.image(to_image(x[r], scale), width="stretch")
                st.button(f"#{int(ids_in_test[r])}", key=session.pick(sc.spec.name, split, r), width="stretch",
                          type="primary" if r == st.session_state[key] else "secondary",
                          help=f"true {shown_names[y_true[r]]}" + ("" if pred is None else
                                                                  f", predicted {shown_names[pred[r]]} ({conf[r]:.1%})"),
                          on_click=st.session_state.__setitem__, args=(key, r))
                # below the button, so a caption that wraps (long class names) never misaligns a row
                if pred is None:
                    st.caption(f"true {shown_names[y_true[r]]}")
                elif pred[r] == y_true[r]:
                    st.caption(f"{shown_names[pred[r]]} · {conf[r]:.0%}")
                else:
                    st.caption(f":red[✗ {shown_names[y_true[r]]} → {shown_names[pred[r]]}]")
    return st.session_state[key]


def _detail(sc: Scenario, split: str, row: int, p: np.ndarray | None, y: int, test_id: int) -> None:
    """One test sample: its labels, the image or text, and the model's class probabilities (``p``; ``None``
    while the model trains)."""
    names = sc.class_names
    st.subheader(f"Test #{test_id}")
    chips = [badge(f"true {names[y]}", "gray")]
    if p is not None:
        pred = int(p.argmax())
        chips.append(badge(f"predicted {names[pred]} · {p[pred]:.1%}", "green" if pred == y else "red"))
    if split == "triggered":
        chips.append(badge("triggered copy", GROUND_TRUTH_COLOURS["triggered"]))
    if split == "marked":
        chips.append(badge("marked copy", GROUND_TRUTH_COLOURS["marked"]))
    if sc.truth.subclass_test is not None:
        chips.append(badge(f"original class {sc.truth.subclass_names[int(sc.truth.subclass_test[test_id])]}", "blue"))
    st.markdown(" ".join(chips))
    x, _ = sc.test_split(split)
    if sc.kind == "image":
        st.image(to_image(x[row], 8), width="stretch")
    else:
        text = sc.texts_test_triggered[row] if split == "triggered" else sc.texts_test[row]
        highlight = {sc.truth.trigger_token} if split == "triggered" and sc.truth.trigger_token else set()
        st.markdown(token_strip(tokenize(text), set(sc.vocab), highlight), unsafe_allow_html=True)
        st.caption("Grey words are outside the model's vocabulary.")
    if p is None:
        return
    if split == "triggered":
        st.caption(f"The backdoor sends triggered inputs to **{inert(names[sc.truth.target_class])}**; "
                   f"{'the attack worked here' if pred == sc.truth.target_class else 'the model resisted here'}.")
    order = np.argsort(p)[::-1][: min(10, len(p))]
    colours = ["#0f766e" if c == pred else ("#f59e0b" if c == y else "#cbd5e1") for c in order]
    fig = go.Figure(go.Bar(x=p[order], y=[plot_text(names[c]) for c in order], orientation="h", marker_color=colours,
                           text=[f"{v:.1%}" for v in p[order]], textposition="outside", cliponaxis=False))
    fig.update_layout(height=40 + 24 * len(order), margin=dict(l=10, r=40, t=10, b=10),
                      yaxis=dict(autorange="reversed", type="category"), xaxis=dict(range=[0, 1.15], visible=False))
    st.plotly_chart(fig, width="stretch", config={"displayModeBar": False})
    st.caption("Class probabilities: teal the prediction, amber the true class when they differ.")


if __name__ == "__main__":  # Streamlit runs this file as the page (explorer/nav.py)
    nav.run(nav.EXPLORE)
