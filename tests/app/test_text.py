"""User text shown as text (app_pages.widgets.text): what Markdown and HTML make of a hostile name."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("streamlit")

from app_pages.widgets.text import WORD_JOINER, code, css_colour, html_text, md  # noqa: E402

HOSTILE = [
    '<img src="http://127.0.0.1:9/x.png">',
    "![x](http://127.0.0.1:9/y.png)",
    "[click](http://evil.example)",
    "**bold** _it_ ~~s~~ `code` $x$ :red[red] :smile:",
    "www.evil.example a@evil.example <http://evil.example>",
    "- item",
    "1. first",
    "# heading",
    "&lt; &amp;",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_md_escapes_every_markup_character_and_keeps_the_text(name):
    out = md(name)
    for i, ch in enumerate(out):
        if ch in "[]<>*`$~&|":
            assert out[i - 1] == "\\", (name, out)  # each one escaped
    assert "http://" not in out and "www." not in out and ":smile" not in out  # no autolink, emoji
    assert not out[0].isalnum() or not out.startswith(("1.", "- ", "# "))
    unescaped = re.sub(r"\\(.)", r"\1", out).replace(WORD_JOINER, "")
    assert unescaped == name  # shown as typed


def test_md_leaves_paths_readable():
    path = "/tmp/pytest-of-root/test_x0/my_project/a-b.1"
    assert md(path) == path
    assert md("a\nb\tc") == "a b c"


def test_code_and_html_and_colours():
    assert code("a``b") == "``` a``b ```"
    assert html_text('<img src="x">') == "&lt;img src=&quot;x&quot;&gt;"
    assert css_colour("#12abEF") == "#12abEF"
    assert css_colour("red;} body{background:url(http://x)}") == "#888888"
