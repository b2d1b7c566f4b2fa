"""Helpers for the AppTest suites (tests/test_app.py, tests/test_pages.py, tests/test_inert.py, ...)."""

from __future__ import annotations

import re
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from explorer import session

APP = str(Path(__file__).resolve().parents[1] / "explorer" / "app.py")


def wait_for_jobs(at: AppTest, timeout: float = 240) -> None:
    """Rerun until no background job (training, precompute, evaluation) is left on the page."""
    from explorer import state

    deadline = time.time() + timeout
    while True:
        while state.runner().busy():
            assert time.time() < deadline, "a background job did not finish in time"
            time.sleep(0.5)
        at.run()
        assert not at.exception, at.exception
        if not state.runner().busy():  # the rerun may have started the next job (a page's second step)
            return


def own_data_app(data: Path) -> AppTest:
    """The app (Explore) on a person's data at ``data``, typed into the sidebar's *Your data* form and loaded, its
    model trained by attrex. Streamlit's caches are cleared first: nothing of an earlier test is reused."""
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=240)
    at.query_params["scenario"] = "custom"  # the "Your data" source
    at.run()
    at.radio(key=session.OWN_DATA_FROM).set_value("path").run()  # a path: the local user's (AppTest serves localhost)
    at.text_input(key=session.own("data")).input(str(data))
    at.button(key=session.own("load")).click().run()
    wait_for_jobs(at)
    return at


def texts(at: AppTest) -> str:
    """Every markdown, caption, title, subheader, info and text on the page, as one string."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    parts += [s.value for s in at.subheader] + [i.value for i in at.info] + [t.value for t in at.text]
    return "\n".join(parts)


def markdown_shown(block) -> list[str]:
    """Every string that Streamlit renders as Markdown in ``block`` (``at.main``, say): the bodies of markdown (badges
    included), captions, headings and alerts, metric labels and values, button labels, tooltips, image captions and
    the options of segmented controls."""
    out = [e.value for kind in ("markdown", "caption", "title", "header", "subheader", "info", "success", "warning",
                                "error") for e in getattr(block, kind)]
    out += [s for m in block.metric for s in (m.label, m.value, m.help)]
    out += [s for b in block.button for s in (b.label, b.help)]
    out += [s for g in block.button_group for s in (g.label, g.help, *g.options)]
    out += [c for i in block.image for c in i.captions]
    return out


def plain(markdown: str) -> str:
    """The text that ``markdown`` made by :func:`explorer.render.inert` shows: backslash escapes resolved, the
    zero-width spaces after colons dropped."""
    from explorer.render import ZERO_WIDTH_SPACE

    return re.sub(r"\\(.)", r"\1", markdown).replace(ZERO_WIDTH_SPACE, "")
