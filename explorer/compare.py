"""The Compare page: how far do methods agree, over many test points and on one?

For the chosen methods: the Spearman correlation of their scores and the overlap of their
top-k proponents, averaged over a spread of test points (:mod:`core.metrics.agreement`), as
two heatmaps; then one test sample's proponents under two methods side by side, the shared
ones marked.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.errors import AttrexError
from core.methods import REGISTRY
from core.methods.defaults import CHOICES
from core.metrics import agreement
from explorer import nav, session, state
from explorer.components import card_columns, fitted_methods, flags_markdown, scenario_and_model
from explorer.render import inert, to_image

K = 8


def render() -> None:
    selection, sc, trained = scenario_and_model(nav.COMPARE)
    choice = CHOICES["compare"]
    c1, c2 = st.columns([3, 1])
    methods = c1.multiselect("Methods", choice.offered(), default=list(choice.methods), max_selections=6, select_all=False,
                             key=session.COMPARE_METHODS, format_func=lambda m: REGISTRY[m].title)
    most = min(500, len(sc.y_test))  # a person's data may hold fewer than 50 test points
    n_points = int(c2.number_input("Test points", min_value=min(5, most), max_value=most, value=min(50, most), step=5,
                                   key=session.compare_points(sc.spec.name),
                                   help="Agreement is averaged over this many test points, spread over the test set"))
    if len(methods) < 2:
        st.info("Pick at least two methods to compare.")
        return
    rows = tuple(np.linspace(0, len(sc.y_test) - 1, n_points).round().astype(int).tolist())
    fitted = fitted_methods(selection, trained, methods)
    if fitted is None or len(fitted) < 2:
        return
    scores = {n: state.score_rows(selection, state.method_key(n, {}), rows, m) for n, m in fitted.items()}
    _heatmaps(scores)
    _side_by_side(sc, selection, fitted, scores, rows)


def _heatmaps(scores: dict[str, np.ndarray]) -> None:
    names = list(scores)
    sp = [[_safe(agreement.spearman, scores[a], scores[b]) for b in names] for a in names]
    ov = [[agreement.top_k_overlap(scores[a], scores[b], K) / K for b in names] for a in names]
    cols = st.columns(2)
    for col, title, z in ((cols[0], "Spearman correlation of the scores", sp),
                          (cols[1], f"Overlap of the top-{K} proponents", ov)):
        fig = go.Figure(go.Heatmap(z=z, x=names, y=names, zmin=-1 if "Spearman" in title else 0, zmax=1,
                                   colorscale="Teal", text=[[("–" if v is None else f"{v:.2f}") for v in r] for r in z],
                                   texttemplate="%{text}", showscale=False))
        fig.update_layout(height=60 + 50 * len(names), margin=dict(l=10, r=10, t=40, b=10), title=title,
                          yaxis=dict(autorange="reversed"))
        col.plotly_chart(fig, width="stretch", config={"displayModeBar": False})
    st.caption("Averaged over the test points, each explained for its predicted class. Spearman compares the whole "
               f"ranking of the training set; the top-{K} overlap only the strongest proponents, what a person looks at.")


def _safe(fn, a, b):
    try:
        return fn(a, b)
    except AttrexError:
        return None  # a method with constant rows has no ranking


def _side_by_side(sc, selection, fitted: dict, scores: dict[str, np.ndarray], rows: tuple[int, ...]) -> None:
    st.subheader("One test sample, two methods")
    names = list(fitted)
    c1, c2, c3 = st.columns(3)
    j = int(c1.selectbox("Test sample", range(len(rows)), format_func=lambda i: f"#{rows[i]}",
                         key=session.compare_sample(sc.spec.name)))
    a = c2.selectbox("Left", names, index=0, key=session.COMPARE_A, format_func=lambda m: REGISTRY[m].title)
    b = c3.selectbox("Right", names, index=1, key=session.COMPARE_B, format_func=lambda m: REGISTRY[m].title)
    top = {m: np.argsort(-scores[m][j], kind="stable")[:K] for m in (a, b)}
    shared = set(top[a].tolist()) & set(top[b].tolist())
    st.markdown(f"**{len(shared)} of {K}** proponents shared (marked ●).")
    left, right = st.columns(2, gap="large")
    for col, m in ((left, a), (right, b)):
        with col:
            st.markdown(f"**{REGISTRY[m].title}**")
            if sc.kind == "image":
                cells = card_columns(K // 2, f"side-{m}", thumbs=True)
                for r, i in enumerate(top[m].tolist()):
                    with cells[r % (K // 2)]:
                        st.image(to_image(sc.x_train[i], 2), width="stretch")
                        flags = sc.truth.train_flags([i])[0]
                        st.markdown(f"{'● ' if i in shared else ''}#{i} · {inert(sc.class_names[int(sc.y_train[i])])}" +
                                    (f"  \n{flags_markdown(sc, i, flags)}" if flags else ""))
            else:
                st.dataframe({"": ["●" if i in shared else "" for i in top[m]], "id": top[m].tolist(),
                              "label": [sc.class_names[int(sc.y_train[i])] for i in top[m]],
                              "text": [sc.texts_train[i][:120] for i in top[m]]}, hide_index=True, width="stretch")


if __name__ == "__main__":  # Streamlit runs this file as the page (explorer/nav.py)
    nav.run(nav.COMPARE)
