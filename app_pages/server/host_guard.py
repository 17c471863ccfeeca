"""ASGI middleware in front of the app (``app_server.py``): the ``Host`` header is checked on
every HTTP request and WebSocket upgrade, and ``/_stcore/metrics`` is not served.

Allowed hosts are ``127.0.0.1``, ``localhost``, ``[::1]`` and the server's ``--host``
(Streamlit's ``server.address``; for ``0.0.0.0`` this machine's name and addresses), each with
the server's port (``server.port``; without a port too when it is 80). Anything else (a
rebinding DNS name) gets 403 before Streamlit sees the request.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")
CLOSED_PATHS = ("/_stcore/metrics",)  # the server's statistics: not served


@functools.lru_cache(maxsize=8)
def allowed_hosts(address: str | None, port: int) -> frozenset[str]:
    """The ``Host`` header values accepted for a server on ``address``:``port``: loopback
    names, ``address`` itself, and for a wildcard bind (``0.0.0.0``, ``::``) this machine's
    name and addresses (a rebinding name still differs from all of them)."""
    names = {*LOOPBACK}
    if address in WILDCARD:
        names |= _machine_names()
    elif address:
        names.add(address)
    names = {n.lower() for n in names}
    bracketed = {f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names}
    hosts = {f"{name}:{port}" for name in bracketed}
    if port == 80:
        hosts |= bracketed
    return frozenset(hosts)


def _machine_names() -> set[str]:
    """This machine's host name, full name and addresses."""
    names = {socket.gethostname(), socket.getfqdn()}
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        infos = []
    names |= {str(info[4][0]) for info in infos}
    return {n for n in names if n}


def _server() -> tuple[str | None, int]:
    from streamlit import config

    return config.get_option("server.address"), int(config.get_option("server.port"))


class HostGuard:
    """Refuse (403) requests with a foreign ``Host``; 404 for :data:`CLOSED_PATHS`."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1").strip().lower()
        if host not in allowed_hosts(*_server()):
            await _refuse(scope, send, 403, b"Forbidden: unknown Host header")
            return
        path = str(scope.get("path") or "")
        if any(path.rstrip("/").endswith(p) for p in CLOSED_PATHS):
            await _refuse(scope, send, 404, b"Not found")
            return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send, status: int, body: bytes) -> None:
    if scope["type"] == "websocket":  # closing before accepting: the upgrade gets HTTP 403
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
