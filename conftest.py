"""Session-wide check: when every test and notebook has run, no netlab server may be left.

Servers started during this session (by tests or by notebook kernels) inherit a token in their
environment, so a second pytest run on the same machine is never mistaken for a leak.
"""

import os
import uuid

import psutil

TOKEN = "NETLAB_TEST_SESSION"


def pytest_sessionstart(session):
    os.environ[TOKEN] = uuid.uuid4().hex


def _servers_left(token):
    left = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if ("netlab._child" in cmd or "netlab serve" in cmd) and \
                    p.info["status"] != psutil.STATUS_ZOMBIE and p.environ().get(TOKEN) == token:
                left.append(p)
        except psutil.Error:
            continue
    return left


def pytest_sessionfinish(session, exitstatus):
    left = _servers_left(os.environ.get(TOKEN))
    if left:
        print(f"\nnetlab servers left running after the session: {[p.pid for p in left]}")
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        session.exitstatus = 1
