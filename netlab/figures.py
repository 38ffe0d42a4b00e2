"""Static teaching figures: diagrams drawn from code, for ideas no measurement can show.

A measurement shows what happened (``netlab.plots``: timelines, sweeps); some ideas are the
machinery behind it — which sleepers the kernel wakes, what the parts of a reactor are. Those
are drawn here, with matplotlib, from a few parameters, so a figure stays true when the code
changes and can be redrawn with other sizes. Every function returns the matplotlib Figure and
never calls ``plt.show()``; its artists carry a ``gid`` ("worker", "socket", "wake", ...) so
tests can count what was drawn.

    from netlab import figures
    figures.herd(workers=4)        # the thundering herd's wake-ups, and the two fixes
    figures.rings()                # readiness against completion: io_uring's two rings
"""

from __future__ import annotations

from .arguments import whole
from .servers import NetlabError

# colours: one meaning each, in every figure
WAKE, WON, ASLEEP, WASTED, KERNEL = "C3", "C2", "0.55", "C3", "C0"


def _plt():
    import matplotlib.pyplot as plt
    return plt


def _box(ax, x, y, w, h, text, gid, colour="0.2", face="white", size="small"):
    """A rounded box centred on (x, y), in axes coordinates, with its label."""
    from matplotlib.patches import FancyBboxPatch
    box = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.01,rounding_size=0.02",
                         linewidth=1.3, edgecolor=colour, facecolor=face, gid=gid,
                         transform=ax.transAxes)
    ax.add_patch(box)
    ax.text(x, y, text, ha="center", va="center", fontsize=size, transform=ax.transAxes)
    return box


def _arrow(ax, start, end, gid, colour, width=1.6, style="-|>"):
    from matplotlib.patches import FancyArrowPatch
    arrow = FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, linewidth=width,
                            color=colour, gid=gid, transform=ax.transAxes, shrinkA=2, shrinkB=2)
    ax.add_patch(arrow)
    return arrow


def _workers(ax, n, woken, won, note_woken, note_asleep):
    """n worker boxes along the bottom; ``woken``: their indices; ``won``: the one that accepts.
    Returns each worker's top centre (where a wake arrow ends). Past 4 workers the labels
    shorten (the number, and a word under it) to keep them apart."""
    xs = [(i + 0.5) / n for i in range(n)]
    w, short = min(0.2, 0.8 / n), n > 4
    tops = []
    for i, x in enumerate(xs):
        colour = WON if i == won else (WASTED if i in woken else ASLEEP)
        _box(ax, x, 0.2, w, 0.12, str(i) if short else f"worker {i}", "worker", colour=colour,
             face="#eaf6ea" if i == won else ("#fbeaea" if i in woken else "#f2f2f2"))
        if i == won:
            note = "✓" if short else "accept() ✓"
        else:
            note = note_woken if i in woken else note_asleep
            if short:
                note = "woken" if i in woken else "asleep"
            else:
                note = note.replace(" for ", " for\n")
        ax.text(x, 0.08, note, ha="center", va="center", fontsize="x-small",
                color=colour, gid="note", transform=ax.transAxes)
        tops.append((x, 0.265))
    if short:
        ax.text(0.5, 0.0, "numbers: the workers", ha="center", va="center",
                fontsize="x-small", color=ASLEEP, transform=ax.transAxes)
    return tops


