"""netlab.timeline: who served which connection, and when, from the server's own stamps."""

from __future__ import annotations

import pytest

import netlab
from netlab import timeline
from netlab.workload import TRACE_HEADER, WorkloadError


def small_table():
    import pandas as pd
    return pd.DataFrame(dict(connection=[0, 1], request=[0, 0], lane=[1, 1], pid=[7, 7],
                             tid=[7, 7], start_ms=[0.0, 1.0], end_ms=[5.0, 6.0]))


@pytest.fixture(scope="module", autouse=True)
def fonts_loaded():
    """matplotlib opens (and caches) its font files on the first drawing: not a leak."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = netlab.plots.timeline(small_table())
    fig.canvas.draw()
    plt.close(fig)


def test_a_traced_server_stamps_each_answer_with_who_and_when():
    with netlab.serve("epoll", trace=True) as srv:
        reply = netlab.fetch(srv.url)
    fields = dict(f.split("=") for f in reply.headers[TRACE_HEADER.lower()].split())
    assert int(fields["pid"]) == srv.pid == int(fields["tid"])    # epoll: the main thread
    assert 0 < float(fields["start"]) <= float(fields["end"])
    with netlab.serve("epoll") as srv:
        assert TRACE_HEADER.lower() not in netlab.fetch(srv.url).headers   # off by default


def test_trace_must_be_a_bool():
    with pytest.raises(WorkloadError, match="trace must be True or False"):
        netlab.Workload(trace="yes")


def test_iterative_serves_one_connection_at_a_time_in_one_lane():
    with netlab.serve("iterative", backend_ms=20, trace=True) as srv:
        df = timeline.record(srv, connections=3, requests=2)
    assert len(df) == 6 and df["lane"].nunique() == 1 and timeline.most_at_once(df) == 1
    # a connection's two requests follow each other: nobody else is served in between
    order = list(df.sort_values("start_ms")["connection"])
    assert order == [c for c in dict.fromkeys(order) for _ in range(2)]


def test_threaded_gives_each_connection_its_own_lane():
    with netlab.serve("threaded", backend_ms=20, trace=True) as srv:
        df = timeline.record(srv, connections=4, requests=2)
    assert df.attrs["processes"] == 1 and df.attrs["threads"] == 4
    assert (df.groupby("connection")["lane"].nunique() == 1).all()
    assert df.groupby("lane")["connection"].nunique().max() == 1


def test_forking_gives_each_connection_its_own_process():
    with netlab.serve("forking", trace=True) as srv:
        df = timeline.record(srv, connections=3)
    assert df["pid"].nunique() == 3 and srv.pid not in set(df["pid"])


def test_an_event_loop_holds_many_requests_in_one_lane():
    # all four are sent together and each waits 300 ms on the backend: they overlap unless a
    # client thread is held up for longer than that
    with netlab.serve("epoll", backend_ms=300, trace=True) as srv:
        df = timeline.record(srv, connections=4)
    assert df["lane"].nunique() == 1 and timeline.most_at_once(df) >= 2


def test_an_untraced_server_is_one_sentence():
    with netlab.serve("epoll") as srv:
        with pytest.raises(netlab.NetlabError, match="trace=True"):
            timeline.record(srv, connections=2)


def test_bad_arguments_are_one_sentence():
    with pytest.raises(netlab.NetlabError, match="connections must be a whole number"):
        timeline.record("http://127.0.0.1:9/", connections=0)
    with pytest.raises(netlab.NetlabError, match="a server or a URL"):
        timeline.record("localhost:80")


def test_a_refused_connection_is_one_sentence():
    from netlab.sockets import free_port
    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(netlab.NetlabError, match="clients failed"):
        timeline.record(url, connections=3)


def test_most_at_once_counts_overlaps():
    import pandas as pd
    df = pd.DataFrame(dict(lane=[1, 1, 1, 2], start_ms=[0, 5, 10, 0], end_ms=[10, 20, 30, 1]))
    assert timeline.most_at_once(df) == 2                  # [0,10) then [5,20) and [10,30)
    assert timeline.most_at_once(df, lane=2) == 1


def test_the_picture_has_a_lane_per_server_thread():
    import matplotlib.pyplot as plt
    with netlab.serve("prethreaded", workers=2, backend_ms=20, trace=True) as srv:
        df = timeline.record(srv, connections=4)
    fig = netlab.plots.timeline(df)
    fig.canvas.draw()
    try:
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["thread 1", "thread 2"]
        assert all(timeline.most_at_once(df, lane) == 1 for lane in (1, 2))   # one at a time
        waited = int((df["sent_ms"] < df["start_ms"]).sum())
        assert len(ax.collections) == len(df) + waited      # a bar per request, and its wait
    finally:
        plt.close(fig)


def test_requests_held_at_once_are_stacked_inside_their_lane():
    import matplotlib.pyplot as plt
    fig = netlab.plots.timeline(small_table())         # two overlapping requests, one lane
    try:
        ys = [c.get_paths()[0].vertices[:, 1] for c in fig.axes[0].collections]
        (y0, h0), (y1, h1) = [(y.min(), y.max() - y.min()) for y in ys]
        assert h0 == pytest.approx(0.4) and h1 == pytest.approx(0.4)
        assert abs(y1 - y0) == pytest.approx(0.4)       # one above the other, not on top
    finally:
        plt.close(fig)


def test_ctrl_c_leaves_no_client_thread_behind():
    """Interrupted at any point (here: while its clients wait for a server that never answers),
    record() takes its client threads down before it lets the KeyboardInterrupt through."""
    import signal
    import socket
    import threading
    from netlab.monitor import wait_until
    with socket.create_server(("127.0.0.1", 0)) as silent:     # listens, never accepts
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        main = threading.main_thread().ident                       # a real Ctrl-C: SIGINT to
        timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))   # main thread
        timer.start()
        with pytest.raises(KeyboardInterrupt):      # not woken by it: pytest-timeout fails this
            timeline.record(url, connections=3, timeout=600)
        timer.join()
    assert wait_until(lambda: not [t for t in threading.enumerate()
                                   if t.name.startswith("netlab-timeline-")], timeout=10)
