"""Helpers for the AppTest suites (tests/test_app.py, tests/test_pages.py)."""

from __future__ import annotations

import re
import time

from streamlit.testing.v1 import AppTest


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


def texts(at: AppTest) -> str:
    """Every markdown, caption, title, subheader, info and text on the page, as one string."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    parts += [s.value for s in at.subheader] + [i.value for i in at.info] + [t.value for t in at.text]
    return "\n".join(parts)


def plain(markdown: str) -> str:
    """What Markdown written with :func:`explorer.render.inert` shows: its escapes and zero-width spaces removed."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u200b", "")
