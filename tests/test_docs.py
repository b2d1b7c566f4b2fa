"""The documentation's links stay alive, and the README stays short.

Every Markdown link and image in README.md, CHANGELOG.md, docs/*.md and benchmarks/README.md
is parsed (outside code blocks and inline code): a relative target must be a file or folder
of the checkout, and an anchor (``page.md#section`` or ``#section``) must be the GitHub-style
slug of a heading of that page. Every page of docs/ is linked from README.md, and README.md
is at most 10,240 bytes (the details live in docs/).
"""

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_BYTES = 10_240


def pages() -> list[Path]:
    found = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    bench = ROOT / "benchmarks" / "README.md"
    return found + ([bench] if bench.exists() else [])


FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target): the target up to whitespace or the closing parenthesis
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def links(text: str) -> list[tuple[int, str]]:
    """Every link and image target of a Markdown text, with its line number."""
    found = []
    for number, line in prose_lines(text):
        line = INLINE_CODE.sub("", line)
        for match in LINK.finditer(line):
            found.append((number, match.group(1).strip("<>")))
        ref = REFERENCE.match(line)
        if ref:
            found.append((number, ref.group(1).strip("<>")))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link's text
    text = re.sub(r"<[^>]+>", "", text)                         # inline HTML
    text = text.replace("`", "").lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings, with GitHub's -1, -2 ... for repeated ones."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(text):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)) or target.startswith("//")


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    text = page.read_text(encoding="utf-8")
    problems = []
    for number, target in links(text):
        if is_external(target):
            continue
        path_part, _, anchor = target.partition("#")
        where = f"{page.relative_to(root)}:{number}: {target}"
        dest = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{where} (no such file)")
            continue
        if root not in dest.parents and dest != root:
            problems.append(f"{where} (outside the checkout)")
            continue
        if anchor:
            if dest.suffix != ".md" or dest.is_dir():
                problems.append(f"{where} (an anchor on a file that is not a Markdown page)")
            elif unquote(anchor) not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{where} (no heading with that anchor in {dest.relative_to(root)})")
    return problems


# -- the parser itself -----------------------------------------------------------------------


def test_slug_follows_github():
    assert slug("Cross-check against quanda (`make crosscheck`)") == "cross-check-against-quanda-make-crosscheck"
    assert slug("The operator's list") == "the-operators-list"
    assert slug("A precompute on Ray (`ray_precompute.py`)") == "a-precompute-on-ray-ray_precomputepy"
    assert slug("attrex — the attribution explorer") == "attrex--the-attribution-explorer"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n## A") == {"a", "a-1", "a-2"}


def test_links_are_found_outside_code_only():
    text = (
        "See [one](docs/a.md#x) and ![img](docs/b.png \"title\").\n"
        "`[not](code.md)` and [two](<c d.md>)\n"
        "```\n[not](fenced.md)\n```\n"
        "[ref]: docs/e.md\n"
    )
    assert [t for _, t in links(text)] == ["docs/a.md#x", "docs/b.png", "c d.md", "docs/e.md"]


def test_a_broken_link_is_reported(tmp_path):
    tmp_path = tmp_path.resolve()
    page = tmp_path / "p.md"
    (tmp_path / "q.md").write_text("# Here\n")
    page.write_text("[a](q.md#here) [b](q.md#gone) [c](missing.md) [d](#top) [e](https://example.org/x)\n# Top\n")
    found = broken_links(page, tmp_path.resolve())
    assert len(found) == 2 and "q.md#gone" in found[0] and "missing.md" in found[1]


# -- the documentation ------------------------------------------------------------------------


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page):
    assert page.exists(), f"{page.relative_to(ROOT)} is missing"
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme():
    linked = set()
    for _, target in links(README.read_text(encoding="utf-8")):
        if not is_external(target):
            linked.add((ROOT / unquote(target.partition("#")[0])).resolve())
    missing = [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


def test_readme_is_short():
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, (
        f"README.md is {size:,} bytes, more than {README_MAX_BYTES:,}: move details into docs/ and link them"
    )
