"""What a link carries: the Explore view in the URL, so that a reload or a shared link shows the same view.

The sidebar puts the scenario and seed in the URL; the Explore page puts there the split and test sample
(``split``, ``sample``), the methods (``methods``), each method's parameters where they differ from the
defaults (``p-<method>=name:value;name:value``), the number of cards (``k``), the class explained
(``explain=label`` for the true label) and the open pair views (``pairs=method:kind:train,...``). A link is read
once per session and scenario; every value is checked, and one that does not fit is reported as plain text
(never rendered as Markdown) and ignored. Anyone can write a link, so nothing in one raises: numbers and
parameters are read in ASCII only (Python also reads other scripts' digits), a number with more digits than
its range allows is refused before ``int()`` sees it, a list is read up to :data:`MAX_ITEMS` items and a report
echoes at most :data:`SHOWN` characters of a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
MAX_ITEMS = 64       # the most methods, pairs, parameters or ``p-`` keys read from a link; the rest is ignored
SHOWN = 80           # the most characters of one link value echoed in a report
MAX_REPORTED = 20    # the most bad values listed in a report


@dataclass
class View:
    """What a link names for one scenario, every value checked; ``None`` (``"clean"`` for the split): the link
    does not name it, or names a value that does not fit, which ``bad`` then reports."""

    split: str = "clean"
    sample: int | None = None
    methods: list[str] | None = None
    k: int | None = None
    explain: str | None = None                                   # "true label" or "prediction"
    params: dict[str, dict] = field(default_factory=dict)        # by method, checked against its schema
    pairs: tuple[session.OpenPair, ...] | None = None
    bad: list[str] = field(default_factory=list)                 # one line per value ignored, as plain text


def seed() -> int | None:
    """The link's seed, or ``None`` (with a warning in the sidebar when it names one that does not fit)."""
    if "seed" not in st.query_params:
        return None
    text = st.query_params["seed"]
    value = _int(text, 0, SEED_MAX)
    if value is None:
        st.sidebar.warning(f"The link's seed is not a whole number from 0 to {SEED_MAX:,}; it is ignored. It named:")
        st.sidebar.text(_shown(text))
    return value


def read(sc: Scenario, offered: list[str], max_methods: int) -> None:
    """Once per session and scenario: the view the link names, each value checked (``offered``: the methods the
    picker offers, at most ``max_methods`` of them). What does not fit is reported as plain text and ignored."""
    name = sc.spec.name
    if st.session_state.get(session.url_read(name)):
        return
    st.session_state[session.url_read(name)] = True
    view = parse(st.query_params, sc, offered, max_methods)
    if view.split != "clean":
        st.session_state[session.kept(session.split(name))] = view.split
    if view.sample is not None:
        st.session_state[session.sample(name, view.split)] = view.sample
    if view.methods is not None:
        st.session_state[session.kept(session.METHODS)] = view.methods
    if view.k is not None:
        st.session_state[session.kept(session.TOP_K)] = view.k
    if view.explain is not None:
        st.session_state[session.EXPLAIN] = view.explain
    for method, params in view.params.items():
        st.session_state[session.params(method)] = params
    if view.pairs is not None:
        session.set_open_pairs(name, view.pairs)
    if view.bad:
        st.warning("The link names values this scenario does not have; they are ignored:")
        more = len(view.bad) - MAX_REPORTED
        st.text("\n".join(view.bad[:MAX_REPORTED] + ([f"and {more} more"] if more > 0 else [])))


