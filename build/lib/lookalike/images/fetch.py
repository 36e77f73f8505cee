"""Fetch a query photo from a URL without becoming a proxy into private networks.

Only http(s); every hop of a redirect chain is resolved and refused if it
points at a loopback, private, link-local or otherwise non-public address
(unless the operator allows them); size and time are bounded while reading.
The connection goes to the address that was checked (the host name is kept
for the Host header and TLS), so a DNS answer that changes between the check
and the connection (DNS rebinding) cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from lookalike.errors import ErrorKind, LookalikeError


class FetchError(LookalikeError, ValueError):
    """The URL cannot be used; the message says why in one line."""


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0
    max_redirects: int = 3
    allow_private: bool = False


def _checked_address(url: str, policy: FetchPolicy) -> str | None:
    """The public address to connect to, or None when private addresses are allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError("only http and https URLs are allowed")
    if not parts.hostname:
        raise FetchError("the URL has no host")
    if policy.allow_private:
        return None
    try:
        addresses = [info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)]
    except (socket.gaierror, UnicodeError):
        raise FetchError(f"cannot resolve host {parts.hostname!r}") from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise FetchError(f"URLs pointing at {ip} (a private, loopback or link-local address) are not allowed")
    return addresses[0]


def _pinned_request(url: str, address: str | None) -> tuple[str, dict, dict]:
    """(URL with the checked address as host, headers, httpx extensions)."""
    headers = {"User-Agent": "lookalike"}
    if address is None:
        return url, headers, {}
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    headers["Host"] = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc).geturl(), headers, {"sni_hostname": parts.hostname}


def fetch_image_bytes(url: str, policy: FetchPolicy = FetchPolicy()) -> bytes:
    deadline = time.monotonic() + policy.timeout_s
    with httpx.Client(follow_redirects=False, timeout=policy.timeout_s, trust_env=False) as client:
        for _ in range(policy.max_redirects + 1):
            target, headers, extensions = _pinned_request(url, _checked_address(url, policy))
            try:
                with client.stream("GET", target, headers=headers, extensions=extensions) as response:
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise FetchError("redirect without a location")
                        url = urljoin(url, location)
                        continue
                    if response.status_code != 200:
                        raise FetchError(f"the URL answered HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                        raise FetchError(f"the image is over the {policy.max_bytes} byte limit", ErrorKind.TOO_LARGE)
                    chunks, size = [], 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > policy.max_bytes:
                            raise FetchError(f"the image is over the {policy.max_bytes} byte limit", ErrorKind.TOO_LARGE)
                        if time.monotonic() > deadline:
                            raise FetchError("fetching the URL took too long")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.TimeoutException:
                raise FetchError("fetching the URL took too long") from None
            except httpx.HTTPError as error:
                raise FetchError(f"cannot fetch the URL: {type(error).__name__}") from None
    raise FetchError(f"more than {policy.max_redirects} redirects")
