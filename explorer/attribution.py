"""The attribution panel of the Explore page: method picker, proponents and opponents of the chosen sample.

Parameters come from the method registry (one widget per schema entry, its range and
default); a method's precompute runs in the background with progress and lands in the
disk cache; a query is answered from the fitted method and cached per sample.
"""

from __future__ import annotations

import time

import numpy as np
import streamlit as st

from core.data import Scenario
from core.errors import AttrexError
from core.methods import REGISTRY, Param
from core.methods.defaults import CHOICES
from core.models import TrainedModel
from explorer import components, links, nav, pair, session, state
from explorer.components import controls, flags_markdown, ready
from explorer.render import inert, test_name, to_image

MAX_METHODS = 3


def render(sc: Scenario, trained: TrainedModel, selection: state.Selection, split: str, row: int,
           test_id: int, y_true: int | None, predicted: int) -> None:
    """Method picker and, per chosen method, the proponents and opponents of test sample ``row`` of ``split``
    (``y_true`` is ``None`` for a person's own input: it has no label)."""
    names = [inert(n) for n in sc.class_names]  # all shown as Markdown below, a segmented control's options too
    st.divider()
    st.header("Which training data made this prediction?")
    session.restore(session.METHODS, list(CHOICES["explore"].methods))
    session.restore(session.TOP_K, 8)
    methods = st.multiselect(  # a row of its own: in a column its chips' names were cut at 900 px
        "Methods", offered(), max_selections=MAX_METHODS, select_all=False, key=session.METHODS,  # "Select all" kept 3
        on_change=session.remember, args=(session.METHODS,),
        format_func=lambda m: REGISTRY[m].title, help="Up to three methods, one below the other.")
    c2, c3 = controls([4, 1], "explain")
    if y_true is None:
        explain = "prediction"
        c2.markdown(f"Explaining the prediction **{names[predicted]}** (your input has no label to compare with).")
    elif predicted != y_true:
        explain = c2.segmented_control(
            "Explain", ["prediction", "true label"], required=True, key=session.EXPLAIN,
            default=None if session.EXPLAIN in st.session_state else "prediction",  # a link may have set it
            format_func=lambda e: f"why {names[predicted]}" if e == "prediction" else f"why not {names[y_true]}",
            help=f"Which class the scores are about: the prediction ({names[predicted]}) or the sample's true "
                 f"label ({names[y_true]}).")
    else:
        explain = "prediction"
        c2.markdown(f"Explaining the prediction **{names[predicted]}** (also the true label).")
    k = int(c3.number_input("Shown", min_value=1, max_value=links.MAX_K, step=1, key=session.TOP_K,
                            on_change=session.remember, args=(session.TOP_K,),
                            help="Proponents and opponents shown per method"))
    links.write_view(methods, k, explain == "true label")
    links.write_pairs(tuple(p for p in session.open_pairs(sc.spec.name) if p.method in methods))  # before any stop
    target = predicted if explain == "prediction" else y_true
    flagged, only = _flagged_filter(sc)
    if not methods:
        st.info("Pick a method to see the training points that support and oppose this prediction.")
        return
    for name in methods:
        _method_block(sc, trained, selection, name, split, row, test_id, target, k, flagged, only)


def _flagged_filter(sc: Scenario) -> tuple[set[int], bool]:
    """The training points flagged on the Mislabels or Backdoor page to mark on the cards, and whether to list
    only them. Without a flagged list, a hint where to make one."""
    lists = session.flagged(sc.spec.name)
    if not lists:
        st.caption(f"Flag suspicious training points on the **{nav.MISLABELS.title}** or **{nav.BACKDOOR.title}** "
                   "page to mark them here, or to list only them.")
        return set(), False
    c1, c2 = st.columns([3, 1.3], vertical_alignment="bottom")
    pick = c1.selectbox("Mark flagged points", ["none", *lists], key=session.FLAGGED_PICK,
                        format_func=lambda p: p if p == "none" else f"{p}: {lists[p][0]}",
                        help="Training points a method flagged on another page (its latest list): marked on the "
                             "cards below")
    only = c2.toggle("Only flagged", key=session.FLAGGED_ONLY, disabled=pick == "none",
                     help="List only flagged points: the proponents and opponents among them")
    return (set(lists[pick][1]) if pick != "none" else set()), bool(only and pick != "none")