def parse(q: Mapping[str, str], sc: Scenario, offered: list[str], max_methods: int) -> View:
    """The view that the link's query ``q`` names for ``sc`` (no Streamlit call: :func:`read` applies it). Nothing
    in ``q`` raises: a value that does not fit is left out and named, cut and escaped, in ``View.bad``."""
    view = View()
    bad = view.bad
    split = q.get("split", "clean")
    if split in sc.test_splits():
        view.split = split
    else:
        bad.append(f"split={_shown(split)}")
    if "sample" in q:
        n = len(sc.test_split(view.split)[1])
        view.sample = _int(q["sample"], 0, n - 1)
        if view.sample is None:
            bad.append(f"sample={_shown(q['sample'])} (this split has rows 0-{n - 1})")
    if "methods" in q:
        view.methods = []
        for method in _items(q["methods"], ",", "methods", bad):
            if method not in offered:
                bad.append(f"method {_shown(method)}")
            elif method in view.methods:
                bad.append(f"method {method} (named twice)")
            elif len(view.methods) == max_methods:
                bad.append(f"method {method} (at most {max_methods} methods)")
            else:
                view.methods.append(method)
    if "k" in q:
        view.k = _int(q["k"], 1, MAX_K)
        if view.k is None:
            bad.append(f"k={_shown(q['k'])} (from 1 to {MAX_K})")
    if "explain" in q:
        view.explain = {"label": "true label", "prediction": "prediction"}.get(q["explain"])
        if view.explain is None:
            bad.append(f"explain={_shown(q['explain'])} (label or prediction)")
    keys = [key for key in q if key.startswith(PARAMS)]
    if len(keys) > MAX_ITEMS:
        bad.append(f"{PARAMS} keys: only the first {MAX_ITEMS} are read")
    for key in keys[:MAX_ITEMS]:
        method = key[len(PARAMS):]
        try:
            if method not in offered:
                raise AttrexError("no such method")
            view.params[method] = REGISTRY[method].check_params(_params(q[key]))
        except (ValueError, OverflowError) as exc:  # an AttrexError, or Python refusing a number (4,300 digits, say)
            bad.append(f"{_shown(key)}={_shown(q[key])} ({_shown(str(exc), 2 * SHOWN)})")
    if "pairs" in q:
        pairs: list[session.OpenPair] = []
        for text in _items(q["pairs"], ",", "pairs", bad):
            pair = _pair(text, sc, offered)
            if pair is None:
                bad.append(f"pair {_shown(text)} (method:proponents or opponents:training id)")
            elif pair in pairs:
                bad.append(f"pair {pair.url()} (named twice)")
            else:
                pairs.append(pair)
        view.pairs = tuple(pairs[-session.MAX_PAIRS:])
    return view


def _int(text: str, low: int, high: int) -> int | None:
    """``text`` as a whole number from ``low`` (at least 0) to ``high``, else ``None``. ASCII digits only:
    ``str.isdigit`` also takes superscripts (which ``int`` refuses) and other scripts' digits (which it reads).
    A value with more digits than ``high`` is refused before ``int`` (which refuses more than 4,300)."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(high)):
        return None
    number = int(digits)
    return number if low <= number <= high else None


def _items(text: str, sep: str, what: str, bad: list[str]) -> list[str]:
    """The non-empty items of the ``sep``-separated list ``text``, at most :data:`MAX_ITEMS` (a longer list is
    named in ``bad``)."""
    items = text.split(sep, MAX_ITEMS)
    if len(items) > MAX_ITEMS:
        bad.append(f"{what}: only the first {MAX_ITEMS} are read")
    return [t for t in items[:MAX_ITEMS] if t]


def _params(text: str) -> dict[str, str]:
    """``name:value;name:value`` as a dict. ASCII only: Python reads other scripts' digits as numbers."""
    if not text.isascii():
        raise AttrexError("not ASCII")
    items = text.split(";", MAX_ITEMS)
    if len(items) > MAX_ITEMS:
        raise AttrexError(f"more than {MAX_ITEMS} name:value items")
    out = {}
    for item in (t for t in items if t):
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


def _shown(text: str, limit: int = SHOWN) -> str:
    """``text`` as a report echoes it: on one line, characters that do not print (line breaks, direction marks)
    as escapes, cut to ``limit`` characters (then saying how long it was)."""
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[:limit])
    if len(text) <= limit and len(shown) <= limit:
        return shown
    return f"{shown[:limit]}… ({len(text):,} characters)"


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
