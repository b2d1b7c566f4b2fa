"""End to end in headless Chromium: the app as a person sees it (``make test`` installs Chromium where it can)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _browser import app_server

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(default_trained):
    """The app, served locally, with the session's cache (model already trained)."""
    with app_server() as url:
        yield url


def test_explore_page_in_chromium(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    page.get_by_text("Explore · mnist").wait_for(timeout=90_000)
    try:
        page.get_by_text("Test #0", exact=True).wait_for(timeout=30_000)
        # the gallery's first page: 40 sample images plus the detail image, all loaded
        page.wait_for_function(
            "[...document.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0).length >= 41",
            timeout=30_000,
        )
        page.get_by_role("button", name="#7", exact=True).click()
        page.get_by_text("Test #7", exact=True).wait_for(timeout=30_000)
        assert "Test accuracy" in page.inner_text("body")
        # the default method's precompute runs in the background; its answer names the chosen sample
        page.get_by_text("of test #7;").first.wait_for(timeout=120_000)
        assert "answered in" in page.inner_text("body")
    finally:
        page.screenshot(path=str(tmp_path / "explore.png"), full_page=True)  # kept by pytest for a look
    assert not errors, errors


def test_every_page_in_chromium(browser, server, tmp_path):
    """Explore -> Mislabels (export a CSV, read it back) -> Backdoor -> Compare -> Evaluate -> Cache -> a text scenario."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    def visit(path: str, title: str) -> None:
        page.goto(f"{server}/{path}")
        page.get_by_text(title).first.wait_for(timeout=120_000)
        page.wait_for_timeout(500)

    try:
        visit("?scenario=mnist", "Explore · mnist · seed 0")
        page.get_by_role("button", name="#3", exact=True).click()
        page.get_by_text("Test #3", exact=True).wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "1-explore.png"), full_page=True)

        visit("mislabels?scenario=mnist", "Mislabels · mnist · seed 0")
        page.get_by_text("no planted flips").first.wait_for(timeout=30_000)
        button = page.get_by_role("button", name="Export 24 as CSV")
        button.wait_for(timeout=180_000)  # three methods' precomputes, then the ranking
        with page.expect_download(timeout=30_000) as download:
            button.click()
        rows = Path(download.value.path()).read_text().strip().splitlines()
        assert rows[0].startswith("id,given label,suggested label,score: loss") and len(rows) == 25
        assert all(r.split(",")[0].isdigit() for r in rows[1:])
        page.screenshot(path=str(tmp_path / "2-mislabels.png"), full_page=True)

        visit("backdoor?scenario=mnist", "Backdoor · mnist · seed 0")
        page.get_by_text("needs a scenario with a planted backdoor").wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "3-backdoor.png"), full_page=True)

        visit("compare?scenario=mnist", "Compare · mnist · seed 0")
        page.get_by_text("proponents shared").wait_for(timeout=180_000)
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=30_000)
        assert page.get_by_role("link", name="Compare").count() == 1  # st.navigation's titles, not file names
        page.screenshot(path=str(tmp_path / "4-compare.png"), full_page=True)

        visit("evaluate?scenario=mnist", "Evaluate · mnist · seed 0")
        page.get_by_text("Not measured yet").first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "5-evaluate.png"), full_page=True)

        page.goto(f"{server}/cache")
        page.get_by_text("trained models").first.wait_for(timeout=60_000)
        assert "method precomputes" in page.inner_text("body")
        page.get_by_test_id("stDataFrame").first.wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "6-cache.png"), full_page=True)

        visit("?scenario=agnews", "Explore · agnews · seed 0")
        page.get_by_text("Test #0", exact=True).wait_for(timeout=180_000)  # AG News trains in about 15 s
        page.screenshot(path=str(tmp_path / "7-text.png"), full_page=True)
    finally:
        page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
    assert not errors, errors
