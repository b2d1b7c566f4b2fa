"""Turning tensors into things a browser shows: upscaled images, badges, token strips."""

from __future__ import annotations

import html
import re

from core.features.render import image_rgb as to_image  # noqa: F401  (re-exported for the pages)

GROUND_TRUTH_COLOURS = {"flipped": "orange", "poisoned": "red", "triggered": "red", "marked": "violet",
                        "flagged": "blue"}  # flagged: by a method on the Mislabels or Backdoor page, not ground truth


def badge(text: str, colour: str = "gray") -> str:
    """Streamlit markdown for a small coloured badge showing ``text`` as plain text."""
    return f":{colour}-badge[{inert(text)}]"


def plot_text(text: object) -> str:
    """``text`` (from data) for a plotly label such as an axis tick: plotly reads a few HTML tags in labels
    (links, bold, line breaks) and entities; escaped, the label shows exactly that text."""
    return html.escape(str(text), quote=False)


def token_strip(tokens: list[str], known: set[str], highlight: set[str] = frozenset()) -> str:
    """HTML of a text's tokens: out-of-vocabulary words greyed, highlighted words marked."""
    spans = []
    for t in tokens:
        esc = html.escape(t)
        if t in highlight:
            spans.append(f"<mark style='background:#fde68a;padding:0 2px;border-radius:3px'>{esc}</mark>")
        elif t not in known:
            spans.append(f"<span style='color:#94a3b8' title='not in the vocabulary'>{esc}</span>")
        else:
            spans.append(esc)
    return "<div style='line-height:1.8;font-size:1.02rem'>" + " ".join(spans) + "</div>"


def test_name(test_id: int | str) -> str:
    """How a page names the input being explained: ``test #12``, or a label such as ``your input``."""
    return f"test #{test_id}" if isinstance(test_id, int) else inert(test_id)


# Markdown that would turn data into something else: CommonMark's escapable punctuation. A backslash shows each
# as itself. The colon gets a zero-width space after it besides: Streamlit's Markdown reads ":name:" as an emoji
# and ":name[...]" as a directive on the text after escapes are resolved, so an escape alone does not stop them.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$&=^\"'%@/;?])")
ZERO_WIDTH_SPACE = "\u200b"


def inert(text: object, max_len: int | None = None) -> str:
    """``text`` (from data, a file name, a link or an error) as Markdown that shows exactly that text: no link,
    emphasis, heading, emoji, directive, math or HTML. Line breaks become spaces (one line); ``max_len`` cuts."""
    s = " ".join(str(text).splitlines())
    if max_len is not None and len(s) > max_len:
        s = s[: max_len - 1] + "…"
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", s).replace(":", ":" + ZERO_WIDTH_SPACE)
