"""python -m netlab: the listening line, clean stops, and one sentence for every mistake."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from netlab.lifecycle import _proc_group
from conftest import get, port_listening

PY = [sys.executable, "-m", "netlab"]


def run(*args, timeout=30):
    return subprocess.run(PY + list(args), capture_output=True, text=True, timeout=timeout)


def test_models_json_lists_all_eleven():
    out = run("models", "--json")
    assert out.returncode == 0
    rows = json.loads(out.stdout)
    assert len(rows) == 11
    assert {"name", "available", "reason", "summary"} <= set(rows[0])
    if sys.platform.startswith("linux"):
        assert all(r["available"] for r in rows)


def test_models_table():
    out = run("models")
    assert out.returncode == 0 and "epoll" in out.stdout and "reuseport" in out.stdout


@pytest.fixture
def cli_server(request):
    """Start `python -m netlab serve ...` in its own group; yield (proc, port)."""
    procs = []

    def start(*args):
        p = subprocess.Popen(PY + ["serve", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(p)
        line = p.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line + p.stderr.read()
        return p, int(line.strip().rstrip("/").rsplit(":", 1)[1])

    yield start
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        p.stdout.close()
        p.stderr.close()


def _stopped_cleanly(p, port):
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:       # show where it is stuck (faulthandler on SIGUSR1)
        os.kill(p.pid, signal.SIGUSR1)
        time.sleep(0.5)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        pytest.fail(f"the server did not stop within 10 s; its stacks:\n{p.stderr.read()}")
    assert p.returncode == 0
    deadline = time.monotonic() + 5
    while _proc_group(p.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _proc_group(p.pid) and not port_listening(port)
    assert "Traceback" not in p.stderr.read()


@pytest.mark.parametrize("model,extra", [("epoll", []), ("forking", []),
                                         ("preforked", ["--workers", "3"]),
                                         ("reuseport", ["--workers", "2", "--edge"]),
                                         ("prethreaded", ["--no-lock"])])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_the_listening_line_and_stops_cleanly(cli_server, model, extra, sig):
    p, port = cli_server(model, "--port", "0", "--backend-ms", "1", *extra)
    assert get(port)[0] == 200
    os.kill(p.pid, sig)           # the leader only: it must take its workers down itself
    _stopped_cleanly(p, port)


@pytest.mark.parametrize("args,message", [
    (["serve", "nope"], "unknown model 'nope'"),
    (["serve", "iterative", "--workers", "2"], "no workers option"),
    (["serve", "epoll", "--backend-ms", "-1"], "zero or positive"),
    (["serve", "epoll", "-o", "turbo=1"], "no option 'turbo'"),
    (["serve", "epoll", "-o", "noequals"], "KEY=VALUE"),
    (["serve", "epoll", "--port", "99999"], "port must be"),
    (["serve", "epoll", "--host", "no.such.host.invalid"], "cannot listen"),
    (["serve", "epoll", "--port", "abc"], "invalid int value"),
    (["serve"], "required: model"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_give_one_sentence_and_nonzero_exit(args, message):
    out = run(*args)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_port_in_use_gives_one_sentence(cli_server):
    p, port = cli_server("epoll")
    out = run("serve", "poll", "--port", str(port))
    assert out.returncode == 2
    assert "already in use" in out.stderr and "Traceback" not in out.stderr
    os.kill(p.pid, signal.SIGTERM)
    _stopped_cleanly(p, port)


def test_serve_exits_nonzero_when_a_worker_dies(cli_server):
    import psutil
    p, port = cli_server("preforked", "--workers", "2")
    deadline = time.monotonic() + 5
    while len(psutil.Process(p.pid).children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    psutil.Process(p.pid).children()[0].kill()
    assert p.wait(timeout=10) != 0
    assert "killed by signal 9" in p.stderr.read()


def test_serve_stops_cleanly_on_sighup(cli_server):
    p, port = cli_server("epoll")
    os.kill(p.pid, signal.SIGHUP)             # the terminal went away
    _stopped_cleanly(p, port)