def offered() -> list[str]:
    """Methods that score a test sample, the baselines after the methods."""
    return CHOICES["explore"].offered()


def _parameters(name: str, check) -> dict:
    """The method's parameters: the registry's defaults, changed in a form and applied only when ``check`` accepts them."""
    cls = REGISTRY[name]
    key = session.params(name)
    current = st.session_state.setdefault(key, cls.defaults())
    if not cls.params:
        return current
    with st.expander(f"Parameters of {cls.title}"), st.form(session.params_form(name), border=False):
        cols = controls(min(4, len(cls.params)), f"params-{name}")
        chosen = {p.name: _widget(cols[i % len(cols)], p, current[p.name], session.param(name, p.name))
                  for i, p in enumerate(cls.params)}
        if st.form_submit_button("Apply"):
            try:
                check(chosen)
            except AttrexError as exc:
                st.error(f"Not applied: {inert(exc)}")
            else:
                st.session_state[key] = current = chosen
        st.caption(cls.description + (f" ({cls.reference})" if cls.reference else ""))
    return current


def _widget(col, p: Param, value, key: str):
    if p.kind == "choice":
        return col.selectbox(p.name, p.choices, index=p.choices.index(value), key=key, help=p.help)
    if p.kind == "bool":
        return col.checkbox(p.name, value=value, key=key, help=p.help)
    if p.kind == "text":
        return col.text_input(p.name, value=value, key=key, help=p.help)
    if p.kind == "int":
        return int(col.number_input(p.name, value=int(value), step=1, key=key, help=f"{p.help} ({p.range_text()})",
                                    min_value=None if p.low is None else int(p.low),
                                    max_value=None if p.high is None else int(p.high)))
    return col.number_input(p.name, value=float(value), format="%g", key=key, help=f"{p.help} ({p.range_text()})",
                            min_value=p.low, max_value=p.high)


def _method_block(sc: Scenario, trained: TrainedModel, selection: state.Selection, name: str, split: str,
                  row: int, test_id: int, target: int, k: int, flagged: set[int], only: bool) -> None:
    cls = REGISTRY[name]
    st.subheader(cls.title)
    params = _parameters(name, lambda p: state.check_method(selection, trained, name, p))
    links.write_params(name, params)
    try:
        method = ready(state.method_or_job(selection, trained, name, params), "The precompute",
                       f"Precomputing **{cls.title}** for this model (once; it is cached on disk).")
    except AttrexError as exc:
        st.error(f"{cls.title} cannot run here: {inert(exc)}")
        return
    if method is None:
        return
    try:
        t0 = time.perf_counter()
        if only:
            top = state.top_k_among(selection, state.method_key(name, params), split, row, target, k,
                                    tuple(sorted(flagged)), method)
        else:
            top = state.top_k(selection, state.method_key(name, params), split, row, target, k, method)
        elapsed = time.perf_counter() - t0  # this answer's time: a repeated query comes from memory
    except AttrexError as exc:
        st.error(inert(exc))
        return
    names = [inert(n) for n in sc.class_names]
    fit = f"precomputed in {method.fit_seconds:.1f} s" if method.fit_seconds is not None else "precomputed"
    st.caption(f"{fit} · answered in {elapsed * 1000:.0f} ms{' (remembered)' if elapsed < top['seconds'] / 2 else ''} · scores for class **{names[top['target']]}** "
               f"of {test_name(test_id)}; positive = the training point supports it")
    _truth_summary(sc, top, flagged, only)
    context = (split, row, top["target"])

    def score_of(i: int) -> float:  # one training point's score for this sample: the cached score row
        return float(state.top_k_among(selection, state.method_key(name, params), split, row, top["target"], 1,
                                       (i,), method)["proponent_scores"][0])

    for kind, title in (("proponents", f"Proponents: support {names[top['target']]}"),
                        ("opponents", f"Opponents: work against {names[top['target']]}")):
        ids, scores = top[kind], top[f"{kind[:-1]}_scores"]
        if sc.kind == "image":
            st.markdown(f"**{title}** · *Inspect* opens the pair view: FLIA and DualView-LRP heatmaps")
            _image_cards(sc, ids, scores, name, kind, context, flagged)
            shown = {i: (r, s) for r, (i, s) in enumerate(zip(ids.tolist(), scores.tolist(), strict=True), 1)}
            pair.render(sc, trained, selection, name, kind, split, row, test_id, top["target"], context, shown,
                        score_of)
        else:
            st.markdown(f"**{title}** · FLIA token highlights: the stronger the colour, the more of the text's "
                        "influence that word carries")
            pair.text_rows(sc, trained, selection, split, row, top["target"], ids, scores,
                           _flags(sc, ids, flagged), flags_markdown)


