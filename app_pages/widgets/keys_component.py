"""The Label page's keyboard as a Streamlit v2 component (``label_client.js``, inline: nothing is
fetched). Registered once, at import (a page script runs again on every rerun; its imports do
not)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

_JS = (Path(__file__).parent / "label_client.js").read_text(encoding="utf-8")
KEYS_COMPONENT = st.components.v2.component("phenoscout_label_keys", js=_JS)
