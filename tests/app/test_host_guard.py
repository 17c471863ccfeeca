"""The served app checks the Host header (DNS rebinding) and does not serve /_stcore/metrics.

One ``phenoscout app`` server on a free port for the module; raw HTTP requests and WebSocket
upgrades with a good and a foreign ``Host`` (and an ``Origin`` that matches the foreign host,
as a rebinding page would send).
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

pytest.importorskip("streamlit")

from app_pages.server.host_guard import allowed_hosts  # noqa: E402
from tests.app.browser import running_app  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_project):
    project = Path(shutil.copytree(small_project, tmp_path_factory.mktemp("host") / "proj"))
    with running_app(project, env={"PHENOSCOUT_TRAINER": "off"}) as url:
        yield int(url.rsplit(":", 1)[1])


def _request(port: int, path: str, host: str, upgrade: bool = False) -> int:
    """The status code of a raw HTTP/1.1 request (a WebSocket upgrade with ``upgrade``)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    if upgrade:
        lines[2:] = ["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13",
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", f"Origin: http://{host}"]  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status = sock.recv(256).split(b"\r\n", 1)[0].decode()
    return int(status.split()[1])


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"])
def test_good_host_is_served_http_and_websocket(server, name):
    host = f"{name}:{server}"
    assert _request(server, "/", host) == 200
    assert _request(server, "/_stcore/health", host) == 200
    assert _request(server, "/_stcore/stream", host, upgrade=True) == 101


@pytest.mark.parametrize("name", ["evil.example", "127.0.0.1.nip.io", "127.0.0.1:1", ""])
def test_foreign_host_is_refused_http_and_websocket(server, name):
    host = f"{name}:{server}" if name and ":" not in name else name
    for path in ("/", "/_stcore/health", "/_stcore/host-config", "/media/x"):
        assert _request(server, path, host) == 403, path
    assert _request(server, "/_stcore/stream", host, upgrade=True) == 403


def test_metrics_are_not_served(server):
    assert _request(server, "/_stcore/metrics", f"127.0.0.1:{server}") == 404
    assert _request(server, "/_stcore/metrics/", f"localhost:{server}") == 404


def test_allowed_hosts_follow_the_host_given():
    assert allowed_hosts("127.0.0.1", 8600) == {"127.0.0.1:8600", "localhost:8600", "[::1]:8600"}
    given = allowed_hosts("10.1.2.3", 8600)
    assert "10.1.2.3:8600" in given and "10.1.2.3" not in given and "evil.example:8600" not in given
    assert "127.0.0.1" in allowed_hosts("127.0.0.1", 80)  # port 80: the port may be left out
    wildcard = allowed_hosts("0.0.0.0", 8600)
    assert f"{socket.gethostname().lower()}:8600" in wildcard and "0.0.0.0:8600" not in wildcard
