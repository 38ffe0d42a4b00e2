"""The accept-lock experiment: the prethreaded pool's lock waits counted, with and without it."""

from __future__ import annotations

import json
import os
import threading
import time

import matplotlib
import pytest

from netlab.experiments import acceptlock
from netlab.monitor import wait_until
from netlab.servers import NetlabError

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402   (imported here: its fds are not a test's leak)


@pytest.fixture(scope="module")
def df():
    """Quick sizes, with and without the lock (and matplotlib's font files opened once)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NETLAB_QUICK", "1")
        table = acceptlock.run(lock=(True, False))
    fig = acceptlock.plot(table)
    fig.canvas.draw()
    plt.close(fig)
    return table


def test_one_row_per_pool_size_and_lock_setting(df, monkeypatch):
    monkeypatch.setenv("NETLAB_QUICK", "1")
    sizes = acceptlock.sizes()["pool_sizes"]
    assert len(df) == 2 * len(sizes)
    for lock in (True, False):
        assert list(df[df["lock"] == lock]["pool"]) == list(sizes)


def test_every_connection_served(df):
    assert (df["served"] == df["connections"]).all()
    assert (df["errors"] == 0).all()
    assert (df["rps"] > 0).all()


def test_lock_waits_are_counted_with_a_pool_and_absent_without_the_lock(df):
    locked = df[df["lock"]]
    assert (locked[locked["pool"] >= 4]["lock_wait_us_per_conn"] > 0).all()
    assert (locked[locked["pool"] >= 4]["waited"] > 0).all()
    assert (locked[locked["pool"] == 1]["waited"] == 0).all()      # one thread: never waits
    unlocked = df[~df["lock"]]
    assert (unlocked["lock_wait_us_per_conn"] == 0).all() and (unlocked["waited"] == 0).all()


def test_waiting_grows_with_the_pool(df):
    locked = df[df["lock"]].sort_values("pool")
    waits = list(locked["lock_wait_us_per_conn"])
    assert waits[-1] > waits[0]


def test_a_pool_waiting_on_its_backend_is_limited_by_neither():
    # one thread sleeping 20 ms per connection: neither side computes, and each connection
    # puts the thread to sleep at least once (a voluntary context switch)
    row = acceptlock.measure(pool=1, lock=True, connections=30, concurrency=4, backend_ms=20)
    assert row["served"] == 30 and row["errors"] == 0
    assert row["limited_by"] == "neither", row["why"]
    assert row["ctx_vol_per_conn"] >= 1 and row["server_cpu_s"] > 0


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"),
                    reason="pinning needs two cores and sched_setaffinity")
def test_cpu_work_and_pinning_reach_the_server_and_are_recorded():
    row = acceptlock.measure(pool=4, lock=True, connections=100, concurrency=4, cpu_us=300,
                             pin=True)
    assert row["served"] == 100 and row["errors"] == 0
    assert row["pinned"] and row["cpu_us"] == 300 and row["client_cores"] >= 1
    # every request burned 300 µs of the server's CPU (its thread clock), and the rest too
    assert row["server_cpu_us_per_conn"] >= 300
    assert row["limited_by"] in ("server-cpu", "client-cpu", "neither") and row["why"]


def test_repeats_alternate_with_and_without_the_lock():
    df = acceptlock.run((2,), 30, lock=(True, False), concurrency=2, repeats=2)
    # each repeat in the opposite order to the one before: neither setting always runs first
    assert list(zip(df["repeat"], df["lock"])) == [(0, True), (0, False), (1, False), (1, True)]
    with pytest.raises(NetlabError):
        acceptlock.run((2,), 30, pin="yes")


def test_plot_returns_a_figure(df):
    fig = acceptlock.plot(df)
    assert len(fig.axes) == 3 and fig.axes[0].get_xscale() == "log"
    plt.close(fig)


def test_counting_lock_counts_waits_in_progress_and_done():
    lock = acceptlock.CountingLock()
    held, release = threading.Event(), threading.Event()

    def holder():
        with lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(5)
    waiter = threading.Thread(target=lambda: lock.__enter__() or lock.__exit__())
    waiter.start()
    try:
        assert wait_until(lambda: lock._waiting, timeout=5)     # it found the lock taken
        time.sleep(0.05)
        assert lock.snapshot()["wait_s"] >= 0.05            # still waiting: counted already
    finally:
        release.set()
        t.join()
        waiter.join()
    snap = lock.snapshot()
    assert snap["acquired"] == 2 and snap["waited"] == 1 and 0.05 <= snap["wait_s"] < 10


@pytest.mark.parametrize("kwargs", [dict(pool_sizes=(0,)), dict(connections=True),
                                    dict(lock="yes"), dict(concurrency=-1)])
def test_bad_arguments_are_one_sentence(kwargs):
    with pytest.raises(NetlabError):
        acceptlock.run(**kwargs)


def test_cli_json_and_table(capsys):
    assert acceptlock.main(["--pool-sizes", "1,4", "--connections", "40", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["pool"] for r in rows] == [1, 4] and all(r["lock"] for r in rows)
    assert acceptlock.main(["--pool-sizes", "2", "--connections", "40", "--no-lock"]) == 0
    out = capsys.readouterr().out
    assert "lock wait" in out and "False" in out
    with pytest.raises(SystemExit):
        acceptlock.main(["--pool-sizes", "1,x"])
