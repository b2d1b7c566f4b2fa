"""The app's pages, declared once: each page's module, title, icon and URL.

``explorer/app.py`` registers them with ``st.navigation``; a page's header and the other pages' hints and
links take its title from here. A page is one module of ``explorer/``: Streamlit runs the file as the page's
script (as ``__main__``), and the module ends by drawing itself with :func:`run`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Page:
    """One page. Its module's name is its URL path too: ``AppTest.switch_page`` finds a page by its file's name
    before the app's first run."""

    module: str   # the page's module in explorer/ (its file, beside app.py, is the page's script)
    title: str
    icon: str

    @property
    def script(self) -> str:
        """The page's file relative to ``explorer/app.py`` (what ``st.Page`` and ``AppTest.switch_page`` take)."""
        return f"{self.module}.py"

    @property
    def url(self) -> str:
        return self.module


EXPLORE = Page("explore", "Explore", ":material/grid_view:")
MISLABELS = Page("mislabels", "Mislabels", ":material/label_off:")
BACKDOOR = Page("backdoor", "Backdoor", ":material/bug_report:")
COMPARE = Page("compare", "Compare", ":material/compare:")
EVALUATE = Page("evaluate", "Evaluate", ":material/leaderboard:")
CACHE = Page("cache", "Cache", ":material/storage:")
PAGES = (EXPLORE, MISLABELS, BACKDOOR, COMPARE, EVALUATE, CACHE)  # the navigation's order; the first is the default


def run(page: Page) -> None:
    """Draw ``page`` from its imported module: its script, run as ``__main__``, holds a second copy of the module's
    names, and the page uses the one copy that the rest of the app (and a test that patches it) sees."""
    importlib.import_module(f"explorer.{page.module}").render()
