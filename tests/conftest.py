"""Shared helpers: a tiny raw HTTP client, and a leak check that runs after every test."""

from __future__ import annotations

import os
import shutil
import socket
import time

import psutil
import pytest

import netlab


def open_fds() -> int:
    return psutil.Process().num_fds()


@pytest.fixture(autouse=True)
def no_leaks():
    """Every test must leave no child process and no extra fd behind in the test process."""
    before = open_fds()
    yield
    deadline = time.monotonic() + 5
    while True:
        kids = [p for p in psutil.Process().children(recursive=True)
                if p.status() != psutil.STATUS_ZOMBIE]
        fds = open_fds()
        if (not kids and fds <= before) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not kids, f"child processes left behind: {kids}"
    assert fds <= before, f"{fds - before} fds leaked by the test process"


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def read_response(f) -> tuple:
    """Read one response from a socket file: (status, headers, body). Raises EOFError at EOF."""
    line = f.readline()
    if not line:
        raise EOFError("connection closed before a response")
    status = int(line.split()[1])
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers.get("content-length", 0)))
    return status, headers, body


def get(port: int, path: str = "/", timeout: float = 5.0, raw: bytes = None) -> tuple:
    """One request on a fresh connection (Connection: close unless ``raw`` is given)."""
    with connect(port, timeout) as s:
        s.sendall(raw or f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        with s.makefile("rb") as f:
            return read_response(f)


def parse_response(raw: bytes) -> tuple:
    """One response's bytes -> (status, headers with lower-case names, body)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no blank line ending the response head: {raw[:200]!r}"
    lines = head.decode("ascii").split("\r\n")
    version, status, _reason = lines[0].split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        assert colon, f"bad response header line {line!r}"
        headers[name.strip().lower()] = value.strip()
    return int(status), headers, body


def port_listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def zombies_of(pid: int) -> list:
    try:
        return [c.pid for c in psutil.Process(pid).children()
                if c.status() == psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


LINUX = os.uname().sysname == "Linux" if hasattr(os, "uname") else False


# what a test needs that a machine may lack: skipped with the sentence that says what to do
needs_strace = pytest.mark.skipif(shutil.which("strace") is None,
                                  reason="strace is not installed: apt-get install strace")
needs_uring = pytest.mark.skipif(not netlab.model("uring").available,
                                 reason=netlab.model("uring").reason or "available")
