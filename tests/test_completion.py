"""completion: io_uring against epoll, counted (system calls, memory per idle connection) and
measured (CPU per request, with what limited each run). Counts and shapes, never timings."""

import pandas as pd
import pytest

import netlab
from netlab import NetlabError
from netlab.experiments import completion
from netlab.servers.uring import RECV_SIZE

from conftest import needs_strace, needs_uring



@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setenv("NETLAB_QUICK", "1")


def test_quick_mode_is_smaller(monkeypatch):
    small = completion.sizes()
    monkeypatch.delenv("NETLAB_QUICK")
    full = completion.sizes()
    assert set(small) == set(full)
    assert small["requests"] < full["requests"] and small["held"] < full["held"]
    assert full["held"] == 10_000 and len(small["levels"]) < len(full["levels"])


@pytest.mark.parametrize("call", [lambda: completion.syscalls(variants=["kqueue"]),
                                  lambda: completion.cpu(modes=["pipelined"]),
                                  lambda: completion.batching(variants=[])])
def test_unknown_variants_and_modes_are_one_sentence(call):
    with pytest.raises(NetlabError, match="variants are|modes are"):
        call()


@needs_uring
@needs_strace
def test_uring_makes_fewer_system_calls_per_request_than_epoll_at_keepalive():
    calls = completion.syscalls(variants=("epoll", "uring"), modes=("keep-alive",), requests=300)
    per = completion.per_request(calls).loc["keep-alive"]
    epoll, uring = per.loc["epoll"], per.loc["uring"]
    # epoll: a recv and a send per request, plus its share of a wait
    assert 0.8 <= epoll["recvfrom"] <= 1.5 and 0.8 <= epoll["sendto"] <= 1.5
    assert epoll["epoll_wait"] > 0.05
    # uring: no recv or send call at all; enters shared by the requests of a round
    assert uring["recvfrom"] < 0.05 and uring["sendto"] < 0.05
    assert uring["io_uring_enter"] < 1.0
    assert uring["all"] <= 0.5 * epoll["all"], per


@needs_uring
@needs_strace
def test_batch_false_enters_once_per_operation_and_concurrency_fills_each_enter():
    df = completion.batching(levels=(1, 16), variants=("uring", "uring, batch=False"),
                             requests=300).set_index(["variant", "clients"])
    enters = df["waits_per_request"]
    # a request is two operations (recv, send): batch=False pays an enter for each
    assert enters["uring, batch=False", 1] >= 1.8 and enters["uring, batch=False", 16] >= 1.8
    # batch=True: one enter carries what a round has; more clients, more per round
    assert enters["uring", 16] <= enters["uring", 1] / 3, enters
    assert df.loc[("uring", 16), "completions_per_enter"] >= 3


@needs_uring
def test_each_idle_connection_costs_uring_a_recv_buffer_and_epoll_none():
    df = completion.idle(held=300, clients=4, duration=0.3)
    assert list(df["variant"]) == ["epoll", "epoll", "uring", "uring"]
    assert list(df["held"]) == [0, 300, 0, 300]
    assert (df["errors"] == 0).all() and (df["rps"] > 0).all()
    at = df[df["held"] > 0].set_index("variant")
    assert (at["accepted"] >= 295).all()
    assert at.loc["uring", "server_kb_per_conn"] >= 0.75 * RECV_SIZE / 1024, at
    assert at.loc["epoll", "server_kb_per_conn"] <= 4, at


def test_idle_holds_what_the_open_file_limit_allows_and_says_so(monkeypatch):
    monkeypatch.setattr(netlab.env, "raise_fd_limit", lambda: 200)
    df = completion.idle(variants=("epoll",), held=1000, clients=4, duration=0.2)
    assert list(df["held"]) == [0, 200 - 64 - 4]
    assert "not 1,000" in df.attrs["note"] and "ulimit -n" in df.attrs["note"]


@needs_uring
def test_cpu_has_a_row_per_run_with_user_and_system_per_request():
    runs = completion.cpu(modes=("keep-alive",), concurrency=4, duration=0.3, repeats=1)
    assert list(runs["variant"]) == ["epoll", "uring"]
    assert (runs["requests"] > 0).all()
    assert set(runs["limited_by"]) <= {"server-cpu", "client-cpu", "neither"}
    both = runs["user_us_per_req"] + runs["sys_us_per_req"]
    assert ((both - runs["server_cpu_us_per_req"]).abs() <= 1e-6 * both).all()


def _runs(epoll, uring):
    """A made-up cpu() frame, a run per verdict given: epoll 10, 12, 14... µs/request and
    100k req/s, uring 20, 24, 28... and 50k."""
    rows = [dict(mode="keep-alive", variant=variant, server_cpu_us_per_req=cpu * (1 + 0.2 * i),
                 user_us_per_req=cpu * (1 + 0.2 * i) / 2, sys_us_per_req=cpu * (1 + 0.2 * i) / 2,
                 rps=rps, p99_ms=1.0, limited_by=limit)
            for variant, cpu, rps, limits in (("epoll", 10.0, 1e5, epoll),
                                              ("uring", 20.0, 5e4, uring))
            for i, limit in enumerate(limits)]
    return pd.DataFrame(rows)


S, C, N = "server-cpu", "client-cpu", "neither"


def test_ratios_are_medians_of_the_server_bound_runs_and_void_without_enough_of_them():
    r = completion.ratios(_runs([S, S], [S, S])).loc["keep-alive"]
    assert r["server_cpu_us_per_req"] == pytest.approx(22 / 11) and r["rps"] == 0.5
    assert r["bound"] and "4 of 4 runs" in r["why"]
    # a run the client limited is left out of the medians, and said so
    r = completion.ratios(_runs([S, C], [S, S])).loc["keep-alive"]
    assert r["bound"] and r["server_cpu_us_per_req"] == pytest.approx(22 / 10)
    assert "3 of 4" in r["why"] and "client-cpu" in r["why"]
    # fewer than half of a variant's runs server-bound, or none: void
    for epoll, uring in (([S, S, S], [S, N, N]), ([S, S], [N, N])):
        r = completion.ratios(_runs(epoll, uring)).loc["keep-alive"]
        assert not r["bound"] and "neither" in r["why"] and "void" in r["why"], (epoll, uring)