def herd(workers: int = 4, connection_to=None):
    """The thundering herd and its two fixes, one panel each: ``workers`` processes asleep on a
    listening socket when one connection arrives.

    1. ``select()`` / plain ``epoll``: the socket's wait queue wakes every sleeper; one accepts,
       the others find nothing and sleep again (wasted wake-ups, sometimes an ``EAGAIN``).
    2. blocking ``accept()`` / ``EPOLLEXCLUSIVE``: an exclusive wait, so the kernel wakes one.
    3. ``SO_REUSEPORT``: a listening socket (and queue) per worker; the kernel hashes the
       connection's addresses and ports to one socket, and only its worker wakes.

    ``connection_to``: the worker that gets the connection in the drawing (default: worker 1,
    or 0 when there is one). Arrows carry the gids
    "connection" (the new connection) and "wake" (a worker woken); boxes "worker" and "socket".
    """
    whole("workers", workers, 1, 8)
    if connection_to is None:
        connection_to = min(1, workers - 1)
    if isinstance(connection_to, bool) or not isinstance(connection_to, int) \
            or not 0 <= connection_to < workers:
        raise NetlabError(f"connection_to must be a worker, 0 to {workers - 1}, "
                          f"not {connection_to!r}")
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.8))
    every, one = list(range(workers)), connection_to
    panels = [
        ("select() or plain epoll", f"all {workers} wake; the first to run accepts", every,
         "woken for nothing"),
        ("blocking accept() or EPOLLEXCLUSIVE", "one wakes (an exclusive wait)", [one], ""),
        ("SO_REUSEPORT", "one wakes: a queue per worker", [one], ""),
    ]
    for k, (ax, (title, sub, woken, note_woken)) in enumerate(zip(axes, panels)):
        ax.set_axis_off()
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{title}\n{sub}", fontsize="medium")
        tops = _workers(ax, workers, woken, one, note_woken, "still asleep")
        if k < 2:           # one listening socket, shared by every worker
            sock = _box(ax, 0.5, 0.62, 0.62, 0.13, "one listening socket\n(one accept queue)",
                        "socket", colour=KERNEL, face="#e8f0fa")
            _arrow(ax, (0.5, 0.95), (0.5, 0.69), "connection", "black", width=2.0)
            ax.text(0.53, 0.84, "1 new connection", fontsize="x-small", transform=ax.transAxes)
            bottom = sock.get_y()
            for i in woken:
                _arrow(ax, (0.5 + (tops[i][0] - 0.5) * 0.35, bottom), tops[i], "wake", WAKE)
        else:               # a socket per worker; the kernel picks one by hashing
            _box(ax, 0.5, 0.8, 0.62, 0.09, "kernel: hash(addresses, ports)", "hash",
                 colour=KERNEL, face="#e8f0fa", size="x-small")
            _arrow(ax, (0.5, 0.98), (0.5, 0.85), "connection", "black", width=2.0)
            ax.text(0.53, 0.92, "1 new connection", fontsize="x-small", transform=ax.transAxes)
            w = min(0.2, 0.8 / workers)
            for i, (x, ytop) in enumerate(tops):
                s = _box(ax, x, 0.5, w, 0.1, f"socket {i}", "socket", colour=KERNEL,
                         face="#e8f0fa", size="x-small")
                if i == one:
                    _arrow(ax, (0.5, 0.755), (x, 0.55), "connection", "black", width=2.0)
                    _arrow(ax, (x, s.get_y()), (x, ytop), "wake", WAKE)
        ax.text(0.5, -0.07, f"wake-ups per connection: {len(woken)}", ha="center",
                va="center", fontsize="small", fontweight="bold", transform=ax.transAxes,
                gid="count")
    fig.suptitle(f"The thundering herd: {workers} workers asleep, one connection arrives",
                 fontsize="large")
    fig.tight_layout()
    return fig


# the Reactor's four participants (Schmidt, 1995): where each box sits (centre, in axes
# coordinates: the server's thread above, the kernel below) and what it is in netlab's model
REACTOR_PARTS = {
    "Initiation dispatcher": ((0.19, 0.72), "Reactor: the loop, run()\n"
                                            "table: handle → handler (want)"),
    "Event handlers": ((0.81, 0.72), "Acceptor (the listening socket)\n"
                                     "HttpHandler (one per connection)\nhook: on_event(mask)"),
    "Synchronous event demultiplexer": ((0.19, 0.18), "select / poll / epoll_wait\n"
                                                      "selectors.DefaultSelector"),
    "Handles": ((0.81, 0.18), "file descriptors:\nlistening socket, fd 3\n"
                              "connections, fd 7, fd 8, ..."),
}
REACTOR_FACES = {"Initiation dispatcher": "#cfe2f3", "Event handlers": "#d9ead3",
                 "Synchronous event demultiplexer": "#fce5cd", "Handles": "#eeeeee"}

# one event's path, in order: (from, to, what happens, which side of the centre line it runs on)
REACTOR_PATH = [
    ("Event handlers", "Initiation dispatcher", "register\nreactor.want(sock, READ, on_event)", +1),
    ("Initiation dispatcher", "Synchronous event demultiplexer",
     "wait\nselector.select(timeout)", -1),
    ("Handles", "Synchronous event demultiplexer", "bytes arrive\nfd 7 is readable", +1),
    ("Synchronous event demultiplexer", "Initiation dispatcher", "ready\n[(fd 7, READ)]", +1),
    ("Initiation dispatcher", "Event handlers", "dispatch\nkey.data(mask): on_event(READ)", -1),
    ("Event handlers", "Handles", "recv(), send() on fd 7\nneither blocks", -1),
]


