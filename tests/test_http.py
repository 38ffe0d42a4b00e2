"""Unit tests for the sans-I/O HTTP/1.1 parser and response builder (netlab.http).

No sockets: bytes in, Requests out. The central invariant is that the result of ``feed`` does
not depend on how the byte stream was chunked, and that ``feed`` never raises.
"""

from __future__ import annotations

import random

import pytest

from netlab import http
from netlab.http import MAX_BODY, MAX_HEAD, Request, RequestParser

from conftest import parse_response


# ---------------------------------------------------------------- helpers

def feed_all(chunks, parser=None) -> list:
    parser = parser or RequestParser()
    out = []
    for c in chunks:
        out += parser.feed(c)
    return out


def one_shot(data: bytes) -> list:
    return RequestParser().feed(data)


def bytewise(data: bytes) -> list:
    return feed_all(data[i:i + 1] for i in range(len(data)))


def only(data: bytes) -> Request:
    """Parse ``data`` in one feed and return its single request."""
    reqs = one_shot(data)
    assert len(reqs) == 1, reqs
    return reqs[0]


def head_of_size(n: int, eol: bytes = b"\r\n") -> bytes:
    """A valid request head of exactly ``n`` bytes (without the blank line ending it)."""
    base = b"GET / HTTP/1.1" + eol + b"X-Pad: "
    assert n >= len(base)
    return base + b"a" * (n - len(base))


GET = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
SIMPLE = b"GET /bytes/10?q=1 HTTP/1.1\r\nHost: example\r\nUser-Agent: test\r\n\r\n"


# ---------------------------------------------------------------- basics

def test_complete_request_in_one_feed():
    p = RequestParser()
    (req,) = p.feed(SIMPLE)
    assert req == Request("GET", "/bytes/10?q=1", "HTTP/1.1",
                          {"host": "example", "user-agent": "test"}, True)
    assert req.error == 0 and req.detail == ""
    assert p.buffered == 0 and not p.failed


def test_request_fed_one_byte_at_a_time_is_identical():
    p = RequestParser()
    out = []
    for i in range(len(SIMPLE)):
        got = p.feed(SIMPLE[i:i + 1])
        if i < len(SIMPLE) - 1:
            assert got == [], f"request completed early, at byte {i}"
        out += got
    assert out == one_shot(SIMPLE)


