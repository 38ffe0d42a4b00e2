"""The thundering-herd experiment: shapes with margins a noisy two-core VM keeps (quick sizes)."""

from __future__ import annotations

import json
import os

import matplotlib
import psutil
import pytest

from netlab.experiments import herd
from netlab.servers import NetlabError

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402   (imported here: its fds are not a test's leak)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the herd needs fork()")


@pytest.fixture(scope="module")
def table():
    """Every mode once, quick sizes: (summary DataFrame, per-worker frames by mode)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NETLAB_QUICK", "1")
        size = herd.sizes()
        frames = {m: herd.run(m, **size) for m in herd.MODES}
    import pandas as pd
    summary = pd.DataFrame([herd.summary(df) for df in frames.values()])
    fig = herd.plot(summary)
    fig.canvas.draw()           # matplotlib opens (and keeps) its font files once: not a leak
    plt.close(fig)
    return summary.set_index("mode"), frames


def ran(table, mode):
    row = table[0].loc[mode]
    if not row["available"]:
        pytest.skip(row["reason"])
    return row


def test_quick_sizes(monkeypatch):
    monkeypatch.setenv("NETLAB_QUICK", "1")
    assert herd.sizes()["connections"] < 2000
    monkeypatch.delenv("NETLAB_QUICK")
    assert herd.sizes() == dict(workers=4, connections=2000)


@pytest.mark.parametrize("mode", herd.MODES)
def test_every_connection_accepted_once(table, mode):
    row = ran(table, mode)
    assert row["accepted"] == row["connections"]
    df = table[1][mode]
    assert len(df) == row["workers"] == 4
    # each connection is made once every worker sleeps: whoever took it had gone to sleep
    # first, a voluntary switch, so the switches can't be fewer than the connections
    assert df["ctx_voluntary"].sum() >= row["connections"]
    assert df["accepted"].sum() == row["connections"]
    if mode == "accept":            # blocking accept() never finds the queue empty
        assert (df["eagain"] == 0).all()


def test_blocking_accept_wakes_about_one_worker(table):
    assert ran(table, "accept")["ctx_per_conn"] <= 1.5


def test_select_and_epoll_wake_the_herd(table):
    assert ran(table, "select")["ctx_per_conn"] >= 2.0
    assert ran(table, "epoll")["ctx_per_conn"] >= 2.0


def test_exclusive_wakes_one(table):
    assert ran(table, "exclusive")["ctx_per_conn"] <= 1.5


def test_reuseport_splits_across_every_worker(table):
    row = ran(table, "reuseport")
    counts = [int(c) for c in row["split"].split("/")]
    fair = row["accepted"] / row["workers"]
    assert all(c > 0 for c in counts), counts
    assert all(abs(c - fair) <= 0.5 * fair for c in counts), counts     # generous: quick sizes
    assert row["ctx_per_conn"] <= 1.5


def test_workers_are_gone(table):
    pids = [pid for df in table[1].values() for pid in df["pid"]]
    assert pids and not [pid for pid in pids if psutil.pid_exists(pid)]


def test_plot_returns_a_figure(table):
    fig = herd.plot(table[0].reset_index())
    assert len(fig.axes) == 2
    plt.close(fig)


@pytest.fixture(scope="module")
def logged():
    """epoll and EPOLLEXCLUSIVE with every accept attempt logged: mode -> (run, races)."""
    out = {}
    for mode in ("epoll", "exclusive"):
        if herd.unavailable(mode):
            continue
        df = herd.run(mode, workers=4, connections=200, log=True)
        out[mode] = df, herd.races(df)
    return out


@pytest.mark.parametrize("mode", ["epoll", "exclusive"])
def test_races_give_each_connection_its_winner_and_failed_accepts(logged, mode):
    if mode not in logged:
        pytest.skip(herd.unavailable(mode))
    df, r = logged[mode]
    assert len(r) == 200 and list(r["connection"]) == list(range(200))
    assert r["winner"].between(0, 3).all(), "every connection was taken by one worker"
    # the log agrees with the workers' own counts
    assert list(r["winner"].value_counts().reindex(range(4), fill_value=0)) == list(df["accepted"])
    assert r["eagain"].sum() == df["eagain"].sum()
    assert (r["eagain_other_core"] <= r["eagain"]).all()
    assert (r["accept_us"] > 0).all()
    cores = set(range(os.cpu_count() or 1)) | {-1}          # -1: no sched_getcpu here
    assert set(r["client_core"]) <= cores and set(r["winner_core"]) <= cores


def test_the_wait_queue_order_is_known(logged):
    assert herd.woken_first("epoll", 4) == 3 and herd.woken_first("exclusive", 4) == 0
    assert herd.woken_first("select", 4) is None and herd.woken_first("reuseport", 4) is None
    if "exclusive" not in logged:
        pytest.skip(herd.unavailable("exclusive"))
    df, r = logged["exclusive"]
    assert df.attrs["woken_first"] == 0
    # an exclusive wait wakes the first in the queue, and every worker sleeps when a
    # connection comes: worker 0 (registered first, at the head) takes them
    assert r["first_woken"].mean() >= 0.9, df["accepted"].tolist()


def test_races_need_a_logged_run(table):
    with pytest.raises(NetlabError, match="log=True"):
        herd.races(table[1]["accept"])
    with pytest.raises(NetlabError):
        herd.run("accept", connections=10, log="yes")


def test_unavailable_mode_is_a_row_with_the_reason(monkeypatch):
    monkeypatch.setitem(herd.FEATURES, "exclusive", (False, "needs EPOLLEXCLUSIVE (Linux 4.5)"))
    df = herd.run("exclusive", connections=10)
    assert df.empty and not df.attrs["available"]
    row = herd.summary(df)
    assert row["reason"].startswith("needs EPOLLEXCLUSIVE") and row["accepted"] == 0


@pytest.mark.parametrize("kwargs", [dict(mode="nope"), dict(mode="accept", workers=0),
                                    dict(mode="accept", connections=True)])
def test_bad_arguments_are_one_sentence(kwargs):
    with pytest.raises(NetlabError):
        herd.run(**kwargs)


def test_deadline_stops_the_experiment_and_leaves_nothing():
    with pytest.raises(NetlabError, match=r"\(select\) failed: .*(time|Timeout)"):
        herd.run("select", connections=20000, timeout=0.3)


def test_cli_text_and_json(capsys):
    assert herd.main(["--mode", "accept", "--connections", "40"]) == 0
    out = capsys.readouterr().out
    assert "accept" in out and "ctx/conn" in out
    assert herd.main(["--mode", "reuseport", "--workers", "2", "--connections", "40",
                      "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["mode"] == "reuseport" and rows[0]["accepted"] == 40
    assert len(rows[0]["per_worker"]) == 2
    assert herd.main(["--mode", "accept", "--workers", "0"]) == 2
    assert "workers" in capsys.readouterr().err


def test_run_all_reports_each_step_when_asked():
    seen = []
    df = herd.run_all(("accept", "reuseport"), workers=2, connections=60, progress=seen.append)
    assert len(df) == 2 and len(seen) == 2 and seen[0].startswith("[1/2] herd: accept")