def reactor():
    """The Reactor pattern (Schmidt, 1995) as netlab's ``reactor`` model builds it: its four
    participants (handles, the synchronous event demultiplexer, the initiation dispatcher, the
    event handlers) and the numbered path of one event, from a handler's registration to its
    ``recv()``. Above the dashed line, the server's one thread; below it, the kernel.

    Boxes carry the gid "part", their names "part-name", the arrows "event" and their numbered
    labels "step" (``REACTOR_PARTS`` and ``REACTOR_PATH`` say what is drawn)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 5.6))
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    w, h = 0.34, 0.24
    for name, ((x, y), body) in REACTOR_PARTS.items():
        _box(ax, x, y - 0.02, w, h, body, "part", face=REACTOR_FACES[name], size=9)
        ax.text(x, y + h / 2 - 0.055, name, ha="center", va="center", fontsize=11,
                fontweight="bold", gid="part-name", transform=ax.transAxes)
    ax.axhline(0.41, color="0.55", linestyle="--", linewidth=1)
    ax.text(0.475, 0.425, "↑ the server's one thread", fontsize=8, color="0.35", ha="center",
            va="bottom", transform=ax.transAxes)
    ax.text(0.475, 0.395, "↓ the kernel", fontsize=8, color="0.35", ha="center", va="top",
            transform=ax.transAxes)
    for step, (src, dst, label, side) in enumerate(REACTOR_PATH, start=1):
        (x0, y0), (x1, y1) = REACTOR_PARTS[src][0], REACTOR_PARTS[dst][0]
        y0, y1 = y0 - 0.02, y1 - 0.02                  # the boxes' centres
        if y0 == y1:                                   # across, between the boxes' sides
            across = 1 if x1 > x0 else -1
            y = y0 + 0.04 * side
            start, end = (x0 + across * w / 2, y), (x1 - across * w / 2, y)
            where, ha, va = ((x0 + x1) / 2, y + 0.015 * side), "center", \
                ("bottom" if side > 0 else "top")
        else:                                          # up or down, between top and bottom
            down = 1 if y1 > y0 else -1
            x = x0 + 0.05 * side
            start, end = (x, y0 + down * h / 2), (x, y1 - down * h / 2)
            where, ha, va = (x + 0.012 * side, 0.5), \
                ("left" if side > 0 else "right"), "center"
        _arrow(ax, start, end, "event", "#1f4e79")
        ax.text(*where, f"{step}  {label}", ha=ha, va=va, fontsize=8.5, color="#1f4e79",
                gid="step", transform=ax.transAxes,
                bbox=dict(facecolor="white", edgecolor="none", pad=1))
    fig.suptitle("The Reactor pattern (Schmidt, 1995), as netlab's reactor model builds it",
                 fontsize="large")
    ax.set_title("boxes: the four participants · numbered arrows: the path of one event; after 6 "
                 "the handler returns, and the loop waits again (2)", fontsize="small")
    fig.tight_layout()
    return fig


# what the rings of figure rings() hold: an operation per SQE, a result per CQE (cycled)
SQE_LABELS = ("recv fd 7", "send fd 8", "accept fd 3", "recv fd 9", "send fd 7", "close fd 8")
CQE_LABELS = ("fd 9: 78 B in", "fd 7: 120 B out", "fd 3: new fd 10", "fd 8: 0 (EOF)")
SYSCALL, MEMORY = "C3", "#1f4e79"


def rings(entries: int = 8, sqes: int = 3, cqes: int = 2):
    """Readiness against completion, for the same ``sqes`` operations, one panel each.

    1. epoll: ``epoll_wait`` says which sockets are ready, then the program makes each
       operation's system call itself: 1 + ``sqes`` system calls.
    2. io_uring (Axboe, 2019; io_uring(7)): the program writes ``sqes`` submission entries into
       the submission queue (SQ), a ring of ``entries`` slots in memory it shares with the
       kernel; one ``io_uring_enter`` hands them over and waits; the kernel does each operation
       and writes a completion entry (CQE) into the completion queue (CQ), which the program
       reads without a system call. ``cqes`` of them are shown waiting to be reaped.

    Arrows that are system calls carry the gid "syscall", the others (memory reads and writes,
    the kernel's own work) "memory"; slots "sq-slot" and "cq-slot", filled ones also "sqe" and
    "cqe"; numbered captions "step"; the count under each panel "count"."""
    whole("entries", entries, 2, 16)
    whole("sqes", sqes, 1, entries)
    whole("cqes", cqes, 0, entries)
    from matplotlib.patches import Rectangle
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.6), gridspec_kw=dict(width_ratios=[2, 3]))
    for ax, line, above, below, who in ((ax1, 0.36, 0.38, 0.34, "the program (one thread)"),
                                        (ax2, 0.5, 0.7, 0.33, "program")):
        ax.set_axis_off()
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.axhline(line, color="0.55", linestyle="--", linewidth=1)
        ax.text(0.01, above, f"↑ {who}", fontsize=8, color="0.35", transform=ax.transAxes)
        ax.text(0.01, below, "↓ the kernel" if ax is ax1 else "↓ kernel", fontsize=8,
                color="0.35", va="top", transform=ax.transAxes)

    def caption(ax, xy, text, ha="left", colour=MEMORY):
        ax.text(*xy, text, ha=ha, va="center", fontsize=8, color=colour, gid="step",
                transform=ax.transAxes, bbox=dict(facecolor="white", edgecolor="none", pad=1))

    # 1. readiness: the program asks, then calls
    ax1.set_title("readiness (epoll): which sockets are ready?\nthen one call per operation",
                  fontsize="medium")
    _box(ax1, 0.5, 0.8, 0.8, 0.16, "event loop", "part", face="#cfe2f3")
    _box(ax1, 0.5, 0.14, 0.8, 0.14, "sockets: the kernel does each call as it is made", "part",
         colour=KERNEL, face="#e8f0fa", size="x-small")
    calls = ["epoll_wait()"] + [SQE_LABELS[i % len(SQE_LABELS)].replace(" fd ", "(") + ")"
                                for i in range(sqes)]
    xs = [0.14 + 0.72 * i / max(len(calls) - 1, 1) for i in range(len(calls))]
    for i, (x, call) in enumerate(zip(xs, calls)):
        _arrow(ax1, (x, 0.72), (x, 0.21), "syscall", SYSCALL)
        ax1.text(x + 0.02, 0.47, f"{i + 1}  {call}", rotation=90, ha="left", va="center",
                 fontsize=8, color=SYSCALL, gid="step", transform=ax1.transAxes)
    ax1.text(0.5, -0.04, f"system calls: {len(calls)}", ha="center", fontsize="small",
             fontweight="bold", gid="count", transform=ax1.transAxes)

    # 2. completion: two rings in shared memory, one system call
    ax2.set_title("completion (io_uring): do these; tell me when each is done\n"
                  "two rings in memory the program and the kernel share (mmap)",
                  fontsize="medium")
    _box(ax2, 0.5, 0.86, 0.9, 0.12, "event loop: prep() fills SQEs · reap() reads CQEs",
         "part", face="#cfe2f3")
    _box(ax2, 0.5, 0.08, 0.9, 0.1, "the kernel: does each operation when it can, posts its CQE",
         "part", colour=KERNEL, face="#e8f0fa", size="x-small")
    w = 0.4 / entries
    for ring_x, name, filled, labels, slot_gid, gid, face in (
            (0.05, "submission queue (SQ), shared", sqes, SQE_LABELS, "sq-slot", "sqe",
             "#fce5cd"),
            (0.55, "completion queue (CQ), shared", cqes, CQE_LABELS, "cq-slot", "cqe",
             "#d9ead3")):
        ax2.text(ring_x + 0.2, 0.63, name, ha="center", fontsize="small", fontweight="bold",
                 transform=ax2.transAxes)
        for i in range(entries):
            ax2.add_patch(Rectangle((ring_x + i * w, 0.4), w, 0.2, transform=ax2.transAxes,
                                    facecolor=face if i < filled else "white", edgecolor="0.3",
                                    gid=slot_gid))
            if i < filled:
                ax2.add_patch(Rectangle((ring_x + i * w, 0.4), w, 0.2, transform=ax2.transAxes,
                                        facecolor="none", edgecolor="none", gid=gid))
                ax2.text(ring_x + (i + 0.5) * w, 0.5, labels[i % len(labels)], rotation=90,
                         ha="center", va="center", fontsize=6.5, transform=ax2.transAxes)
        for i, what in ((0, "head"), (filled, "tail")):
            ax2.text(ring_x + i * w, 0.385, f"↑{what}", ha="left", va="top", fontsize=7,
                     gid="index", transform=ax2.transAxes)
    _arrow(ax2, (0.2, 0.8), (0.2, 0.61), "memory", MEMORY)
    caption(ax2, (0.215, 0.71), "1  write SQEs,\n    advance the tail")
    _arrow(ax2, (0.5, 0.8), (0.5, 0.13), "syscall", SYSCALL, width=2.2)
    caption(ax2, (0.5, 0.255), f"2  io_uring_enter(to_submit={sqes},\n    min_complete=1)",
            ha="center", colour=SYSCALL)
    _arrow(ax2, (0.25, 0.4), (0.25, 0.13), "memory", MEMORY)
    caption(ax2, (0.08, 0.22), "3  the kernel\n    takes them")
    _arrow(ax2, (0.75, 0.13), (0.75, 0.4), "memory", MEMORY)
    caption(ax2, (0.77, 0.22), "4  a CQE per finished\n    operation (res)")
    _arrow(ax2, (0.8, 0.61), (0.8, 0.8), "memory", MEMORY)
    caption(ax2, (0.815, 0.71), "5  read CQEs,\n    advance the head")
    ax2.text(0.5, -0.04, "system calls: 1 (steps 1, 3, 4, 5 are memory)", ha="center",
             fontsize="small", fontweight="bold", gid="count", transform=ax2.transAxes)
    fig.suptitle(f"The same {sqes} operation(s): asked about, or handed over", fontsize="large")
    fig.tight_layout()
    return fig
