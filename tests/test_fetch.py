"""Fetching a query photo by URL cannot be turned against private networks,
not even by a DNS answer that changes between the check and the connection."""

from __future__ import annotations

import http.server
import io
import socket
import threading

import pytest
from PIL import Image

from lookalike.images.fetch import FetchError, FetchPolicy, _pinned_request, fetch_image_bytes

PUBLIC_ADDRESS = "93.184.216.34"  # public, and unreachable from the test machine


@pytest.fixture()
def local_image_server():
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buffer, "PNG")
    body = buffer.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], body
    server.shutdown()


def test_dns_rebinding_cannot_reach_a_private_address(monkeypatch, local_image_server):
    port, body = local_image_server
    real = socket.getaddrinfo
    answers = []

    def rebinding_dns(host, *args, **kwargs):
        if host != "rebind.test":
            return real(host, *args, **kwargs)
        # First answer public (passes the check), every later one loopback (the attack).
        address = PUBLIC_ADDRESS if not answers else "127.0.0.1"
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, args[0] if args else port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
    url = f"http://rebind.test:{port}/photo.png"
    with pytest.raises(FetchError):  # it connects to the checked public address, which is unreachable here
        fetch_image_bytes(url, FetchPolicy(timeout_s=2.0))
    assert answers == [PUBLIC_ADDRESS]  # resolved once: the loopback answer was never asked for, let alone used

    # Allowed by configuration, the same server is reached by name.
    assert fetch_image_bytes(f"http://127.0.0.1:{port}/photo.png", FetchPolicy(allow_private=True)) == body


def test_pinned_request_keeps_the_name_for_host_and_tls():
    url, headers, extensions = _pinned_request("https://user@images.example:8443/a/b.jpg?x=1", "93.184.216.34")
    assert url == "https://93.184.216.34:8443/a/b.jpg?x=1"
    assert headers["Host"] == "images.example:8443" and extensions == {"sni_hostname": "images.example"}
    url, headers, _ = _pinned_request("http://images.example/a.jpg", "2606:2800:220:1::1")
    assert url == "http://[2606:2800:220:1::1]/a.jpg" and headers["Host"] == "images.example"


@pytest.mark.parametrize("url", ["http://127.0.0.1/x.jpg", "http://10.0.0.8/x.jpg", "http://169.254.169.254/latest/meta-data",
                                 "http://[::1]/x.jpg", "file:///etc/passwd", "ftp://example.com/x.jpg", "gopher://x/"])
def test_private_addresses_and_other_schemes_are_refused(url):
    with pytest.raises(FetchError):
        fetch_image_bytes(url)
