"""The Mislabels page: the training set ranked by how suspicious each label is, scored against the planted flips.

A person hunting mislabeled training samples picks methods (self-influence methods and the
baselines: training loss, cleanlab, random), sees how well each finds the planted flips
(AUROC, AUPRC, precision at the number of flips, the detection curve), browses the most
suspicious points of one method, selects some, exports them as CSV (safe to open in a
spreadsheet: :mod:`core.export`), and retrains without them (or with them relabelled) to see
the test accuracy before and after.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.evaluation import EvaluationResult
from core.export import csv_text, file_stem
from core.methods import REGISTRY
from core.methods.defaults import CHOICES
from explorer import nav, session, state
from explorer.components import (
    card_columns,
    evaluation_panel,
    fitted_methods,
    flags_markdown,
    panes,
    retrain_panel,
    scenario_and_model,
)
from explorer.render import inert, to_image

COLUMNS = 8


def offered() -> list[str]:
    """Methods with a self-influence (they rank training points), the baselines last."""
    return CHOICES["mislabels"].offered()


def render() -> None:
    selection, sc, trained = scenario_and_model(nav.MISLABELS)
    flipped = sc.truth.flipped_ids
    what = _what(sc)
    st.markdown("Rank the training set by how suspicious each label is: a method's **self-influence** (how much "
                "a point supports its own label: a mislabeled point is one the rest of the data disagrees with), "
                "or a baseline. " + (f"The {what} score every method below." if flipped is not None else
                                     "This scenario has **no planted flips**, so nothing scores the rankings; pick a "
                                     "`-noisy` scenario to see how well each method finds them."))
    methods = st.multiselect("Methods", offered(), default=[m for m in CHOICES["mislabels"].methods if m in offered()],
                             key=session.MISLABEL_METHODS, format_func=lambda m: REGISTRY[m].title,
                             help="Baselines (training loss, cleanlab, random) are listed last. cleanlab retrains "
                                  "the model on 3 folds, once.")
    if not methods:
        st.info("Pick at least one method.")
        return
    if flipped is not None:
        result = evaluation_panel(selection, trained, tuple(methods), ("mislabel",), "mislabel detection")
        if result is None:
            return
        _quality(result, len(flipped), len(sc.y_train), what, sc.truth.flips_known)
    fitted = fitted_methods(selection, trained, methods)
    if fitted is None:
        return
    scores = {name: state.self_scores(selection, state.method_key(name, {}), m) for name, m in fitted.items()}
    if not scores:
        return
    _ranking(sc, trained, selection, scores)


def _what(sc) -> str:
    """What the ground truth of label quality is called: a person's known-bad list or the planted flips."""
    return "known-bad points" if sc.truth.flips_known else "planted flips"


def _quality(result: EvaluationResult, n_flipped: int, n: int, what: str, known: bool) -> None:
    """The metrics table and the detection curves of the evaluated methods."""
    rows, curves = [], {}
    for name, row in result.results.items():
        r = row["mislabel"]
        if not r.ok:
            rows.append({"method": REGISTRY[name].title, "AUROC": None, "AUPRC": None, f"precision@{n_flipped}": None,
                         "found in top 10%": None, "note": r.reason})
            continue
        v = r.values
        rows.append({"method": REGISTRY[name].title, "AUROC": v["auroc"], "AUPRC": v["auprc"],
                     f"precision@{n_flipped}": v["precision_at_k"], "found in top 10%": 100 * v["found_at_10pct"],
                     "note": ""})
        curves[name] = r
    left, right = panes([1.1, 1], "quality")
    with left:
        st.subheader(f"How well each method finds the {what}")
        st.dataframe(rows, hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in
                                    ("AUROC", "AUPRC", f"precision@{n_flipped}")} |
                     {"found in top 10%": st.column_config.NumberColumn("found in top 10%", format="%.1f%%")})
        listed = "are on your known-bad list" if known else "were flipped"
        st.caption(f"{n_flipped} of {n:,} labels {listed} (base rate {n_flipped / n:.1%}). AUROC: the chance such a "
                   "point ranks above another (random 0.5). Precision at their number: their share of that many "
                   "top-ranked points.")
    with right:
        fig = go.Figure()
        fig.add_scatter(x=[0, 1], y=[0, 1], name="random", mode="lines", line=dict(dash="dot", color="#94a3b8"))
        fig.add_scatter(x=[0, n_flipped / n, 1], y=[0, 1, 1], name="perfect", mode="lines",
                        line=dict(dash="dash", color="#cbd5e1"))
        for name, r in curves.items():
            fig.add_scatter(x=r.curve[0], y=r.curve[1], name=REGISTRY[name].title, mode="lines")
        fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10), title="detection curve",
                          xaxis_title="share of the training set checked", yaxis_title=f"share of {what} found",
                          xaxis_tickformat=".0%", yaxis_tickformat=".0%", legend=dict(font=dict(size=10)))
        st.plotly_chart(fig, width="stretch", config={"displayModeBar": False})


