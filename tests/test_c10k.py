"""c10k: idle connections held by helper processes; what they cost, and who keeps serving."""

import json
import math
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import psutil  # noqa: E402
import pytest  # noqa: E402

import netlab  # noqa: E402
from netlab import NetlabError  # noqa: E402
from netlab.experiments import c10k  # noqa: E402
from netlab.monitor import settle_sockets  # noqa: E402


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setenv("NETLAB_QUICK", "1")


@pytest.fixture(scope="module", autouse=True)
def fonts_loaded():
    """matplotlib opens (and keeps) its font files on the first drawing: not a test's leak."""
    import pandas as pd
    rows = [dict(model="epoll", K=k, held=k, ok=True, p99_ms=1.0, uss_kb_per_conn=1.0,
                 rss_kb_per_conn=1.0, kernel_kb_per_conn=8.0) for k in (0, 10, 100)]
    fig = c10k.plot(pd.DataFrame(rows))
    fig.canvas.draw()
    plt.close(fig)


def holders_running() -> list:
    """Holder processes started by this test process (other sessions may run their own)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if "netlab.experiments.c10k" in cmd and "--hold" in cmd and p.status() != "zombie":
            found.append(p.pid)
    return found


def test_epoll_holds_a_thousand_idle_connections_and_keeps_serving():
    df = c10k.run("epoll", held=(0, 1000))
    assert list(df.columns) == c10k.COLUMNS and list(df["K"]) == [0, 1000]
    r = df.iloc[1]
    assert r["ok"] and r["reason"] == ""
    assert r["held"] == 1000 and r["accepted"] == 1000 and r["closed"] == 0 and r["failed"] == 0
    assert r["fds"] >= 1000 and r["threads"] <= 3 and r["procs"] == 1
    assert r["rss_kb_per_conn"] > 0 and r["kernel_kb_per_conn"] > 0
    assert math.isfinite(r["p99_ms"]) and r["errors"] == 0
    assert holders_running() == []
    fig = c10k.plot(df)
    assert fig.axes[0].get_xscale() == "log" and "idle connections" in fig._suptitle.get_text()
    plt.close(fig)


def test_select_refuses_past_1024_and_larger_k_is_not_tried():
    df = c10k.run("select", held=(1100, 1500))
    first, second = df.iloc[0], df.iloc[1]
    assert not first["ok"] and first["held"] < 1100 and first["closed"] > 0
    assert "1024" in first["reason"]
    assert not second["ok"] and second["reason"].startswith("not tried")
    assert holders_running() == []


def test_iterative_stalls_at_the_first_idle_client():
    df = c10k.run("iterative", held=(0, 50), duration=0.5)
    base, held = df.iloc[0], df.iloc[1]
    assert base["ok"] and base["p99_ms"] > 0
    assert held["accepted"] == 1 and not held["ok"]
    assert "accepted 1 of the 50" in held["reason"] and "answered" in held["reason"]


def test_beyond_one_process_is_a_reason_not_a_crash():
    df = c10k.run("epoll", held=(50_000,))
    assert not df.iloc[0]["ok"] and "reuseport" in df.iloc[0]["reason"]
    with pytest.raises(NetlabError, match="unknown model"):
        c10k.run("nope")
    with pytest.raises(NetlabError, match="held counts"):
        c10k.run("epoll", held=(-1,))


def test_holders_release_their_connections_on_close():
    with netlab.serve("epoll") as srv:
        with c10k.Holders(srv.host, srv.port) as h:
            got = h.grow(200)
            assert got["held"] == 200 and got["attempted"] == 200
            assert h.report()["held"] == 200
            pids = [p.pid for p in h.procs]
            # connect() returns once the kernel queued the connection; the server accepts later
            held = settle_sockets(srv.pid, until=time.monotonic() + 30, want=200, stall=30)
            assert held >= 200
        with c10k.Holders(srv.host, srv.port, pid=srv.pid) as h:
            h.grow(300)                                  # with the pid: returns once accepted
            assert c10k.server_usage(srv.pid, full=False)["sockets"] >= 300
            pids += [p.pid for p in h.procs]
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                       for p in pids)


def test_cli_json(capsys):
    assert c10k.main(["--models", "epoll", "--held", "0,20", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["K"] for r in rows] == [0, 20] and rows[1]["held"] == 20


def test_a_thread_per_connection_pays_a_kernel_stack():
    """Slab leaves out a thread's kernel stack (16 KiB on x86-64): c10k measures it apart
    (meminfo's KernelStack), and notebook 11's threaded extrapolations add it."""
    if not math.isfinite(c10k.kernel_usage()["kstack"]):
        pytest.skip("no KernelStack in /proc/meminfo here")
    df = c10k.run("threaded", held=(0, 300), duration=0.3)
    r = df.iloc[1]
    assert r["ok"] and r["held"] == 300 and r["threads"] >= 300, r["reason"]
    # a machine-wide counter: other processes move it, so a wide margin under 16 KiB
    assert r["kernel_stack_kb_per_conn"] >= 4, r["kernel_stack_kb_per_conn"]
