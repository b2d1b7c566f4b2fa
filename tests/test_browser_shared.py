"""Safe to share, in Chromium: a server in shared mode and two browser contexts, two visitors who are strangers.

Visitor A uploads an image folder whose class names are hostile Markdown; visitor B opens A's
link, the Cache page and hostile links. Neither can name a server path or code, B sees nothing
of A's data, no page shows a traceback, and text from data is shown as text (no link, no emoji).
"""

from __future__ import annotations

import io
import zipfile

import pytest
from _browser import app_server

pytestmark = pytest.mark.browser

HOSTILE_CLASS = "[click me](javascript:alert(1)) :x:"
# each opens the page with a message saying what was ignored
HOSTILE_LINKS = [
    "?seed=%C2%B2", "?seed=" + "9" * 10_000, "?seed=%D9%A3", "?scenario=mnist&sample=%C2%B2",
    "?scenario=mnist&k=" + "1" * 5000,
    "?scenario=mnist&methods=graddot&pairs=graddot:proponents:5,graddot:opponents:5,graddot:proponents:x%C2%B2",
    "?scenario=%5Bclick%20me%5D(http://evil.example)", "?scenario=custom&own=" + "a" * 300,
    "?scenario=custom&own=deadbeef",
]


@pytest.fixture(scope="module")
def shared_server(default_trained):
    with app_server(ATTREX_SHARED="1") as url:
        yield url


@pytest.fixture(scope="module")
def hostile_zip(tmp_path_factory) -> bytes:
    from _userdata import image_folder

    folder = image_folder(tmp_path_factory.mktemp("hostile") / "digits", per_class=8, classes=3)
    (folder / "digit0").rename(folder / HOSTILE_CLASS)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.rglob("*.png")):
            z.write(p, str(p.relative_to(folder)))
    return buf.getvalue()


def _no_traceback(page) -> None:
    assert page.get_by_test_id("stException").count() == 0, page.inner_text("body")[:2000]


def test_two_visitors_on_a_shared_server(browser, shared_server, hostile_zip, tmp_path):  # noqa: F811
    a = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    b = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    try:
        a.goto(f"{shared_server}/?scenario=custom")
        a.get_by_text("Your data").first.wait_for(timeout=60_000)
        body = a.inner_text("body")
        assert "Data path" not in body and "entry point" not in body  # no server path, no code
        a.locator("input[type=file]").first.set_input_files(
            files=[{"name": "digits.zip", "mimeType": "application/zip", "buffer": hostile_zip}])
        a.get_by_text("digits.zip").first.wait_for(timeout=30_000)
        a.get_by_role("button", name="Load", exact=True).click()
        a.get_by_text("Explore · custom:digits").first.wait_for(timeout=240_000)
        a.get_by_text("Test #0", exact=True).wait_for(timeout=240_000)
        a.screenshot(path=str(tmp_path / "visitor-a.png"), full_page=True)
        _no_traceback(a)
        assert a.locator("a", has_text="click me").count() == 0  # a class name is text, never a link
        assert "❌" not in a.inner_text("body")                   # nor an emoji
        assert "own=" not in a.url

        b.goto(a.url)  # A's link, opened by a stranger: nothing of A's data
        b.get_by_text("Your data").first.wait_for(timeout=60_000)
        b.wait_for_timeout(1500)
        assert "custom:digits" not in b.inner_text("body")
        _no_traceback(b)

        b.goto(f"{shared_server}/cache")
        b.get_by_text("deleting entries is for the operator").wait_for(timeout=60_000)
        assert b.get_by_role("button", name="Clear the whole cache").count() == 0
        b.screenshot(path=str(tmp_path / "visitor-b-cache.png"), full_page=True)

        for link in HOSTILE_LINKS:
            b.goto(f"{shared_server}/{link}")
            b.get_by_test_id("stAlertContentWarning").first.wait_for(timeout=60_000)  # a message says what was ignored
            _no_traceback(b)
            assert b.locator("a", has_text="click me").count() == 0
    finally:
        b.screenshot(path=str(tmp_path / "visitor-b-last.png"), full_page=True)
        a.context.close()
        b.context.close()
