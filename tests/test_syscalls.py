"""syscalls: each model's system calls per request, counted by strace, an idle twin subtracted."""

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import netlab  # noqa: E402
from netlab import NetlabError  # noqa: E402
from netlab.experiments import syscalls  # noqa: E402

from conftest import needs_strace


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setenv("NETLAB_QUICK", "1")


@pytest.fixture(scope="module", autouse=True)
def fonts_loaded():
    """matplotlib opens (and keeps) its font files on the first drawing: not a test's leak."""
    fig, _ = plt.subplots()
    fig.canvas.draw()
    plt.close(fig)


def per(df, *names):
    """Calls per request summed over names (one operation has several names across libcs)."""
    return float(df[df["syscall"].isin(names)]["calls_per_request"].sum())


def ok_per(df, *names):
    """Successful calls per request (an event loop's accept burst ends with one EAGAIN)."""
    d = df[df["syscall"].isin(names)]
    return float((d["calls"] - d["errors"]).sum()) / df.attrs["requests"]


@needs_strace
def test_epoll_waits_in_epoll_and_pays_one_accept_recv_send_per_request():
    df = syscalls.profile("epoll", requests=200)
    assert list(df.columns) == syscalls.COLUMNS and df.attrs["requests"] == 200
    assert per(df, "epoll_wait", "epoll_pwait") > 0.05
    assert 0.8 <= ok_per(df, "accept4", "accept") <= 1.3
    assert 0.8 <= per(df, "recvfrom", "recvmsg", "read") <= 1.5
    assert 0.8 <= per(df, "sendto", "sendmsg", "write") <= 1.5
    # the twin took away start-up: no module imports left in the per-request table
    assert per(df, "openat", "newfstatat", "stat") < 0.1


@needs_strace
def test_uring_makes_no_accept_recv_send_or_close_call_only_io_uring_enter():
    """The operations are SQEs: strace sees the io_uring_enter that carries them, not them
    (about 1 per request, a connection each, on 4 clients; epoll makes about 9)."""
    if not netlab.model("uring").available:
        pytest.skip(netlab.model("uring").reason)
    df = syscalls.profile("uring", requests=200)
    assert 0.2 <= per(df, "io_uring_enter") <= 3
    assert per(df, "accept4", "accept", "recvfrom", "recvmsg", "read", "sendto", "sendmsg",
               "write", "close", "epoll_wait", "poll", "select") < 0.05, df


@needs_strace
def test_forking_pays_a_fork_and_a_wait_per_request():
    df = syscalls.profile("forking", requests=150)
    assert 0.8 <= per(df, "clone", "fork", "vfork") <= 1.3
    assert per(df, "wait4", "waitid") >= 0.8


@needs_strace
def test_threaded_starts_a_thread_per_request_and_compare_is_one_wide_table():
    wide = syscalls.compare(("threaded", "select"), requests=150)
    assert list(wide.columns) == ["threaded", "select"]
    threads = wide.reindex(["clone3", "clone"], fill_value=0.0)
    assert 0.8 <= threads["threaded"].sum() <= 1.3 and threads["select"].sum() == 0
    assert wide.reindex(["select", "pselect6"], fill_value=0.0)["select"].sum() > 0.05


@needs_strace
@pytest.mark.parametrize("peer", syscalls.PEERS)
def test_other_runtimes_sit_on_epoll_too(peer):
    from netlab import peers
    reason = dict((n, r) for n, _, r in peers.available_peers())[peer]
    if reason:
        pytest.skip(reason)
    df = syscalls.profile(peer, requests=150)
    assert per(df, "epoll_wait", "epoll_pwait", "epoll_pwait2") > 0.05
    assert 0.8 <= ok_per(df, "accept4", "accept") <= 1.3


def test_strace_missing_is_one_sentence(monkeypatch):
    monkeypatch.setattr(syscalls.shutil, "which", lambda name: None)
    with pytest.raises(NetlabError, match=r"^strace is not installed: apt-get install strace$"):
        syscalls.profile("epoll")


def test_unknown_model_and_bad_wrap_are_one_sentence():
    with pytest.raises(NetlabError, match="unknown model"):
        syscalls.profile("nope")
    with pytest.raises(netlab.ServerError, match="list of strings"):
        netlab.Server("epoll", wrap="strace -f")
    with pytest.raises(netlab.ServerError, match="not installed"):
        netlab.Server("epoll", wrap=["no-such-tracer-here"])


def test_parse_reads_the_table_with_and_without_errors():
    text = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 19.42    0.007809           8       956         1 epoll_wait
 14.10    0.005668           5       985       485 accept4
 12.90    0.005186           7       670           close
------ ----------- ----------- --------- --------- ----------------
100.00    0.040201           5      7730       698 total
"""
    assert syscalls.parse(text) == {"epoll_wait": (956, 1, 0.007809),
                                    "accept4": (985, 485, 0.005668), "close": (670, 0, 0.005186)}


def test_plot_is_titled_with_model_and_load():
    import pandas as pd
    df = pd.DataFrame([("clone", 100, 1.0, 0, 0.0, 0.01, 100.0),
                       ("wait4", 200, 2.0, 100, 1.0, 0.01, 50.0)], columns=syscalls.COLUMNS)
    df.attrs.update(model="forking", requests=100, concurrency=4, mode="a connection per request")
    fig = syscalls.plot(df)
    title = fig.axes[0].get_title()
    assert "forking" in title and "100 requests" in title and "4 clients" in title
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["clone", "wait4"]
    plt.close(fig)


@needs_strace
def test_cli_json(capsys):
    assert syscalls.main(["epoll", "-n", "100", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["syscall"] in ("epoll_wait", "epoll_pwait") for r in rows)
    assert syscalls.main(["nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
