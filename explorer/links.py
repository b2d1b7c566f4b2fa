"""What a link carries: the Explore view in the URL, so that a reload or a shared link shows the same view.

The sidebar puts the scenario and seed in the URL; the Explore page puts there the split and test sample
(``split``, ``sample``), the methods (``methods``), each method's parameters where they differ from the
defaults (``p-<method>=name:value;name:value``), the number of cards (``k``), the class explained
(``explain=label`` for the true label) and the open pair views (``pairs=method:kind:train,...``). A link is read
once per session and scenario; every value is checked, and one that does not fit is reported as plain text
(never rendered as Markdown) and ignored.
"""

from __future__ import annotations

import streamlit as st

from core.data import Scenario
from core.errors import AttrexError
from core.methods import REGISTRY
from explorer import session

PARAMS = "p-"        # prefix of a method's parameters
KINDS = ("proponents", "opponents")
MAX_K = 16           # the most cards a row shows
SEED_MAX = 1_000_000


def _set(key: str, value: str | None) -> None:
    """Put ``key`` in the URL (``None``: take it out), touching the URL only when it changes."""
    if value is None:
        if key in st.query_params:
            del st.query_params[key]
    elif st.query_params.get(key) != value:
        st.query_params[key] = value


# ----- writing ----------------------------------------------------------------------------------------------
def write_scenario(name: str) -> None:
    """The scenario; on a change, the values that name its test samples and training points are dropped."""
    if st.query_params.get("scenario") != name:
        for key in ("split", "sample", "pairs"):
            _set(key, None)
        st.query_params["scenario"] = name


def write_seed(seed: int) -> None:
    _set("seed", str(seed))


def write_sample(split: str, row: int) -> None:
    _set("split", split)
    _set("sample", str(row))


def write_view(methods: list[str], k: int, explain_label: bool) -> None:
    """The chosen methods, the number of cards and the class explained; drops the parameters of methods not chosen."""
    _set("methods", ",".join(methods))
    _set("k", str(k))
    _set("explain", "label" if explain_label else None)
    for key in [key for key in st.query_params if key.startswith(PARAMS) and key[len(PARAMS):] not in methods]:
        del st.query_params[key]


def write_params(method: str, params: dict) -> None:
    """The parameters of ``method`` that differ from its defaults (none: the key is dropped)."""
    defaults = REGISTRY[method].defaults()
    changed = [f"{name}:{value}" for name, value in params.items() if defaults.get(name) != value]
    _set(PARAMS + method, ";".join(changed) or None)


def write_pairs(pairs: tuple[session.OpenPair, ...]) -> None:
    _set("pairs", ",".join(p.url() for p in pairs) or None)


# ----- reading ----------------------------------------------------------------------------------------------
def seed() -> int | None:
    """The link's seed, or ``None`` (with a warning in the sidebar when it names one that does not fit)."""
    if "seed" not in st.query_params:
        return None
    text = st.query_params["seed"]
    if text.strip().isdigit() and int(text) <= SEED_MAX:
        return int(text)
    st.sidebar.warning(f"The link's seed is not a whole number from 0 to {SEED_MAX:,}; it is ignored. It named:")
    st.sidebar.text(text[:120])
    return None


def read(sc: Scenario, offered: list[str], max_methods: int) -> None:
    """Once per session and scenario: the view the link names, each value checked (``offered``: the methods the
    picker offers, at most ``max_methods`` of them)."""
    name = sc.spec.name
    if st.session_state.get(session.url_read(name)):
        return
    st.session_state[session.url_read(name)] = True
    q = st.query_params
    bad: list[str] = []
    split = q.get("split", "clean")
    if split not in sc.test_splits():
        bad.append(f"split={split}")
        split = "clean"
    elif split != "clean":
        st.session_state[session.kept(session.split(name))] = split
    if "sample" in q:
        n = len(sc.test_split(split)[1])
        row = _int(q["sample"], 0, n - 1)
        if row is None:
            bad.append(f"sample={q['sample']} (this split has rows 0-{n - 1})")
        else:
            st.session_state[session.sample(name, split)] = row
    if "methods" in q:
        wanted = [m for m in q["methods"].split(",") if m]
        known = [m for m in wanted if m in offered]
        bad += [f"method {m}" for m in wanted if m not in known]
        st.session_state[session.kept(session.METHODS)] = known[:max_methods]
    if "k" in q:
        k = _int(q["k"], 1, MAX_K)
        if k is None:
            bad.append(f"k={q['k']} (from 1 to {MAX_K})")
        else:
            st.session_state[session.kept(session.TOP_K)] = k
    if "explain" in q:
        if q["explain"] in ("label", "prediction"):
            st.session_state[session.EXPLAIN] = "true label" if q["explain"] == "label" else "prediction"
        else:
            bad.append(f"explain={q['explain']} (label or prediction)")
    for key in (k for k in q if k.startswith(PARAMS)):
        method = key[len(PARAMS):]
        try:
            if method not in offered:
                raise AttrexError("no such method")
            st.session_state[session.params(method)] = REGISTRY[method].check_params(_params(q[key]))
        except AttrexError as exc:
            bad.append(f"{key}={q[key]} ({exc})")
    if "pairs" in q:
        pairs = []
        for text in (t for t in q["pairs"].split(",") if t):
            pair = _pair(text, sc, offered)
            if pair is None:
                bad.append(f"pair {text} (method:proponents or opponents:training id)")
            else:
                pairs.append(pair)
        session.set_open_pairs(name, tuple(pairs[-session.MAX_PAIRS:]))
    if bad:
        st.warning("The link names values this scenario does not have; they are ignored:")
        st.text("\n".join(bad)[:500])


def _int(text: str, low: int, high: int) -> int | None:
    text = text.strip()
    if not text.lstrip("-").isdigit() or not low <= int(text) <= high:
        return None
    return int(text)


def _params(text: str) -> dict[str, str]:
    out = {}
    for item in (t for t in text.split(";") if t):
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise AttrexError(f"{item!r} is not name:value")
        out[key] = value
    return out


def _pair(text: str, sc: Scenario, offered: list[str]) -> session.OpenPair | None:
    parts = text.split(":")
    if sc.kind != "image" or len(parts) != 3 or parts[0] not in offered or parts[1] not in KINDS:
        return None
    train = _int(parts[2], 0, len(sc.y_train) - 1)
    return None if train is None else session.OpenPair(parts[0], parts[1], train)


# ----- a person's own data (local mode only: explorer/sidebar.py) ------------------------------------------
OWN_TOKEN_MAX = 64


def own() -> str | None:
    """The link's token for a person's own data (``own=``), or ``None``; anything but a short token is ``None``."""
    token = st.query_params.get("own")
    if not token or len(token) > OWN_TOKEN_MAX or not all(c.isascii() and (c.isalnum() or c in "-_") for c in token):
        return None
    return token


def write_own(token: str) -> None:
    _set("own", token)