def _ranking(sc, trained, selection, scores: dict[str, np.ndarray]) -> None:
    names = sc.class_names
    st.subheader("The most suspicious training points")
    c1, c2 = st.columns([2, 1])
    rank_by = c1.selectbox("Rank by", list(scores), format_func=lambda m: REGISTRY[m].title, key=session.MISLABEL_RANK)
    shown = int(c2.number_input("Shown", min_value=8, max_value=200, value=24, step=8, key=session.MISLABEL_SHOWN))
    order = np.argsort(-scores[rank_by], kind="stable")[:shown]
    session.flag(sc.spec.name, nav.MISLABELS.title, f"top {shown} by {REGISTRY[rank_by].title}", order)
    probs = state.train_probabilities(selection, trained)
    pred = probs.argmax(1)
    flipped = set(sc.truth.flipped_ids.tolist()) if sc.truth.flipped_ids is not None else set()
    found = sum(int(i) in flipped for i in order)
    if flipped:
        st.markdown(f"**{found} of {len(order)}** shown are {_what(sc)} (base rate {len(flipped) / len(pred):.1%}).")
    if sc.kind == "image":
        scale = 3 if sc.input_shape[-1] <= 28 else 2
        for start in range(0, len(order), COLUMNS):
            cols = card_columns(COLUMNS, f"ranked-{start}")
            for col, i in zip(cols, order[start: start + COLUMNS].tolist(), strict=False):
                with col:
                    st.image(to_image(sc.x_train[i], scale), width="stretch")
                    given, p = inert(names[int(sc.y_train[i])]), inert(names[int(pred[i])])
                    flags = sc.truth.train_flags([i])[0]
                    st.markdown(f"**#{i}** · given **{given}**  \nmodel: {p}" +
                                (f"  \n{flags_markdown(sc, i, flags)}" if flags else ""))
    table = {"id": [int(i) for i in order], "given label": [names[int(sc.y_train[i])] for i in order],
             "suggested label": [names[int(pred[i])] for i in order],
             **{f"score: {m}": [float(scores[m][i]) for i in order] for m in scores}}
    if sc.kind == "text":
        table["text"] = [sc.texts_train[i][:160] for i in order]
    if flipped:
        table["known bad" if sc.truth.flips_known else "planted flip"] = [
            sc.truth.flip_text(int(i), names, int(sc.y_train[i])) if int(i) in flipped else "" for i in order]
    st.markdown("**Select rows** to export them or retrain without them (none selected: all shown).")
    event = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="multi-row", height=320,
                         key=session.mislabel_table(sc.spec.name, rank_by, shown), width="stretch")
    picked = sorted(event.selection.rows) if event is not None else []
    chosen = [table["id"][r] for r in picked] or table["id"]
    exported = [c for c in table if c != "text"]  # the id finds a text; the table shows its start only
    rows = ([table[c][table["id"].index(i)] for c in exported] for i in chosen)
    c1, c2, c3 = st.columns(3)
    c1.download_button(f"Export {len(chosen)} as CSV", csv_text(exported, rows), mime="text/csv", width="stretch",
                       file_name=f"attrex-{file_stem(sc.spec.name)}-suspects.csv")
    suggested = tuple((i, int(pred[i])) for i in chosen)
    if not trained.retrainable:
        c2.caption("Retraining needs the model's recipe, which attrex knows only for models it trained: export the "
                   "list and retrain your model with your own.")
        return
    if c2.button(f"Retrain without these {len(chosen)}", width="stretch"):
        session.ask_retrain(selection, nav.MISLABELS.title, drop=tuple(chosen))
    if c3.button("Retrain with them relabelled", width="stretch",
                 help="Each selected point gets the model's suggested label"):
        session.ask_retrain(selection, nav.MISLABELS.title, relabel=suggested)
    asked = session.retrain_asked(selection, nav.MISLABELS.title)
    if asked:
        retrain_panel(selection, trained, *asked)


if __name__ == "__main__":  # Streamlit runs this file as the page (explorer/nav.py)
    nav.run(nav.MISLABELS)