def _flags(sc: Scenario, ids: np.ndarray, flagged: set[int]) -> list[list[str]]:
    """Each point's badges: what was planted on it, and ``flagged`` where a page flagged it."""
    return [f + (["flagged"] if i in flagged else []) for i, f in zip(ids.tolist(), sc.truth.train_flags(ids.tolist()),
                                                                      strict=True)]


def _truth_summary(sc: Scenario, top: dict, flagged: set[int], only: bool) -> None:
    """How many of the proponents carry planted ground truth (or were flagged), against its share of the training set."""
    t = sc.truth
    n = len(sc.y_train)
    parts = []
    if only:
        parts.append(f"among the {len(flagged):,} flagged points only")
    elif flagged:
        hits = sum(int(i) in flagged for i in top["proponents"])
        parts.append(f"{hits} of {len(top['proponents'])} proponents are flagged (base rate {len(flagged) / n:.1%})")
    for flag, ids in (("poisoned", t.poisoned_ids), ("flipped", t.flipped_ids), ("marked", t.marked_ids)):
        if ids is None:
            continue
        members = set(ids.tolist())
        hits = sum(int(i) in members for i in top["proponents"])
        what = "known bad" if flag == "flipped" and t.flips_known else components.FLAG_TEXT[flag]
        parts.append(f"{hits} of {len(top['proponents'])} proponents are {what} "
                     f"(base rate {len(members) / n:.1%})")
    if parts:
        st.markdown(" · ".join(parts))


def _image_cards(sc: Scenario, ids: np.ndarray, scores: np.ndarray, method: str, kind: str, context: tuple,
                 flagged: set[int]) -> None:
    flags = _flags(sc, ids, flagged)
    cols = components.card_columns(max(len(ids), 6), f"{method}-{kind}")
    scale = 3 if sc.input_shape[-1] <= 28 else 2
    for rank, (col, i, s, f) in enumerate(zip(cols, ids.tolist(), scores.tolist(), flags, strict=False), 1):
        with col:
            st.image(to_image(sc.x_train[i], scale), width="stretch")
            opened = pair.is_open(sc.spec.name, method, i)
            st.button("Inspecting" if opened else "Inspect", key=session.inspect(method, kind, i), width="stretch",
                      type="primary" if opened else "secondary", on_click=pair.toggle,
                      args=(sc.spec.name, method, kind, i, rank, context),
                      help="Close this pair view" if opened else "Open the pair view: FLIA and DualView-LRP heatmaps")
            # below the button, so badges of different lengths never put the buttons out of line
            label = inert(sc.class_names[int(sc.y_train[i])])
            st.markdown(f"**#{i}** · {label}  \n`{s:+.3g}`" + (f"  \n{flags_markdown(sc, i, f)}" if f else ""))
