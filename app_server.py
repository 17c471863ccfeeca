"""The app as Streamlit serves it: ``app.py`` inside an ``st.App`` with one guard in front.

``phenoscout app`` runs ``streamlit run app_server.py``; Streamlit finds the ``app`` below and
serves it with uvicorn (the same server, options and pages as ``streamlit run app.py``). The
guard (:class:`HostGuard`, Streamlit's supported way to add middleware) refuses, with 403,
every HTTP request and WebSocket upgrade whose ``Host`` header is not ``127.0.0.1``,
``localhost``, ``[::1]`` or the ``--host`` given, with the server's port: a page of another
site that a DNS name pointed at 127.0.0.1 (DNS rebinding) cannot reach the app, its session
stream or its files. It also answers 404 to ``/_stcore/metrics`` (the server's statistics).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from app_pages.server.host_guard import HostGuard

app = st.App(str(Path(__file__).resolve().parent / "app.py"), middleware=[Middleware(HostGuard)])
