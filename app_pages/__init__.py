"""The pages of the Streamlit app (``app.py`` is the thin entry point). Streamlit only: the
work is done by ``labeling`` and ``datasets``."""

from __future__ import annotations

from app_pages.pages.label import render_label_page

__all__ = ["render_label_page"]
