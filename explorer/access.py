"""Who may do what: the app serves its local user, or others (shared mode), and an operator's trusted list.

**Local** (the default: ``make app`` listens on ``localhost``): the person at the keyboard owns the
machine, so the *Your data* form also takes server paths and Python entry points, and the Cache
page can delete entries.

**Shared** (Streamlit listens on any address that is not loopback, e.g. ``make app HOST=0.0.0.0``,
or ``ATTREX_SHARED=1``): every browser visitor is a stranger. A visitor's data and model arrive as
uploads only (:mod:`core.data.uploads`); no page names a server path or runs code on a visitor's
word; links carry no one's data; the Cache page only lists. The operator may list trusted data
sets and models in ``attrex.toml`` (beside the app, or at ``$ATTREX_CONFIG``); the form offers
them by name:

    [data.flowers]
    path = "/srv/data/flowers"        # anything core.data.custom.load reads
    image_size = "64x64"              # optional
    known_bad = "/srv/data/flowers-bad.csv"  # optional

    [models.flowers-cnn]
    entry = "attrex:cnn"              # or package.module:function, imported: the operator vouches for it
    weights = "/srv/models/flowers.safetensors"
    checkpoints = "/srv/models/ckpts" # optional
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.errors import AttrexError

CONFIG_FILE = "attrex.toml"
TRUE = ("1", "true", "yes", "on")


def shared() -> bool:
    """Whether the app serves others: ``ATTREX_SHARED`` set, or Streamlit bound to an address that is not
    loopback (no address at all means every interface)."""
    if os.environ.get("ATTREX_SHARED", "").strip().lower() in TRUE:
        return True
    return not is_loopback(st.get_option("server.address"))


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def mode_line() -> str:
    """One line saying which mode the app runs in, for the pages that change with it."""
    return ("Shared mode: your data and model arrive as uploads, kept for this browser session only."
            if shared() else "Local mode: served to this machine only.")


@dataclass(frozen=True)
class ListedData:
    name: str
    path: str
    image_size: str | None = None
    test_share: float = 0.2
    known_bad: str | None = None


@dataclass(frozen=True)
class ListedModel:
    name: str
    entry: str
    weights: str
    checkpoints: str | None = None
    features_layer: str | None = None
    head_layer: str | None = None


@dataclass(frozen=True)
class OperatorList:
    data: dict[str, ListedData]
    models: dict[str, ListedModel]
    problem: str | None = None  # why the file could not be used, for the page to say


def config_path() -> Path:
    return Path(os.environ.get("ATTREX_CONFIG") or Path.cwd() / CONFIG_FILE)


def operator_list() -> OperatorList:
    """The operator's trusted data sets and models (empty where there is no ``attrex.toml``)."""
    path = config_path()
    if not path.is_file():
        return OperatorList({}, {})
    try:
        return _read(path)
    except (OSError, tomllib.TOMLDecodeError, AttrexError, TypeError, ValueError) as exc:
        why = str(exc) if isinstance(exc, AttrexError) else type(exc).__name__
        return OperatorList({}, {}, f"{CONFIG_FILE} cannot be used: {why}")


@st.cache_data(show_spinner=False, ttl=30)
def _parsed(path: str, mtime: float) -> dict:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def _read(path: Path) -> OperatorList:
    doc = _parsed(str(path), path.stat().st_mtime)
    data, models = {}, {}
    for name, entry in _table(doc, "data").items():
        if not isinstance(entry.get("path"), str):
            raise AttrexError(f"[data.{name}] needs a path")
        data[name] = ListedData(name, entry["path"], _opt(entry, "image_size"), float(entry.get("test_share", 0.2)),
                                _opt(entry, "known_bad"))
    for name, entry in _table(doc, "models").items():
        if not isinstance(entry.get("entry"), str) or not isinstance(entry.get("weights"), str):
            raise AttrexError(f"[models.{name}] needs an entry and weights")
        models[name] = ListedModel(name, entry["entry"], entry["weights"], _opt(entry, "checkpoints"),
                                   _opt(entry, "features_layer"), _opt(entry, "head_layer"))
    return OperatorList(data, models)


def _table(doc: dict, key: str) -> dict[str, dict]:
    table = doc.get(key, {})
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise AttrexError(f"[{key}] must hold one table per entry, e.g. [{key}.name]")
    return table


def _opt(entry: dict, key: str) -> str | None:
    value = entry.get(key)
    return str(value) if value not in (None, "") else None
