"""Session-wide checks: when every test and notebook has run, no netlab server may be left
running, and no netlab file or folder may be left in the temp folder.

Servers started during this session (by tests or by notebook kernels) inherit a token in their
environment, so a second pytest run on the same machine is never mistaken for a leak. For the
same reason the session gets a temp folder of its own (TMPDIR, inherited by servers, peers and
notebook kernels alike): whatever netlab leaves there is this session's leak.
"""

import os
import shutil
import tempfile
import uuid

import psutil

TOKEN = "NETLAB_TEST_SESSION"
PREFIX = "netlab-"
_session = {}       # the private temp folder and the TMPDIR it replaced


def pytest_sessionstart(session):
    os.environ[TOKEN] = uuid.uuid4().hex
    outer = tempfile.gettempdir()
    # pytest's own tmp_path folders stay in the real temp folder, where it rotates them
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", outer)
    private = tempfile.mkdtemp(prefix="netlab-test-session-", dir=outer)
    os.chmod(private, 0o711)        # as /tmp lets them: nginx's workers (nobody) reach www/
    _session.update(dir=private, before=os.environ.get("TMPDIR"))
    os.environ["TMPDIR"] = private
    tempfile.tempdir = None         # gettempdir() caches: make this process read TMPDIR again


def _servers_left(token):
    left = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if any(mark in cmd for mark in ("netlab.server_process", "netlab serve",
                                            "watchdog.py", "netlab.experiments", "redis-server")) and \
                    p.info["status"] != psutil.STATUS_ZOMBIE and p.environ().get(TOKEN) == token:
                left.append(p)
        except psutil.Error:
            continue
    return left


def _files_left(folder, timeout=10.0):
    """netlab's entries in ``folder``, after giving them ``timeout`` seconds to go: a server
    whose harness was killed removes its usage file once it has stopped (up to its watchdog's
    grace), a peer's watchdog removes the workdir once the peer is gone."""
    from netlab.monitor import wait_until

    def left():
        return sorted(n for n in os.listdir(folder) if n.startswith(PREFIX))

    wait_until(lambda: not left(), timeout=timeout, interval=0.1)
    return left()


def pytest_sessionfinish(session, exitstatus):
    from netlab.monitor import wait_until
    token = os.environ.get(TOKEN)
    # a watchdog whose harness a test killed may still be in its grace period
    wait_until(lambda: not _servers_left(token), timeout=10, interval=0.1)
    left = _servers_left(token)
    if left:
        print(f"\nnetlab servers left running after the session: {[p.pid for p in left]}")
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        session.exitstatus = 1
    private = _session.pop("dir", None)
    if private is None:
        return
    try:
        files = _files_left(private)
        if files:
            print(f"\nnetlab files left in the temp folder after the session: {files}")
            session.exitstatus = 1
    finally:                        # a second Ctrl-C during the wait must not leave the folder
        if _session["before"] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = _session["before"]
        tempfile.tempdir = None
        shutil.rmtree(private, ignore_errors=True)
