"""The Backdoor page: does a method trace a triggered prediction back to the poisoned training points?

For a backdoor scenario: the attack's success, the triggered test samples, each candidate
method's measured quality at finding the poison (top-10 share against the base rate,
detection AUROC over all points and within the target class), the training set ranked by
the chosen method's mean score over the triggered samples with its detection curve, FLIA
heatmaps of the most suspicious points with the trigger outlined, and retraining without the
flagged points (attack success and clean accuracy after).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.data import PRESETS
from core.errors import AttrexError
from core.evaluation import Settings, TaskResult
from core.features.render import outline, overlay
from core.methods import REGISTRY
from core.metrics.backdoor import trigger_direction, trigger_mass_ratio
from explorer import nav, session, state
from explorer.components import (
    card_columns,
    evaluation_panel,
    flags_markdown,
    retrain_panel,
    scenario_and_model,
)
from explorer.render import inert, to_image

# The methods measured on every visit (fast precomputes); the others can be added. Measured on
# mnist-backdoor (docs/REPORT.md): the gradient similarities (graddot, gradcos, GAS) put the
# poisoned points first; TracIn, TRAK and influence mostly do not.
CANDIDATES = ("gas-rp", "graddot", "gradcos", "tracin-rp", "representer", "dualview", "random")
SETTINGS = Settings()  # 20 triggered samples, top-10: the evaluation suite's defaults
COLUMNS = 8


def render() -> None:
    selection, sc, trained = scenario_and_model(nav.BACKDOOR)
    t = sc.truth
    if t.poisoned_ids is None:
        backdoors = [n for n, s in PRESETS.items() if s.corruption is not None and "poison_rate" in s.corruption.params()]
        st.info("This page needs a scenario with a planted backdoor: " + ", ".join(f"`{n}`" for n in backdoors) +
                ". Pick one in the sidebar.")
        return
    names = sc.class_names
    n = len(sc.y_train)
    cols = st.columns(4)
    cols[0].metric("Clean test accuracy", f"{trained.test_accuracy:.1%}")
    cols[1].metric("Attack success", f"{trained.attack_success:.1%}",
                   help="Share of triggered test inputs the model sends to the target class")
    cols[2].metric("Poisoned training points", f"{len(t.poisoned_ids)}")
    cols[2].caption(f"base rate {len(t.poisoned_ids) / n:.1%} of {n:,}")
    cols[3].metric("Target class", inert(names[t.target_class]))

    extra = st.multiselect("Also measure", [m for m, c in REGISTRY.items() if c.per_test and m not in CANDIDATES],
                           key=session.BACKDOOR_EXTRA, format_func=lambda m: REGISTRY[m].title,
                           help="Slower methods (exact TracIn, TRAK, influence functions, ...): each precomputes once.")
    methods = CANDIDATES + tuple(extra)
    result = evaluation_panel(selection, trained, methods, ("backdoor",), "backdoor detection", SETTINGS)
    if result is None:
        return
    ok = result.ok("backdoor")
    if not ok:
        errors = {m: r["backdoor"].reason for m, r in result.results.items()}
        st.error("No method could be measured here: " + "; ".join(f"{m}: {inert(e)}" for m, e in errors.items()))
        return
    best = result.best("backdoor", ("top_k_share", "auroc_in_class")) or next(iter(ok))
    _quality(ok, best)
    chosen = st.selectbox("Method", list(ok), index=list(ok).index(best), key=session.BACKDOOR_METHOD,
                          format_func=lambda m: REGISTRY[m].title + (" (measures best here)" if m == best else ""))
    st.caption(f"Defaults to **{REGISTRY[best].title}**: the highest share of poisoned points among the top-10 "
               f"proponents of the triggered samples on this model ({ok[best].values['top_k_share']:.0%}).")
    ranking = state.evaluation_ranking(selection, trained, chosen, "backdoor", SETTINGS)
    _ranking(sc, trained, selection, chosen, ok[chosen], ranking)


def _quality(ok: dict[str, TaskResult], best: str) -> None:
    st.subheader("Which method finds the poison")
    rows = [{"method": REGISTRY[m].title + (" ★" if m == best else ""), "top-10 share": r.values["top_k_share"],
             "lift": r.values["lift"], "AUROC": r.values["auroc"], "AUROC in target class": r.values["auroc_in_class"]}
            for m, r in ok.items()]
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={"top-10 share": st.column_config.NumberColumn(format="percent"),
                                "lift": st.column_config.NumberColumn(format="%.1f×"),
                                "AUROC": st.column_config.NumberColumn(format="%.3f"),
                                "AUROC in target class": st.column_config.NumberColumn(format="%.3f")})
    first = next(iter(ok.values())).values
    st.caption(f"Over {first['triggered_test']} triggered test samples the model sends to the target class. Top-10 "
               f"share: poisoned points among each sample's 10 strongest proponents (random: the base rate "
               f"{first['base_rate']:.1%}). AUROC: ranking the training set by the mean score over those samples; "
               "within the target class only the trigger can separate the poison (every poisoned point carries "
               "the target label, so over all points the label alone scores high).")


def _ranking(sc, trained, selection, method: str, r: TaskResult, ranking: np.ndarray | None) -> None:
    names = sc.class_names
    poisoned = set(sc.truth.poisoned_ids.tolist())
    st.subheader("The training set ranked by suspicion")
    if ranking is None:
        st.warning(f"The ranking of this evaluation is not in the cache any more; rerun it from the "
                   f"{nav.EVALUATE.title} page.")
        return
    left, right = st.columns([1, 1.3], gap="large")
    with left:
        fig = go.Figure()
        fig.add_scatter(x=[0, 1], y=[0, 1], name="random", mode="lines", line=dict(dash="dot", color="#94a3b8"))
        fig.add_scatter(x=r.curve[0], y=r.curve[1], name=REGISTRY[method].title, mode="lines")
        fig.update_layout(height=280, margin=dict(l=10, r=10, t=30, b=10),
                          title=f"poisoned points found · AUROC {r.values['auroc']:.3f}",
                          xaxis_title="share of the training set checked", yaxis_title="share of the poison found",
                          xaxis_tickformat=".0%", yaxis_tickformat=".0%", showlegend=False)
        st.plotly_chart(fig, width="stretch", config={"displayModeBar": False})
    order = np.argsort(-ranking, kind="stable")
    with right:
        k = int(st.number_input("Flag the top", min_value=1, max_value=len(order), value=len(poisoned), step=10,
                                key=session.backdoor_flagged(sc.spec.name),
                                help="How many of the highest-ranked training points to flag (default: as many as "
                                     "were poisoned)"))
        flagged = order[:k]
        session.flag(sc.spec.name, nav.BACKDOOR.title, f"top {k} by {REGISTRY[method].title}", flagged)
        hits = sum(int(i) in poisoned for i in flagged)
        st.markdown(f"**{hits} of {k}** flagged points are poisoned; {hits / len(poisoned):.0%} of the poison is "
                    "flagged.")
        if not trained.retrainable:
            st.caption("Retraining needs the model's recipe, which attrex knows only for models it trained.")
        elif st.button(f"Retrain without the {k} flagged points", width="stretch"):
            session.ask_retrain(selection, nav.BACKDOOR.title, drop=tuple(int(i) for i in flagged))
        asked = session.retrain_asked(selection, nav.BACKDOOR.title)
        if asked:
            retrain_panel(selection, trained, *asked)
    top = order[:COLUMNS].tolist()
    if sc.kind == "image":
        scale = 3 if sc.input_shape[-1] <= 28 else 2
        cols = card_columns(COLUMNS, "top")
        for col, i in zip(cols, top, strict=False):
            with col:
                st.image(to_image(sc.x_train[i], scale), width="stretch")
                flags = sc.truth.train_flags([i])[0]
                st.markdown(f"**#{i}** · {inert(names[int(sc.y_train[i])])}" + (f"  \n{flags_markdown(sc, i, flags)}" if flags else ""))
        _flia(sc, trained, selection, top[:4])
    else:
        st.dataframe({"id": top, "label": [names[int(sc.y_train[i])] for i in top],
                      "poisoned": ["yes" if i in poisoned else "" for i in top],
                      "text": [sc.texts_train[i][:160] for i in top]}, hide_index=True, width="stretch")
        st.caption(f"The trigger word is “{inert(sc.truth.trigger_token)}”. Open a triggered sample in Explore for FLIA "
                   "token highlights.")


def _flia(sc, trained, selection, ids: list[int]) -> None:
    """FLIA of the top suspicious points for one triggered sample, in the direction that puts the most mass on
    the trigger over these pairs, with the trigger region outlined."""
    probs = state.probabilities(selection, "triggered", trained)
    target = sc.truth.target_class
    hits = np.flatnonzero(probs.argmax(1) == target)
    if not len(hits):
        return
    st.markdown("**Where in these images the influence sits** · FLIA for a triggered test sample")
    row = int(st.selectbox("Triggered test sample", hits[:20].tolist(), key=session.backdoor_sample(sc.spec.name),
                           format_func=lambda r: f"#{int(sc.truth.triggered_test_ids[r])}"))
    x_test = sc.test_split("triggered")[0][row]
    scale = 4 if sc.input_shape[-1] <= 28 else 3
    mask = sc.truth.trigger_mask
    local = mask is not None and not bool(mask.all())  # a blended trigger covers the whole image: no region
    try:
        runs = {d: state.flia_pairs(selection, "triggered", row, tuple(ids), target, trained, direction=d)
                for d in (("descent", "ascent") if local else ("descent",))}
    except AttrexError as exc:
        st.error(inert(exc))
        return
    direction = "descent"
    if local:
        direction, medians = trigger_direction({d: [f["heatmap"] for f in fs] for d, fs in runs.items()}, mask)
        other = "ascent" if direction == "descent" else "descent"
        st.caption(f"FLIA in **{direction}** ({'lowering' if direction == 'descent' else 'raising'} each training "
                   f"image's influence on this sample): on these {len(ids)} pairs it puts a median ×"
                   f"{medians[direction]:.1f} of the trigger's share of the image on the trigger, {other} ×"
                   f"{medians[other]:.1f}. FLIA clips pixels to their range and a black-and-white trigger sits at its "
                   "ends, so it often moves in one direction only; which one depends on the trained model, so both "
                   "are measured and the one that shows more of the trigger is drawn. Green outline: the trigger region; the "
                   "ratio is FLIA's mass inside it over the region's share of the image (1 = no preference).")

    def framed(rgb):
        return outline(rgb, mask) if local else rgb

    cols = st.columns(len(ids) + 1, gap="small")
    cols[0].image(framed(to_image(x_test, scale)), caption="triggered test", width="stretch")
    for col, i, f in zip(cols[1:], ids, runs[direction], strict=False):
        ratio = f" · trigger mass ×{trigger_mass_ratio(f['heatmap'], mask):.1f}" if local else ""
        col.image(framed(overlay(sc.x_train[i], f["heatmap"], False, scale)), caption=f"#{i}{ratio}", width="stretch")
    if not local:
        st.caption("This trigger is blended over the whole image, so there is no region to outline or measure.")


if __name__ == "__main__":  # Streamlit runs this file as the page (explorer/nav.py)
    nav.run(nav.BACKDOOR)
