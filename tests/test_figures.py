"""Static teaching figures: each draws what it says (counted through the artists' gids)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from netlab import NetlabError, figures  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def fonts_loaded():
    """matplotlib opens (and caches) its font files on the first drawing: not a leak."""
    fig = figures.herd()
    fig.canvas.draw()
    plt.close(fig)


def drawn(ax, gid) -> list:
    return [a for a in ax.patches + ax.texts if a.get_gid() == gid]


@pytest.mark.parametrize("workers", [1, 4, 6])
def test_herd_draws_every_worker_and_the_wakeups_of_each_way_of_waiting(workers):
    fig = figures.herd(workers)
    try:
        fig.canvas.draw()                     # it renders, not only builds
        herd_ax, exclusive_ax, reuseport_ax = fig.axes
        for ax in fig.axes:
            assert len(drawn(ax, "worker")) == workers
            assert len(drawn(ax, "note")) == workers            # what became of each worker
        # the herd: every worker woken; the fixes: one
        assert len(drawn(herd_ax, "wake")) == workers
        assert len(drawn(exclusive_ax, "wake")) == 1
        assert len(drawn(reuseport_ax, "wake")) == 1
        # one shared socket against one socket per worker
        assert len(drawn(herd_ax, "socket")) == len(drawn(exclusive_ax, "socket")) == 1
        assert len(drawn(reuseport_ax, "socket")) == workers
        counts = [drawn(ax, "count")[0].get_text() for ax in fig.axes]
        assert counts == [f"wake-ups per connection: {workers}", "wake-ups per connection: 1",
                          "wake-ups per connection: 1"]
        notes = [t.get_text() for t in drawn(herd_ax, "note")]
        assert sum("✓" in n for n in notes) == 1       # one accepts, whatever woke
    finally:
        plt.close(fig)


def test_herd_marks_the_worker_that_gets_the_connection():
    fig = figures.herd(4, connection_to=3)
    try:
        for ax in fig.axes:
            notes = [t.get_text() for t in drawn(ax, "note")]
            assert "✓" in notes[3] and not any("✓" in n for n in notes[:3])
    finally:
        plt.close(fig)


@pytest.mark.parametrize("kwargs", [dict(workers=0), dict(workers=9), dict(workers=True),
                                    dict(workers=4, connection_to=4), dict(connection_to=-1)])
def test_herd_bad_arguments_are_one_sentence(kwargs):
    with pytest.raises(NetlabError):
        figures.herd(**kwargs)


def test_reactor_draws_the_four_participants_and_one_events_numbered_path():
    before = len(plt.get_fignums())
    fig = figures.reactor()
    try:
        fig.canvas.draw()                     # it renders, not only builds
        assert len(plt.get_fignums()) == before + 1          # one figure, returned, not shown
        (ax,) = fig.axes
        assert len(drawn(ax, "part")) == 4
        names = [t.get_text() for t in drawn(ax, "part-name")]
        assert names == ["Initiation dispatcher", "Event handlers",
                         "Synchronous event demultiplexer", "Handles"]
        bodies = " ".join(t.get_text() for t in ax.texts)
        for piece in ("Reactor", "Acceptor", "HttpHandler", "epoll_wait", "select / poll",
                      "file descriptors", "on_event"):
            assert piece in bodies, f"the figure should name {piece}"
        # one arrow per step of the path, numbered in order
        assert len(drawn(ax, "event")) == len(figures.REACTOR_PATH) == 6
        steps = [t.get_text() for t in drawn(ax, "step")]
        assert [s.split()[0] for s in steps] == ["1", "2", "3", "4", "5", "6"]
        assert [s.split()[1] for s in steps] == ["register", "wait", "bytes", "ready", "dispatch",
                                                 "recv(),"]
    finally:
        plt.close(fig)


def test_reactor_path_runs_between_the_parts_the_pattern_connects():
    parts = figures.REACTOR_PARTS
    path = [(src, dst) for src, dst, _, _ in figures.REACTOR_PATH]
    assert all(src in parts and dst in parts and src != dst for src, dst in path)
    # the thread's side (above) and the kernel's (below)
    above = {n for n, ((_, y), _) in parts.items() if y > 0.5}
    assert above == {"Initiation dispatcher", "Event handlers"}
    # the dispatcher waits in the demultiplexer and hears back from it; the handles reach the
    # demultiplexer, never the handlers directly; the handler does the I/O on its handle last
    assert path[1] == ("Initiation dispatcher", "Synchronous event demultiplexer")
    assert path[3] == ("Synchronous event demultiplexer", "Initiation dispatcher")
    assert ("Handles", "Event handlers") not in path
    assert path[4] == ("Initiation dispatcher", "Event handlers")
    assert path[-1] == ("Event handlers", "Handles")


@pytest.mark.parametrize("entries, sqes, cqes", [(8, 3, 2), (4, 4, 0), (16, 1, 16)])
def test_rings_draws_one_system_call_against_one_per_operation(entries, sqes, cqes):
    fig = figures.rings(entries, sqes, cqes)
    try:
        fig.canvas.draw()                     # it renders, not only builds
        readiness, completion = fig.axes
        # epoll: a wait, then a call per operation; io_uring: one io_uring_enter for them all
        assert len(drawn(readiness, "syscall")) == 1 + sqes
        assert len(drawn(completion, "syscall")) == 1
        assert [t.get_text() for t in drawn(readiness, "count")] == [f"system calls: {1 + sqes}"]
        assert drawn(completion, "count")[0].get_text().startswith("system calls: 1 ")
        # the two rings: every slot drawn, the filled ones counted
        assert len(drawn(completion, "sq-slot")) == len(drawn(completion, "cq-slot")) == entries
        assert len(drawn(completion, "sqe")) == sqes
        assert len(drawn(completion, "cqe")) == cqes
        steps = [t.get_text() for t in drawn(completion, "step")]
        assert [s.split()[0] for s in steps] == ["1", "2", "3", "4", "5"]
        assert "io_uring_enter" in steps[1] and f"to_submit={sqes}" in steps[1]
        assert "epoll_wait" in drawn(readiness, "step")[0].get_text()
    finally:
        plt.close(fig)


@pytest.mark.parametrize("kwargs", [dict(entries=1), dict(entries=17), dict(sqes=0),
                                    dict(entries=4, sqes=5), dict(cqes=-1), dict(sqes=True)])
def test_rings_bad_arguments_are_one_sentence(kwargs):
    with pytest.raises(NetlabError):
        figures.rings(**kwargs)
