"""netlab.check: a student's server against netlab's promises, with a readable report."""


import netlab
from netlab import http
from netlab.check import PROMISES


def leaky_server(listen_sock, app):
    """Answers everything with a fixed 200 and never closes a connection: wrong on purpose."""
    kept = []
    while True:
        conn, _ = listen_sock.accept()
        kept.append(conn)
        conn.recv(65536)
        conn.sendall(http.response(200, b"hi\n", False))


def good_server(listen_sock, app):
    """A thread per connection around netlab's blocking handler."""
    import threading
    while True:
        conn, _ = listen_sock.accept()
        threading.Thread(target=netlab.handle_connection, args=(conn, app), daemon=True).start()


def raises_on_bad_input(listen_sock, app):
    """Serves good requests (a thread each) but dies, with a traceback, on the first request that
    does not start with GET: the student's parser bug that "stays up" is there to catch. (It
    peeks in the connection's thread: peeking in the accept loop would wait on a silent client.)"""
    import os
    import socket
    import threading
    import traceback

    def serve(conn):
        first = conn.recv(65536, socket.MSG_PEEK)
        if first and not (first.startswith(b"GET ") or b"GET ".startswith(first)):
            try:
                raise ValueError(f"my parser cannot handle {first[:8]!r}")
            except ValueError:
                traceback.print_exc()
                os._exit(1)                 # the whole server dies, as a crash in main would
        netlab.handle_connection(conn, app)

    while True:
        conn, _ = listen_sock.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def one_recv_server(listen_sock, app):
    """Iterative, and it answers whatever one recv() returns: half a request gets a 400 at
    once, so only a client that sends nothing at all can show that it serves one at a time."""
    while True:
        conn, _ = listen_sock.accept()
        requests = app.new_parser().feed(conn.recv(4096))
        conn.sendall(b"".join(map(app.respond, requests)) or
                     http.response(400, b"incomplete\n", keep_alive=False))
        conn.close()


def one_request_per_connection(listen_sock, app):
    """Reads until it has a whole request, answers what it has, and closes: no keep-alive loop.
    Two requests sent in one packet are both answered, so only a second request sent after
    the first answer can show the missing loop."""
    import threading

    def serve(conn):
        parser, requests = app.new_parser(), []
        while not requests:
            data = conn.recv(4096)
            if not data:
                break
            requests = parser.feed(data)
        conn.sendall(b"".join(map(app.respond, requests)))
        conn.close()

    while True:
        conn, _ = listen_sock.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def failed_promises(server) -> dict:
    report = netlab.check(server, concurrency=())
    return {r["promise"]: r["detail"] for r in report.rows if not r["passed"]}


def test_naive_servers_cannot_pass_by_accident():
    """Each promise is tested by a case a naive server does not pass by accident."""
    failed = failed_promises(one_recv_server)
    assert set(failed) == {"correct answers", "keep-alive", "bad input handled",
                           "a stalled client does not block others"}, failed
    assert "one byte at a time" in failed["correct answers"]
    assert "got 400, expected 431" in failed["bad input handled"]    # it read 4 KiB of 9
    assert "one connection at a time" in failed["a stalled client does not block others"]
    failed = failed_promises(one_request_per_connection)
    assert set(failed) == {"keep-alive"}, failed
    assert "after the first answer" in failed["keep-alive"]


def test_a_good_model_keeps_every_promise_and_is_measured(monkeypatch):
    monkeypatch.setenv("NETLAB_QUICK", "1")
    report = netlab.check("epoll", concurrency=(1, 8))
    assert report.passed, str(report)
    names = [r["promise"] for r in report.rows]
    assert names[0] == "correct answers" and names[-1] == "clean stop"
    assert list(report.throughput["concurrency"]) == [1, 8]
    assert (report.throughput["errors"] == 0).all()
    text = str(report)
    assert "all promises kept" in text and "limited by" in text
    assert list(report.frame().columns) == ["promise", "passed", "detail"]


def test_a_students_good_function_passes():
    report = netlab.check(good_server, concurrency=())
    assert report.passed, str(report)
    assert report.server == "good_server"
    assert [r["promise"] for r in report.rows] == [p for p, _ in PROMISES] + ["clean stop"]


def test_a_server_that_dies_on_bad_input_fails_stays_up_and_is_not_tested_further():
    report = netlab.check(raises_on_bad_input, concurrency=(1,))
    rows = [(r["promise"], r["passed"]) for r in report.rows]
    # the death is blamed on the promise it happened in, and nothing runs against a dead server
    assert rows == [("correct answers", True), ("keep-alive", True),
                    ("a stalled client does not block others", True),
                    ("bad input handled", False), ("stays up", False),
                    ("clean stop", False)], str(report)
    by_name = {r["promise"]: r for r in report.rows}
    assert by_name["stays up"]["detail"].startswith("the server died: ")
    assert "my parser cannot handle b'NONSENSE'" in by_name["stays up"]["detail"]   # its log
    assert "already exited with status 1" in by_name["clean stop"]["detail"]
    assert not report.passed and report.throughput is None
    assert "✗ stays up: the server died" in str(report) and "Traceback" not in str(report)


def test_the_iterative_model_fails_only_the_stalled_client_promise():
    report = netlab.check("iterative", concurrency=())
    failed = [r["promise"] for r in report.rows if not r["passed"]]
    assert failed == ["a stalled client does not block others"]
    assert "one connection at a time" in str(report)
    assert report.throughput is None          # no throughput for a server that broke a promise


def test_a_broken_server_gets_sentences_not_tracebacks():
    report = netlab.check(leaky_server, concurrency=())
    assert not report.passed
    by_name = {r["promise"]: r for r in report.rows}
    assert not by_name["correct answers"]["passed"]
    assert "app.respond" in by_name["correct answers"]["detail"]
    assert not by_name["bad input handled"]["passed"]
    assert not by_name["no fd leaked per connection"]["passed"]
    assert "close each connection" in by_name["no fd leaked per connection"]["detail"]
    assert by_name["clean stop"]["passed"]
    assert "Traceback" not in str(report)
