"""The small shared pieces: argument checks (netlab.arguments), sockets both sides use
(netlab.sockets), and the experiments' line reader."""

from __future__ import annotations

import argparse
import os
import threading
import time

import pytest

from netlab import arguments, sockets
from netlab.experiments import LineReader
from netlab.servers import NetlabError, ServerError
from netlab.workload import WorkloadError


@pytest.mark.parametrize("value", [True, 1.0, "3", None, 0, 11])
def test_whole_refuses_what_is_not_a_whole_number_in_range(value):
    with pytest.raises(NetlabError, match=r"n must be a whole number from 1 to 10, not"):
        arguments.whole("n", value, 1, 10)


def test_whole_returns_the_value_and_raises_the_error_asked_for():
    assert arguments.whole("n", 10, 1, 10) == 10
    with pytest.raises(WorkloadError, match="from 0 to 1,000"):
        arguments.whole("n", -1, 0, 1000, error=WorkloadError)


def test_number_takes_floats_unless_integer():
    assert arguments.number("x", 0.5, 0, 1) == 0.5
    with pytest.raises(NetlabError, match="whole number"):
        arguments.number("x", 0.5, 0, 1, integer=True)
    with pytest.raises(NetlabError, match="from 0 to 1"):
        arguments.number("x", False, 0, 1)


def test_comma_lists_for_the_command_line():
    assert arguments.comma_ints("0, 10,100") == [0, 10, 100]
    assert arguments.comma_counts("1,2") == [1, 2]
    for bad in ("", "1,x", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            arguments.comma_ints(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
        arguments.comma_counts("0,1")


def test_free_port_and_accepts():
    port = sockets.free_port()
    assert not sockets.accepts("127.0.0.1", port)
    with sockets.open_listener("127.0.0.1", port) as listen:
        assert listen.getsockname()[1] == port and sockets.accepts("127.0.0.1", port)
        with pytest.raises(ServerError, match="already in use"):
            sockets.free_port(port)
    assert sockets.url_of("::1", 80) == "http://[::1]:80/"


@pytest.mark.parametrize("port", [-1, 65536, True, "80"])
def test_a_bad_port_is_one_sentence(port):
    with pytest.raises(ServerError, match="port must be a whole number"):
        sockets.open_listener("127.0.0.1", port)


def test_line_reader_keeps_what_comes_after_the_lines_it_returns():
    r, w = os.pipe()
    try:
        reader = LineReader(r, "the probe")
        os.write(w, b"one\ntwo\nthr")
        assert reader.read(2, time.monotonic() + 5) == ["one", "two"]
        threading.Timer(0.05, os.write, (w, b"ee\nfour\n")).start()   # a line in two pieces
        assert reader.line(time.monotonic() + 5) == "three"
        assert reader.line(time.monotonic() + 5) == "four"
        with pytest.raises(NetlabError, match="the probe did not answer in time"):
            reader.line(time.monotonic() + 0.05)
        os.close(w)
        w = None
        with pytest.raises(NetlabError, match="the probe exited before answering"):
            reader.line(time.monotonic() + 5)
    finally:
        os.close(r)
        if w is not None:
            os.close(w)
