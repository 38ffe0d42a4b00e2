"""Per-connection protocol state for the event-loop models, and their timers.

An event loop cannot block in a handler, so the handler becomes data: a ``Session`` takes the
bytes that arrived, queues the requests, and produces response bytes in order. When a request
must wait on the (simulated) backend, the session says how long, and the loop sets a timer
instead of sleeping: that is how one thread keeps thousands of slow requests in flight. When it
needs the real backend (the guestbook's Redis), the session hands the loop the commands to send
and waits, in a state, for ``backend_done(replies)``.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from typing import Optional

MAX_QUEUED = 16              # pipelined requests held per connection before we stop reading
MAX_OUT = 256 * 1024         # unsent response bytes held before we stop reading (backpressure)


class Session:
    """One connection's protocol state, with no I/O: bytes in, response bytes out, in order.

    Sans-I/O so that every event loop drives it the same way (``connection.py``), and so that
    it tells the loop what to do instead of doing it: how long to wait on the backend, whether
    to keep reading (``wants_read``), when the connection is done (``finished``).
    """
    __slots__ = ("app", "parser", "queue", "out", "waiting", "ready", "replies", "closing", "drain")

    def __init__(self, app):
        self.app = app
        self.parser = app.new_parser()
        self.queue = deque()      # parsed requests, not yet answered
        self.out = bytearray()    # response bytes not yet accepted by the kernel
        self.waiting = False      # a backend timer is running for the request at the head
        self.ready = False        # ...and it has fired
        self.replies = None       # the Redis replies (or why there are none) for the head request
        self.closing = False      # answer what is queued, then close
        self.drain = False        # closing after an error: read leftovers before close

    def received(self, data: bytes):
        """Take bytes from the socket. Returns what the head request now waits for: a backend
        delay (seconds, float), Redis commands to send (a list), or None (nothing)."""
        if not self.closing:
            self.queue.extend(self.parser.feed(data))
        return self._advance()

    def backend_done(self, replies=None):
        """The head request's wait is over: its timer fired (``replies`` None), or Redis
        replied (a list, or a sentence saying why not). Answer it, and whatever can follow."""
        self.waiting = False
        if replies is None:
            self.ready = True
        else:
            self.replies = replies
        return self._advance()

    def peer_closed(self) -> None:
        """The client sent EOF: answer what it already asked, then close."""
        self.closing = True

    def resume(self):
        """Answer queued requests the output limit held back, now that bytes were sent."""
        return self._advance()

    @property
    def can_produce(self) -> bool:
        """Queued answers could be built now (no backend wait, output below MAX_OUT)."""
        return bool(self.queue) and not self.waiting and len(self.out) < MAX_OUT

    def _advance(self):
        app = self.app
        # stop at MAX_OUT: a client that pipelines many big requests and never reads must not
        # make us build every answer in memory; the loop calls resume() as the socket drains
        while self.queue and not self.waiting and len(self.out) < MAX_OUT:
            req = self.queue[0]
            if app.backend_s and not req.error and not self.ready:
                self.waiting = True
                return app.backend_s
            if self.replies is not None:            # Redis has answered the head request
                answer, self.replies = app.backend_answer(req, self.replies), None
            elif app.backend is not None and (todo := app.backend_commands(req)) is not None:
                if type(todo) is list:              # commands to send: park it, in a state
                    self.waiting = True
                    return todo
                answer = todo                       # a bad guestbook request: answered now
            else:
                answer = app.respond(req)
            self.queue.popleft()
            self.ready = False
            self.out += answer
            if not req.keep_alive:
                self.closing, self.drain = True, bool(req.error)
                self.queue.clear()
        return None

    @property
    def wants_read(self) -> bool:
        """Reading more is useful: not closing, and below both limits (else: backpressure)."""
        return not self.closing and len(self.queue) < MAX_QUEUED and len(self.out) < MAX_OUT

    @property
    def finished(self) -> bool:
        """Closing, and everything owed was answered and handed to the kernel: close now."""
        return self.closing and not self.queue and not self.out and not self.waiting


class Timers:
    """A heap of (deadline, callback): the loop asks how long it may sleep, then runs what is
    due. One heap for every connection's backend waits: a wait costs an entry, not a thread."""

    def __init__(self):
        self._heap = []
        self._seq = itertools.count()     # ties: first scheduled, first run

    def call_later(self, delay: float, fn, *args) -> None:
        """Call ``fn(*args)`` from the loop once ``delay`` seconds have passed."""
        heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), fn, args))

    def timeout(self) -> Optional[float]:
        """Seconds until the next timer (0 if overdue), or None to wait for I/O only."""
        if not self._heap:
            return None
        return max(0.0, self._heap[0][0] - time.monotonic())

    def run_due(self) -> None:
        """Run the callbacks whose deadline has passed, earliest first."""
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            _, _, fn, args = heapq.heappop(self._heap)
            fn(*args)
