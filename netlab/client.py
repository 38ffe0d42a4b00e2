"""One request, for checking a server by hand (not a load generator: it measures nothing at scale)."""

from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from .servers import NetlabError


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict
    body: bytes
    seconds: float       # wall time from connect to the last byte of the body


def post(url: str, path: str = None, body: bytes = b"", timeout: float = 5.0) -> Reply:
    """POST ``body`` to ``url`` (or to ``path`` on the server at ``url``), like ``fetch``."""
    if not isinstance(body, (bytes, bytearray)):
        raise NetlabError(f"the body is bytes, not {type(body).__name__}")
    return fetch(url, path, timeout, method="POST", body=bytes(body))


def fetch(url: str, path: str = None, timeout: float = 5.0, *, method: str = "GET",
          body: bytes = None) -> Reply:
    """GET ``url`` (or ``path`` on the server at ``url``) on a fresh connection."""
    try:
        parts = urlsplit(url if isinstance(url, str) else "")
        host, port = parts.hostname, parts.port or 80
    except ValueError:
        parts = host = None
    if not parts or parts.scheme != "http" or not host:
        raise NetlabError(f"fetch needs a URL like http://127.0.0.1:8080/, not {url!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise NetlabError(f"timeout must be a positive number of seconds, not {timeout!r}")
    target = path or parts.path or "/"
    if not target.isascii() or " " in target:
        raise NetlabError(f"the path must be ASCII without spaces (percent-encode the rest), "
                          f"not {target!r}")
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body,
                     time.perf_counter() - t0)
    except ConnectionRefusedError:
        raise NetlabError(f"nothing is listening at {url}: is the server stopped?") from None
    except socket.timeout:
        raise NetlabError(f"no answer from {url} within {timeout} s: the server is busy "
                          "or stalled (an iterative server serves one client at a time)") from None
    except (ConnectionError, http.client.HTTPException) as e:
        raise NetlabError(f"the server at {url} broke the connection ({e!r}): check srv.log()") \
            from None
    except (OSError, UnicodeError) as e:
        raise NetlabError(f"cannot reach {url}: {getattr(e, 'strerror', None) or e}") from None
    finally:
        conn.close()
