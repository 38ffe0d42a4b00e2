"""The notes' clients (Node's fetch and http.get, asyncio, Tokio's Redis client): they run
against local servers only, count right, leave nothing, and N requests at once take about one
request's time where N one after another take N times it."""

from __future__ import annotations

import importlib
import shutil

import pytest

import netlab
from netlab import clients
from netlab.peers import redis_binary, redis_server

from conftest import needs_strace

tokio_peer = importlib.import_module("netlab.peers.tokio")   # the module (peers.tokio is the factory)
BACKEND_MS = 50


@pytest.mark.parametrize("client", list(clients.CLIENTS))
def test_n_at_once_take_about_one_wait_and_n_in_turn_take_n(client):
    why = clients.unavailable(client)
    if why:
        pytest.skip(why)
    n = 8
    with netlab.serve("epoll", backend_ms=BACKEND_MS) as srv:
        seq = clients.run(client, srv.url, n, "sequential")
        con = clients.run(client, srv.url, n, "concurrent")
    assert seq["ok"] == con["ok"] == n
    assert seq["wall_s"] >= n * BACKEND_MS / 1000 * 0.95       # a floor: each waits its 50 ms
    assert con["wall_s"] < seq["wall_s"] / 2, (seq, con)         # at once: about one wait


@needs_strace
@pytest.mark.parametrize("client", list(clients.CLIENTS))
def test_under_strace_a_client_waits_in_epoll(client):
    why = clients.unavailable(client)
    if why:
        pytest.skip(why)
    with netlab.serve("epoll") as srv:
        row = clients.run(client, srv.url, 4, "concurrent", strace=True)
    assert row["ok"] == 4
    assert sum(v for k, v in row["waits"].items() if k.startswith("epoll")) >= 1, row
    assert row["syscalls"] > 0


@pytest.mark.parametrize("url", ["http://example.com/", "http://10.0.0.1:80/"])
def test_clients_refuse_anything_but_a_local_server(url):
    with pytest.raises(netlab.NetlabError, match="local servers only"):
        clients.run("asyncio", url, 1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(client="curl"), "unknown client"), (dict(mode="parallel"), "sequential"),
    (dict(n=0), "whole number"), (dict(n=True), "whole number")])
def test_bad_arguments_are_one_sentence(kwargs, message):
    args = dict(client="asyncio", url="http://127.0.0.1:9/", n=1, mode="concurrent") | kwargs
    with pytest.raises(netlab.NetlabError, match=message):
        clients.run(**args)


def test_a_missing_node_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert clients.unavailable("node fetch") == "node is not installed: apt-get install nodejs"
    with pytest.raises(netlab.NetlabError, match="apt-get install nodejs"):
        clients.run("node fetch", "http://127.0.0.1:9/", 1)


def test_compare_has_a_row_per_client_and_mode_and_says_why_one_is_missing(monkeypatch):
    real = clients.unavailable
    monkeypatch.setattr(clients, "unavailable",
                        lambda c: "node is not installed: x" if c.startswith("node") else real(c))
    with netlab.serve("epoll") as srv:
        df = clients.compare(srv.url, n=3)
    assert len(df) == 2 * len(clients.CLIENTS)
    node = df[df.client.str.startswith("node")]
    assert (node.reason == "node is not installed: x").all()
    assert df[df.client == "asyncio"]["ok"].tolist() == [3, 3]


@pytest.mark.skipif(redis_binary()[0] is None, reason=redis_binary()[1])
def test_the_notes_tokio_client_sets_and_gets_hello():
    why = tokio_peer.unavailable()
    if why:
        pytest.skip(why)
    with redis_server() as rds:
        row = clients.tokio_redis(rds.address)
        assert rds.client().get("hello") == "world"
    assert row["output"] == ["SET hello world -> OK", 'got value from the server; result="world"']
