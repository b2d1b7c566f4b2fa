"""The Evaluate page: choose methods and tasks, run them (or load what is cached), compare with the papers.

Runs :func:`core.evaluation.evaluate` in the background with progress; every result is cached
on disk, so a second visit reads it at once. The table puts each method's headline figure per
task (the task registry's :attr:`~core.evaluation.Task.headline`) beside the paper's number
where the setting matches, and a bar chart per task.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core.evaluation import TASKS, EvaluationResult, tasks_for
from core.methods import REGISTRY
from core.methods.defaults import CHOICES
from core.metrics.published import paper_value
from explorer import nav, session
from explorer.components import evaluation_panel, scenario_and_model


def render() -> None:
    selection, sc, trained = scenario_and_model(nav.EVALUATE)
    choice = CHOICES["evaluate"]
    offered = choice.offered()
    applicable = [t for t in TASKS if TASKS[t].applies(sc) is None]
    with st.form(session.EVAL_FORM, border=False):
        c1, c2 = st.columns([3, 2])
        methods = c1.multiselect("Methods", offered, default=[m for m in choice.methods if m in offered],
                                 key=session.EVAL_METHODS, format_func=lambda m: REGISTRY[m].title)
        tasks = c2.multiselect("Tasks", applicable, default=tasks_for(sc), key=session.EVAL_TASKS,
                               format_func=lambda t: TASKS[t].title,
                               help="Only the tasks this scenario has ground truth for. LDS trains 20 models on "
                                    "half the data (minutes per model on CNNs), so it is off by default.")
        clicked = st.form_submit_button("Evaluate", type="primary")
    if not methods or not tasks:
        st.info("Pick at least one method and one task.")
        return
    st.caption("Each method's precompute and each task are cached on disk: what was measured once loads at once. "
               + " · ".join(f"**{TASKS[t].title}**: {TASKS[t].description}" for t in tasks))
    asked = st.session_state.setdefault(session.EVAL_RUN, set())
    if clicked:
        asked.add((selection, tuple(methods), tuple(tasks)))
    result = evaluation_panel(selection, trained, tuple(methods), tuple(tasks), f"{len(methods)} method(s)",
                              start=(selection, tuple(methods), tuple(tasks)) in asked)
    if result is None:
        return
    _table(result, sc.spec.dataset, tasks)
    cols = st.columns(min(len(tasks), 3))
    for j, task in enumerate(tasks):
        with cols[j % len(cols)]:
            _bars(result, sc.spec.dataset, task)


def _table(result: EvaluationResult, dataset: str, tasks: list[str]) -> None:
    rows = []
    for m in result.results:
        r = {"method": REGISTRY[m].title}
        for t in tasks:
            r[TASKS[t].title] = result.headline(m, t)
            paper = paper_value(dataset, t, m)
            r[f"{TASKS[t].title} (paper)"] = paper[0] if paper else None
        r["precompute s"] = result.methods[m].fit_seconds
        rows.append(r)
    empty = [k for k in rows[0] if k != "method" and all(r[k] is None for r in rows)]  # no paper number, say
    rows = [{k: v for k, v in r.items() if k not in empty} for r in rows]
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(k, format="%.3f") for k in rows[0] if k != "method"})
    notes = [f"{m} / {TASKS[t].title}: {c.status} — {c.reason}" for m, t, c in result.problems()]
    if notes:
        with st.expander(f"{len(notes)} pair(s) without a value"):
            st.text("\n".join(notes))
    st.caption("Headline figures: " + ", ".join(TASKS[t].label for t in tasks) + ". The paper columns "
               "are the closest published setting (sources on the bar charts); sizes here are scaled to this machine.")


def _bars(result: EvaluationResult, dataset: str, task: str) -> None:
    names, ours, papers, source = [], [], [], ""
    for m in result.ok(task):
        names.append(m)
        ours.append(result.headline(m, task))
        paper = paper_value(dataset, task, m)
        papers.append(paper[0] if paper else None)
        source = paper[1] if paper else source
    if not names:
        return
    fig = go.Figure()
    fig.add_bar(x=names, y=ours, name="attrex", marker_color="#0f766e")
    if any(p is not None for p in papers):
        fig.add_bar(x=names, y=papers, name=f"paper: {source}", marker_color="#cbd5e1")
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=40, b=10), title=TASKS[task].title, barmode="group",
                      legend=dict(orientation="h", y=-0.3, font=dict(size=10)))
    st.plotly_chart(fig, width="stretch", config={"displayModeBar": False}, key=session.eval_bars(task))


if __name__ == "__main__":  # Streamlit runs this file as the page (explorer/nav.py)
    nav.run(nav.EVALUATE)
