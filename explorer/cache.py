"""The Cache page: what the disk cache holds (models, method precomputes, evaluations, FLIA runs), and clearing it."""

from __future__ import annotations

import time

import streamlit as st

from core.cache import Cache
from explorer import access, nav, session, state
from explorer.render import inert

KIND_TITLES = {"model": "trained models", "method": "method precomputes", "evaluation": "evaluations",
               "flia": "FLIA runs", "dualview-lrp": "DualView-LRP runs"}


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _count(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def render() -> None:
    st.title(nav.CACHE.title)
    cache = Cache()
    entries = cache.entries()
    shared = access.shared()
    where = "on the server" if shared else f"in **`{inert(cache.root)}`** (set `ATTREX_CACHE` to move it)"
    st.markdown(f"Everything attrex computes is kept {where}, checked on every read, and never computed twice. "
                "Clearing an entry only costs the time to compute it again.")
    if not entries:
        st.info("The cache is empty.")
        return
    kinds = sorted({e["kind"] for e in entries})
    cols = st.columns(len(kinds) + 1)
    cols[0].metric("Total", _size(sum(e["bytes"] for e in entries)))
    cols[0].caption(_count(len(entries)))
    for col, kind in zip(cols[1:], kinds, strict=True):
        mine = [e for e in entries if e["kind"] == kind]
        col.metric(KIND_TITLES.get(kind, kind), _size(sum(e["bytes"] for e in mine)))
        col.caption(_count(len(mine)))
    kind = st.segmented_control("Show", kinds, default=kinds[0], format_func=lambda k: KIND_TITLES.get(k, k),
                                key=session.CACHE_KIND) or kinds[0]
    shown = sorted((e for e in entries if e["kind"] == kind), key=lambda e: -e["modified"])
    table = {"what": [e["label"] or "(written before labels)" for e in shown], "size": [_size(e["bytes"]) for e in shown],
             "written": [time.strftime("%Y-%m-%d %H:%M", time.localtime(e["modified"])) for e in shown],
             "key": [e["key"][:12] for e in shown]}
    if shared:  # every visitor shares this cache: only its local user or the operator deletes from it
        st.dataframe(table, hide_index=True, width="stretch", key=session.cache_table(kind, len(shown)))
        st.info("This server is shared, so its cache is only listed here: deleting entries is for the operator, on "
                "the server (`make clean-cache`, or the app served locally).")
        return
    event = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="multi-row", width="stretch",
                         key=session.cache_table(kind, len(shown)))
    picked = [shown[r] for r in (event.selection.rows if event is not None else []) if r < len(shown)]
    c1, c2 = st.columns(2)
    c1.button(f"Delete the {len(picked)} selected", disabled=not picked, width="stretch", on_click=_delete,
              args=(cache, [(e["kind"], e["key"]) for e in picked]))
    sure = c2.checkbox("Yes, clear everything", key=session.CACHE_CONFIRM,
                       help="Models retrain and precomputes rerun when next needed")
    c2.button("Clear the whole cache", disabled=not sure, type="primary", width="stretch", on_click=_clear_all,
              args=(cache,))


def _delete(cache: Cache, entries: list[tuple[str, str]]) -> None:
    if access.shared():  # the buttons are not drawn then; a forged rerun is refused all the same
        return
    for kind, key in entries:
        cache.remove(kind, key)
    st.toast(f"Deleted {len(entries)} entries")


def _clear_all(cache: Cache) -> None:
    """Empty the disk cache and forget what this process read from it (runs before the rerun). The job queue and
    the sessions' own data stay: a job in flight finishes, and the next still waits its turn."""
    if access.shared():
        return
    cache.clear()
    st.session_state[session.CACHE_CONFIRM] = False
    st.session_state.pop(session.EVALUATIONS, None)
    state.forget_cached()
    st.cache_data.clear()


if __name__ == "__main__":  # Streamlit runs this file as the page (explorer/nav.py)
    nav.run(nav.CACHE)
