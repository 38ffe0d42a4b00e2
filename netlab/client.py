"""One request, for checking a server by hand (the load generator is for measuring)."""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict
    body: bytes
    seconds: float       # wall time from connect to the last byte of the body


def fetch(url: str, path: str = None, timeout: float = 5.0) -> Reply:
    """GET ``url`` (or ``path`` on the server at ``url``) on a fresh connection."""
    parts = urlsplit(url)
    target = path or parts.path or "/"
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", target, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body,
                     time.perf_counter() - t0)
    finally:
        conn.close()
