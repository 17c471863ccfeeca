"""User text shown as text. Names (channels, classes, annotators, metadata, files) typed by a
user or read from a project go through :func:`md` before any Markdown element (``st.markdown``,
``st.caption``, ``st.error``, widget labels, ``help=``) and through :func:`html_text` before any
HTML (``st.html``, ``unsafe_allow_html``): an image or link in a name is never rendered or
fetched, and the name shows as typed."""

from __future__ import annotations

import html
import re

# Markdown that could make an element (link, image, HTML, code, emphasis, LaTeX): escaped
# wherever it stands. "_" is escaped unless inside a word (where it starts nothing), and these at
# the start only (a list or heading); "." after leading digits (a numbered list).
_ALWAYS = frozenset("\\`*[]<>$~&|")
_AT_START = frozenset("-+#=")
# GFM turns URLs, www. names and e-mail addresses in plain text into links (after escapes are
# read), and Streamlit turns ":name:" into an emoji or icon: a word joiner (U+2060, invisible)
# around "://", after "www" and "@", and after a ":" followed by a non-blank stops each.
_AUTOLINK = re.compile(r"(?=://)|(?<=://)|(?i:(?<=www)(?=\.))|(?<=@)|(?<=:)(?=[^\s/])")
WORD_JOINER = "\u2060"
_HEX = re.compile(r"#[0-9a-fA-F]{6}")


def md(text: object) -> str:
    """``text`` for a Markdown element (``st.markdown``, ``st.caption``, ``st.error``, widget
    labels, ``help=``), shown as typed: no link, image, HTML, code or emphasis can start in it,
    URLs are not linked, and line breaks become spaces. Paths stay readable (``/``, ``.``,
    ``-`` and ``_`` inside words are left as they are)."""
    clean = "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in str(text))
    clean = _AUTOLINK.sub(WORD_JOINER, clean)
    out = []
    for i, ch in enumerate(clean):
        before = clean[i - 1] if i else ""
        after = clean[i + 1] if i + 1 < len(clean) else ""
        escape = (
            ch in _ALWAYS
            or (ch == "_" and not (before.isalnum() and after.isalnum()))
            or (i == 0 and ch in _AT_START)
            or (ch in ".)" and clean[:i].isdigit())
        )
        out.append("\\" + ch if escape else ch)
    return "".join(out)


def html_text(text: object) -> str:
    """``text`` for HTML, shown literally (``&``, ``<``, ``>`` and quotes escaped)."""
    return html.escape(str(text), quote=True)


def css_colour(value: object, default: str = "#888888") -> str:
    """``value`` when it is a ``#rrggbb`` colour, else ``default``: only such a colour goes
    into CSS or a style attribute."""
    return value if isinstance(value, str) and _HEX.fullmatch(value) else default


def code(text: object) -> str:
    """``text`` as a Markdown code span, shown literally (nothing in a code span is a link,
    image, HTML or emphasis): fenced with one backtick more than its longest run of them."""
    clean = "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in str(text))
    longest = max((len(run) for run in re.findall(r"`+", clean)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {clean} {fence}"  # one blank each side: CommonMark strips exactly those