@pytest.mark.parametrize("n", [2, 3])
def test_pipelined_requests_in_one_feed_come_out_in_order(n):
    data = b"".join(b"GET /p%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(n))
    reqs = one_shot(data)
    assert [r.target for r in reqs] == [f"/p{i}" for i in range(n)]
    assert all(r.error == 0 for r in reqs)


STREAMS = {
    "crlf": SIMPLE,
    "lf": b"GET /x HTTP/1.1\nHost: h\n\n",
    "pipelined": GET + SIMPLE + b"HEAD /z HTTP/1.0\r\n\r\n",
    "body": b"GET /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello" + GET,
    "mixed": b"GET /a HTTP/1.1\n\r\nGET /b HTTP/1.1\r\n\n" + GET,
    "error": GET + b"BAD\r\n\r\n" + GET,
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_split_at_every_offset_gives_the_same_requests(name):
    data = STREAMS[name]
    expected = one_shot(data)
    assert expected
    for i in range(len(data) + 1):
        assert feed_all([data[:i], data[i:]]) == expected, f"split at {i}"
    assert bytewise(data) == expected


def test_partial_head_is_buffered_not_returned():
    p = RequestParser()
    assert p.feed(b"GET / HTTP/1.1\r\nHost:") == []
    assert p.buffered == len(b"GET / HTTP/1.1\r\nHost:")
    assert p.feed(b" x\r\n\r\n")[0].headers == {"host": "x"}
    assert p.buffered == 0


def test_empty_feed_returns_nothing():
    p = RequestParser()
    assert p.feed(b"") == []
    assert p.feed(GET)[0].target == "/"
    assert p.feed(b"") == []


def test_parser_keeps_working_across_many_requests():
    p = RequestParser()
    for i in range(100):
        (req,) = p.feed(b"GET /%d HTTP/1.1\r\n\r\n" % i)
        assert req.target == f"/{i}"
    assert p.buffered == 0


def test_request_without_headers():
    req = only(b"GET / HTTP/1.1\r\n\r\n")
    assert req.headers == {} and req.error == 0


def test_header_names_lower_cased_and_values_stripped():
    req = only(b"GET / HTTP/1.1\r\nHOST:   a.b  \r\nX-Mixed-Case:v\r\nEmpty:\r\n\r\n")
    assert req.headers == {"host": "a.b", "x-mixed-case": "v", "empty": ""}


def test_header_value_may_contain_colons_and_latin1():
    req = only(b"GET / HTTP/1.1\r\nReferer: http://h:8/x\r\nX-L1: caf\xe9\r\n\r\n")
    assert req.headers["referer"] == "http://h:8/x"
    assert req.headers["x-l1"] == "caf\xe9"


def test_repeated_header_fields_are_combined():
    req = only(b"GET / HTTP/1.1\r\nAccept: a\r\naccept: b\r\n\r\n")
    assert req.headers["accept"] == "a, b"


# ---------------------------------------------------------------- keep-alive

KEEP_ALIVE = [
    ("HTTP/1.1", None, True),
    ("HTTP/1.1", "close", False),
    ("HTTP/1.1", "Close", False),
    ("HTTP/1.1", "keep-alive", True),
    ("HTTP/1.0", None, False),
    ("HTTP/1.0", "keep-alive", True),          # ab -k
    ("HTTP/1.0", "Keep-Alive", True),
    ("HTTP/1.0", "close", False),
]


@pytest.mark.parametrize("version,connection,keep_alive", KEEP_ALIVE + [
    ("HTTP/1.1", "Upgrade, close", False),     # a token list: close anywhere in it counts
    ("HTTP/1.1", "keep-alive,  CLOSE ", False),
    ("HTTP/1.1", "closed", True),              # whole tokens only
    ("HTTP/1.1", "", True),
    ("HTTP/1.0", "Upgrade , Keep-Alive", True),
    ("HTTP/1.0", "keep-alives", False),
    ("HTTP/1.0", "", False),
])
def test_wants_keep_alive(version, connection, keep_alive):
    assert http.wants_keep_alive(version, connection) is keep_alive


@pytest.mark.parametrize("version,connection,keep_alive", KEEP_ALIVE)
def test_keep_alive_rules(version, connection, keep_alive):
    head = f"GET / {version}\r\nHost: h\r\n"
    if connection is not None:
        head += f"Connection: {connection}\r\n"
    req = only((head + "\r\n").encode())
    assert req.version == version
    assert req.keep_alive is keep_alive


@pytest.mark.parametrize("name", [b"Connection", b"connection", b"CONNECTION", b"cOnNeCtIoN"])
def test_header_names_are_case_insensitive(name):
    assert only(b"GET / HTTP/1.1\r\n" + name + b": close\r\n\r\n").keep_alive is False
    assert only(b"GET / HTTP/1.0\r\n" + name + b": keep-alive\r\n\r\n").keep_alive is True


@pytest.mark.parametrize("name", [b"Content-Length", b"content-length", b"CONTENT-LENGTH",
                                  b"cOnTeNt-LeNgTh"])
def test_content_length_name_is_case_insensitive(name):
    reqs = one_shot(b"GET /a HTTP/1.1\r\n" + name + b": 2\r\n\r\nxx" + GET)
    assert [(r.target, r.error) for r in reqs] == [("/a", 0), ("/", 0)]
    assert reqs[0].headers == {"content-length": "2"}


def test_repeated_connection_header_close_wins():
    req = only(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n")
    assert req.keep_alive is False


# ---------------------------------------------------------------- line endings

@pytest.mark.parametrize("data", [
    b"GET /e HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",      # CRLF, as HTTP says
    b"GET /e HTTP/1.1\nHost: h\nAccept: */*\n\n",              # bare LF, a student in nc
    b"GET /e HTTP/1.1\r\nHost: h\nAccept: */*\r\n\n",          # mixed
    b"GET /e HTTP/1.1\nHost: h\r\nAccept: */*\n\r\n",          # mixed, CRLF blank line
])
def test_line_endings(data):
    for reqs in (one_shot(data), bytewise(data)):
        (req,) = reqs
        assert (req.method, req.target, req.error) == ("GET", "/e", 0)
        assert req.headers == {"host": "h", "accept": "*/*"}


def test_lf_request_then_crlf_request_pipelined():
    data = b"GET /a HTTP/1.1\n\nGET /b HTTP/1.1\r\n\r\n"
    assert [r.target for r in one_shot(data)] == ["/a", "/b"]
    data = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\n\n"
    assert [r.target for r in one_shot(data)] == ["/a", "/b"]


def test_lf_crlf_blank_line_before_a_crlf_request():
    """Regression: the later CRLFCRLF used to win over an earlier LF-CRLF blank line -> 400."""
    data = b"GET /a HTTP/1.1\n\r\nGET /b HTTP/1.1\r\n\r\n"
    assert [(r.target, r.error) for r in one_shot(data)] == [("/a", 0), ("/b", 0)]


@pytest.mark.parametrize("prefix", [b"\r\n", b"\n", b"\r\n\r\n", b"\n\n\n", b"\r\n" * 50])
def test_empty_lines_before_a_request_line_are_ignored(prefix):
    """RFC 9112 2.2 (regression: they were answered 400)."""
    data = prefix + GET
    for reqs in (one_shot(data), bytewise(data)):
        assert [(r.target, r.error) for r in reqs] == [("/", 0)]


def test_only_empty_lines_buffer_nothing_and_never_fail():
    p = RequestParser()
    for _ in range(10_000):
        assert p.feed(b"\r\n") == []
    assert p.buffered == 0 and not p.failed
    assert p.feed(GET)[0].error == 0


def test_stray_crlf_after_a_body_is_ignored():
    data = b"GET /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nab\r\n" + GET
    assert [(r.target, r.error) for r in one_shot(data)] == [("/a", 0), ("/", 0)]


# ---------------------------------------------------------------- bad input

BAD = [
    # malformed request line
    (b"GET /\r\n\r\n", 400),
    (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\n\r\n", 400),                      # two spaces: an empty part
    (b"GET / HTTP/1.1 \r\n\r\n", 400),                      # trailing space: 4 parts
    (b" GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET\t/\tHTTP/1.1\r\n\r\n", 400),
    (b"BLAH\r\n\r\n", 400),
    (b" \r\n\r\n", 400),
    (b"GET  HTTP/1.1\r\n\r\n", 400),                        # empty target
    # bad method characters
    (b"G(T / HTTP/1.1\r\n\r\n", 400),
    (b"GE\x00T / HTTP/1.1\r\n\r\n", 400),
    (b"G\xc3\xa9T / HTTP/1.1\r\n\r\n", 400),
    (b"GET: / HTTP/1.1\r\n\r\n", 400),
    # bad header lines
    (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),           # space before colon
    (b"GET / HTTP/1.1\r\nHost: h\r\n  folded\r\n\r\n", 400),  # obsolete line folding
    (b"GET / HTTP/1.1\r\nHost: h\r\n\tX-A: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n: no name\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX\x00Y: v\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nN\xe9: v\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX(Y): v\r\n\r\n", 400),
    (b"GET /\xff HTTP/1.1\r\n\r\n", 400),                   # non-ASCII target
    # versions
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / HTTP/1.2\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\n\r\n", 505),
    (b"GET / FOO/1.1\r\n\r\n", 400),
    (b"GET / http/1.1\r\n\r\n", 400),
    (b"GET / HTTP\r\n\r\n", 400),
    # Transfer-Encoding
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\ntransfer-encoding: identity\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
]


@pytest.mark.parametrize("data,status", BAD)
def test_bad_input_is_an_error_request(data, status):
    p = RequestParser()
    reqs = p.feed(data + GET)                 # a good request after it must not come out
    assert len(reqs) == 1
    assert reqs[0].error == status
    assert reqs[0].detail
    assert reqs[0].keep_alive is False
    assert p.failed
    assert p.buffered == 0
    assert p.feed(GET) == [] and p.feed(b"") == []
    assert bytewise(data + GET) == reqs


@pytest.mark.parametrize("data,status", [(d, s) for d, s in BAD if s == 400][:3])
def test_error_response_closes(data, status):
    (req,) = one_shot(data)
    st, headers, body = parse_response(http.error_response(req))
    assert st == status
    assert headers["connection"] == "close"
    assert body == (req.detail + "\n").encode()
    assert int(headers["content-length"]) == len(body)


def test_requests_before_an_error_still_come_out():
    reqs = one_shot(GET + GET + b"BAD\r\n\r\n" + GET)
    assert [r.error for r in reqs] == [0, 0, 400]


@pytest.mark.parametrize("value", [
    b"12a", b"-1", b"+5", b"", b"1 2", b"0x10", b"1.0", b"\xc2\xb2", b"\xd9\xa3", b"5, 5",
    b"5\x00",
])
def test_bad_content_length_is_400(value):
    p = RequestParser()
    (req,) = p.feed(b"GET / HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\n" + GET)
    assert req.error == 400 and p.failed


def test_unicode_digit_content_length_is_400():
    # "²".isdigit() is True in Python; it must still be refused
    (req,) = one_shot("GET / HTTP/1.1\r\nContent-Length: \u00b2\r\n\r\n".encode("latin-1"))
    assert req.error == 400


def test_conflicting_duplicate_content_length_is_400():
    """Regression: last-wins used to frame the body by the second value."""
    data = b"GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nGET /x"
    (req,) = one_shot(data)
    assert req.error == 400


def test_content_length_too_large_is_413():
    p = RequestParser()
    (req,) = p.feed(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
    assert req.error == 413 and p.failed


@pytest.mark.parametrize("digits", [4301, 5000, 7000])
def test_absurdly_long_content_length_is_413_not_an_exception(digits):
    """Regression: int() refuses strings over 4300 digits and raised out of feed()."""
    (req,) = one_shot(b"GET / HTTP/1.1\r\nContent-Length: " + b"9" * digits + b"\r\n\r\n")
    assert req.error == 413


def test_zero_padded_content_length_is_accepted():
    data = b"GET /a HTTP/1.1\r\nContent-Length: " + b"0" * 5000 + b"3\r\n\r\nabc" + GET
    assert [(r.target, r.error) for r in one_shot(data)] == [("/a", 0), ("/", 0)]


def test_content_length_at_max_body_is_accepted_and_skipped():
    p = RequestParser()
    (req,) = p.feed(b"POST /up HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % MAX_BODY)
    assert req.error == 0
    assert p.feed(b"x" * (MAX_BODY - 1)) == []
    assert [r.target for r in p.feed(b"x" + GET)] == ["/"]


@pytest.mark.parametrize("digits,limit,value", [
    ("0", 10, 0), ("", 10, None), ("000", 10, 0), ("10", 10, 10), ("11", 10, None),
    ("007", 10, 7), ("0" * 5000 + "3", 10, 3), ("0" * 5000, 10, 0),
    ("9" * 5000, MAX_BODY, None),              # int() would raise: refused by length first
    ("1" + "0" * 4400, MAX_BODY, None),
    (str(MAX_BODY), MAX_BODY, MAX_BODY), (str(MAX_BODY + 1), MAX_BODY, None),
    ("9999999", MAX_BODY, None),               # as many digits as MAX_BODY, but larger
    ("12a", 10 ** 6, None), ("-1", 10, None), ("+5", 10, None), (" 5", 10, None),
    ("1_0", 100, None), ("0x10", 100, None), ("1.0", 10, None),
    ("\u00b2", 10, None), ("\u0663", 10, None),  # isdigit() is True, and int("٣") is 3
])
def test_int_at_most(digits, limit, value):
    assert http.int_at_most(digits, limit) == value


@pytest.mark.parametrize("value,length", [
    ("0", 0), ("3", 3), ("0" * 5000 + "3", 3), (str(MAX_BODY), MAX_BODY),
])
def test_body_length_of_a_good_content_length(value, length):
    assert http.body_length({"content-length": value}) == (length, None)


def test_body_length_without_content_length_is_zero():
    assert http.body_length({}) == (0, None)
    assert http.body_length({"host": "h", "content-type": "text/plain"}) == (0, None)


@pytest.mark.parametrize("value,status", [
    (str(MAX_BODY + 1), 413), ("9" * 5000, 413), ("1" + "0" * 4400, 413),
    ("", 400), ("12a", 400), ("-1", 400), ("+5", 400), ("0x10", 400), ("5, 5", 400),
    ("\u00b2", 400), ("\u0663", 400), ("9" * 4999 + "x", 400),
])
def test_body_length_refuses_with_a_status_and_does_not_raise(value, status):
    length, bad = http.body_length({"content-length": value})
    assert length == 0
    assert (bad.error, bad.keep_alive) == (status, False) and bad.detail


@pytest.mark.parametrize("value", [b"3", b"12a", b"9" * 5000, b"%d" % (MAX_BODY + 1)])
def test_feed_frames_bodies_by_body_length(value):
    """The parser answers exactly what the named rule decides."""
    _, bad = http.body_length({"content-length": value.decode("latin-1")})
    body = b"abc" if value == b"3" else b""
    (req,) = one_shot(b"GET / HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\n" + body)
    assert req.error == (bad.error if bad else 0) and req.body == body


# ---------------------------------------------------------------- request bodies

def test_body_is_skipped_and_next_pipelined_request_parsed():
    data = (b"GET /a HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world"
            b"GET /b HTTP/1.1\r\n\r\n")
    reqs = one_shot(data)
    assert [(r.target, r.error) for r in reqs] == [("/a", 0), ("/b", 0)]
    assert bytewise(data) == reqs


def test_body_that_looks_like_a_request_is_not_parsed_as_one():
    smuggled = b"GET /smuggled HTTP/1.1\r\n\r\n"
    data = (b"POST /a HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
            + smuggled + b"GET /b HTTP/1.1\r\n\r\n")
    assert [r.target for r in one_shot(data)] == ["/a", "/b"]


def test_a_small_body_is_kept_and_the_request_completes_when_it_has_arrived():
    p = RequestParser()
    assert p.feed(b"POST /a HTTP/1.1\r\nContent-Length: 6\r\n\r\nab") == []
    assert p.feed(b"cd") == [] and p.buffered == 4
    a, b = p.feed(b"ef" + GET)
    assert (a.target, a.body, a.body_length, b.target, b.body) == ("/a", b"abcdef", 6, "/", b"")
    assert p.buffered == 0


def test_a_body_over_keep_body_is_answered_at_once_and_skipped_as_it_comes():
    p = RequestParser()
    n = http.KEEP_BODY + 1
    (req,) = p.feed(b"POST /a HTTP/1.1\r\nContent-Length: %d\r\n\r\nab" % n)
    assert (req.target, req.body, req.body_length) == ("/a", b"", n)
    assert p.feed(b"x" * (n - 3)) == []
    assert p.buffered == 0           # skipped, not buffered
    assert [r.target for r in p.feed(b"x" + GET)] == ["/"]


def test_content_length_zero():
    data = b"GET /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n" + GET
    assert [r.target for r in one_shot(data)] == ["/a", "/"]


# ---------------------------------------------------------------- head size limits

def test_head_over_8k_without_blank_line_is_431_before_it_ends():
    p = RequestParser()
    (req,) = p.feed(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 9000)
    assert req.error == 431 and p.failed and p.buffered == 0
    assert p.feed(b"\r\n\r\n" + GET) == []


def test_head_over_8k_fed_slowly_is_431_and_buffer_stays_bounded():
    p = RequestParser()
    out = []
    for _ in range(MAX_HEAD // 64 + 10):
        out += p.feed(b"a" * 64)
        assert p.buffered <= MAX_HEAD + 64
    assert [r.error for r in out] == [431]


def test_complete_but_long_head_is_431():
    (req,) = one_shot(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n" + GET)
    assert req.error == 431


def test_huge_single_header_is_431():
    (req,) = one_shot(b"GET / HTTP/1.1\r\nX: " + b"a" * (1 << 20) + b"\r\n\r\n")
    assert req.error == 431


def test_many_small_headers_under_the_limit_parse():
    lines = b"".join(b"X-%d: v\r\n" % i for i in range(800))
    head = b"GET / HTTP/1.1\r\n" + lines
    assert len(head) < MAX_HEAD
    req = only(head + b"\r\n")
    assert req.error == 0 and len(req.headers) == 800


def test_many_headers_over_the_limit_is_431():
    lines = b"".join(b"X-%d: v\r\n" % i for i in range(2000))
    (req,) = one_shot(b"GET / HTTP/1.1\r\n" + lines + b"\r\n")
    assert req.error == 431


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
@pytest.mark.parametrize("size", [MAX_HEAD - 4, MAX_HEAD - 1, MAX_HEAD, MAX_HEAD + 1,
                                  MAX_HEAD + 3, MAX_HEAD + 4])
def test_8k_boundary_does_not_depend_on_chunking(size, eol):
    """A head of exactly MAX_HEAD bytes is accepted and one byte more refused, whether it
    arrives whole or byte by byte (regression: byte by byte, MAX_HEAD-3..MAX_HEAD got 431)."""
    data = head_of_size(size, eol) + eol + eol + GET
    expected = [0, 0] if size <= MAX_HEAD else [431]
    whole = one_shot(data)
    assert [r.error for r in whole] == expected
    assert bytewise(data) == whole
    for cut in (MAX_HEAD - 1, MAX_HEAD, MAX_HEAD + 1, MAX_HEAD + 2, MAX_HEAD + 3, MAX_HEAD + 4):
        assert feed_all([data[:cut], data[cut:]]) == whole, f"cut at {cut}"


# ---------------------------------------------------------------- odd bytes

def test_nul_in_target_and_value_do_not_raise():
    req = only(b"GET /a\x00b HTTP/1.1\r\nX: a\x00b\r\n\r\n")
    assert req.target == "/a\x00b" and req.error == 0


@pytest.mark.parametrize("data", [
    b"\x00" * 100,
    b"\x00\r\n\r\n",
    b"\xff\xfe\r\n\r\n",
    b"\r" * 10_000,                     # bare CRs never make a line: bounded, then 431
    b"GET / HTTP/1.1\rHost: h\r\r",
    b"\r\n\r\n\r\nGET",
])
def test_garbage_never_raises(data):
    p = RequestParser()
    out = p.feed(data)
    assert all(isinstance(r, Request) for r in out)
    assert p.buffered <= MAX_HEAD + 3


# ---------------------------------------------------------------- response builder

@pytest.mark.parametrize("status", sorted(http.REASONS))
def test_response_status_line_and_length(status):
    body = b"some body\n"
    st, headers, got = parse_response(http.response(status, body))
    assert st == status
    assert int(headers["content-length"]) == len(body) and got == body
    assert headers["content-type"] == "text/plain"
    raw = http.response(status, body)
    assert raw.startswith(f"HTTP/1.1 {status} {http.REASONS[status]}\r\n".encode())


def test_response_unknown_status_has_a_reason():
    assert http.response(299).startswith(b"HTTP/1.1 299 Unknown\r\n")


@pytest.mark.parametrize("keep_alive,value", [(True, "keep-alive"), (False, "close")])
def test_response_connection_header(keep_alive, value):
    assert parse_response(http.response(200, b"x", keep_alive))[1]["connection"] == value


def test_response_head_only_keeps_length_drops_body():
    full = http.response(200, b"x" * 1234)
    head = http.response(200, b"x" * 1234, head_only=True)
    assert full.startswith(head) and full[len(head):] == b"x" * 1234
    st, headers, body = parse_response(head)
    assert headers["content-length"] == "1234" and body == b""


def test_response_extra_header():
    headers = parse_response(http.response(405, b"", extra="Allow: GET, HEAD\r\n"))[1]
    assert headers["allow"] == "GET, HEAD"


# ---------------------------------------------------------------- fuzz

_CORPUS = [
    GET, SIMPLE, STREAMS["lf"], STREAMS["body"], STREAMS["mixed"],
    b"HEAD /bytes/5 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
]
_ALPHABET = b"\r\n :\t\x00\xffGETHP/1.0-lengthContent" + bytes(range(0x20, 0x7f, 7))


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(5)
        pos = rng.randrange(len(b) + 1)
        if op == 0:
            b[pos:pos] = bytes(rng.choice(_ALPHABET) for _ in range(rng.randrange(1, 8)))
        elif op == 1 and b:
            del b[pos:pos + rng.randrange(1, 8)]
        elif op == 2 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op == 3:
            b[pos:pos] = rng.choice(_CORPUS)
        else:
            b[pos:pos] = rng.choice([b"\r\n", b"\n", b"\r\n\r\n", b"\n\n", b"\n\r\n",
                                     b"Content-Length: %d\r\n" % rng.randrange(-2, 40),
                                     b"\r\nConnection: close", b"0" * rng.randrange(1, 5000)])
    return bytes(b)


def _chunks(rng: random.Random, data: bytes) -> list:
    out, i = [], 0
    while i < len(data):
        n = rng.choice([1, 1, 2, 3, 7, 64, len(data)])
        out.append(data[i:i + n])
        i += n
    return out


def test_fuzz_feed_never_raises_and_is_chunking_independent():
    rng = random.Random(20240601)
    for _ in range(4000):
        data = _mutate(rng, b"".join(rng.choice(_CORPUS) for _ in range(rng.randrange(1, 4))))
        p = RequestParser()
        whole = p.feed(data)                 # must not raise
        assert all(isinstance(r, Request) for r in whole)
        errors = [i for i, r in enumerate(whole) if r.error]
        if errors:
            assert errors == [len(whole) - 1], "an error must be the last request"
            assert p.failed and p.feed(GET) == []
            assert whole[-1].error in http.REASONS
        else:
            assert not p.failed
            assert all(r.method and r.target for r in whole)
        assert feed_all(_chunks(rng, data)) == whole, data


# --- the fast path (http._plain) answers exactly as the general path ---------------------------
PLAIN_REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",                       # wrk
    b"GET / HTTP/1.1\r\n\r\n",
    b"HEAD /bytes/10?q=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",         # ab -k
    b"GET /x HTTP/1.1\r\nHost: a\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\nX-Empty:\r\n"
    b"X-Pad: \t spaced  value\t \r\nConnection: close\r\n\r\n",
]


def _general(data: bytes) -> list:
    """What the general path makes of ``data``: fed in two pieces, the fast path never sees it."""
    p = RequestParser()
    return p.feed(data[:1]) + p.feed(data[1:])


def _mutants(seed: int, n: int):
    rng = random.Random(seed)
    alphabet = [b"\r", b"\n", b"\t", b" ", b":", b"\x00", b"\x7f", b"\x80", b"\xff", b"\x0b",
                b"\x0c", b"A", b"-", b"/", b"\r\n", b"\r\n\r\n", b"Content-Length: 3\r\n",
                b"Transfer-Encoding: chunked\r\n", b"Host: b\r\n", b"HTTP/1.2", b"\xc3\xa9"]
    for _ in range(n):
        data = bytearray(rng.choice(PLAIN_REQUESTS))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(data) + 1)
            op = rng.random()
            if op < 0.5:
                data[i:i] = rng.choice(alphabet)
            elif op < 0.8:
                del data[i:i + rng.randint(1, 4)]
            else:
                data[i:i + 1] = rng.choice(alphabet)
        yield bytes(data)


def test_plain_requests_take_the_fast_path():
    # else the general path would quietly do all the work and the test below would prove nothing
    for data in PLAIN_REQUESTS:
        assert http._plain(data) is not None, data


@pytest.mark.parametrize("seed", range(4))
def test_the_fast_path_parses_exactly_as_the_general_path(seed):
    cases = list(PLAIN_REQUESTS) + list(_mutants(seed, 1500))
    fast_taken = 0
    for data in cases:
        fast_taken += http._plain(data) is not None
        assert RequestParser().feed(data) == _general(data), data
    assert fast_taken >= 50              # the mutants reach the fast path, not just its refusals
