"""Text from a stranger's data shows as text: :func:`explorer.render.inert` itself, and the pages on a data set whose
class names are Markdown, HTML, math and emoji shortcodes (never a link, an emphasis or an emoji)."""

from __future__ import annotations

import json
import string

import pytest
from _apptest import markdown_shown, own_data_app, plain, wait_for_jobs
from _userdata import HOSTILE_CLASSES, npz_data
from hypothesis import given, settings
from hypothesis import strategies as hs

from core.errors import AttrexError
from explorer import nav, session, state
from explorer.render import ZERO_WIDTH_SPACE, inert, plot_text

HOSTILE = [name for name, _ in HOSTILE_CLASSES] + [
    "# heading", "> quote", "- item", "1. item", "`code`", "~~gone~~", "_it_", "| a | b |", ":red[x]",
    ":material/home:", "![img](http://evil.example/x.png)", "<http://evil.example>", "&amp; &#60;", "a\\*b\\",
    "{x}^2", "[x]: http://evil.example", "---", "=== ", "www.evil.example", "mail@evil.example", "plain text",
]
# what Markdown reads as syntax: CommonMark, GitHub's tables, strikethrough and autolinks, Streamlit's emoji,
# directives (":red[x]{...}") and math
ACTIVE = set("\\`*_{}[]()#+-.!|<>~$&=^:@/")


def assert_inert(text: str, out: str) -> None:
    """``out`` shows exactly ``text`` (on one line) and holds no Markdown syntax: every active character but the
    colon is backslash-escaped, and every colon is followed by a zero-width space."""
    assert plain(out) == " ".join(text.splitlines())
    i = 0
    while i < len(out):
        if out[i] == "\\":
            assert i + 1 < len(out) and out[i + 1] in string.punctuation, (text, out)
            i += 2
            continue
        assert out[i] not in ACTIVE - {":"}, (text, out, i)
        if out[i] == ":":
            assert out[i + 1: i + 2] == ZERO_WIDTH_SPACE, (text, out, i)
        i += 1


@pytest.mark.parametrize("text", HOSTILE)
def test_inert_shows_exactly_the_text_and_no_markdown(text):
    assert_inert(text, inert(text))


@settings(deadline=None)  # a busy machine may take a while over one example
@given(hs.text(hs.characters(exclude_categories=("Cs",), exclude_characters=ZERO_WIDTH_SPACE), max_size=40))
def test_inert_on_any_text(text):
    assert_inert(text, inert(text))


def test_inert_cuts_before_escaping_and_puts_lines_on_one():
    assert inert("a*b*c*d", max_len=4) == "a\\*b…"
    assert inert("one\ntwo\r\n[3]") == "one two \\[3\\]"


@pytest.mark.usefixtures("one_thread")
def test_class_names_of_your_data_show_as_text_on_every_page(tmp_path, monkeypatch):
    at = own_data_app(npz_data(tmp_path / "_own_.npz", [name for name, _ in HOSTILE_CLASSES]))  # a Markdown file name
    for path, title in [(nav.EXPLORE.script, "Explore"), (nav.MISLABELS.script, "Mislabels"),
                        (nav.COMPARE.script, "Compare"), (nav.BACKDOOR.script, "Backdoor"),
                        (nav.EVALUATE.script, "Evaluate")]:
        at.switch_page(path).run()
        wait_for_jobs(at)
        if path == nav.MISLABELS.script:
            at.number_input(key=session.MISLABEL_SHOWN).set_value(200).run()  # a card per training point: every class
        assert at.title[0].value == f"{title} · {inert('custom:_own_.npz')} · seed 0"
        shown = markdown_shown(at.main)
        for raw in ("[click me](http", ":x:", "**bold**", "<b>x</b>", "$x$"):
            assert not [s for s in shown if raw in s], (path, raw)
        if path in (nav.EXPLORE.script, nav.MISLABELS.script):
            everything = "\n".join(shown)
            for name, _ in HOSTILE_CLASSES:
                assert inert(name) in everything, (path, name)
        if path == nav.EXPLORE.script:  # the class probabilities' chart: plotly reads HTML in its labels
            bars = next(json.loads(c.proto.spec) for c in at.main.get("plotly_chart") if '"orientation"' in c.proto.spec)
            assert set(bars["data"][0]["y"]) <= {plot_text(name) for name, _ in HOSTILE_CLASSES}
            assert "<b>x</b>" not in bars["data"][0]["y"] and plot_text("<b>x</b>") in bars["data"][0]["y"]

    # an error that echoes an exception (here a query's, naming a hostile class) shows it as text too
    message = f"no scores for class {HOSTILE_CLASSES[0][0]} :x:"

    def failing(*args, **kwargs):
        raise AttrexError(message)

    monkeypatch.setattr(state, "top_k", failing)
    at.switch_page(nav.EXPLORE.script).run()
    assert not at.exception and [e.value for e in at.main.error] == [inert(message)]
