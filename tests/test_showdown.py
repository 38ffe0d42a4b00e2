"""The showdown: every model on the same workloads, a row each with what limited it."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

import netlab.results
from netlab.experiments import showdown
from netlab.servers import NetlabError


def test_a_row_per_workload_model_and_level_and_the_iterative_ceiling(tmp_path, monkeypatch):
    monkeypatch.setattr(netlab.results, "DATA_DIR", tmp_path)
    df = showdown.showdown(["iterative", "epoll"], [10], ["backend 10 ms", "slow clients"], 0.4,
                           warmup=0.1, save_as="mini")
    assert len(df) == 4
    assert list(df.workload.unique()) == ["backend 10 ms", "slow clients"]
    # 10 clients that each wait 10 ms per request: at most ~1,000 req/s, which keeps neither
    # side's core busy (slow clients mix in 8 fast ones, so that verdict is not fixed)
    # (unless other processes left the two less than half a core: then they competed)
    waited = df[df.workload == "backend 10 ms"]
    crowded = waited.others_cores >= (os.cpu_count() or 1) - 0.5
    assert ((waited.limited_by == "neither") | crowded).all(), waited[["model", "why"]]
    rate = df.set_index(["workload", "model"]).rps
    # 10 ms per request, one at a time: the iterative server cannot pass ~100 req/s; epoll can
    assert rate["backend 10 ms", "iterative"] <= 130
    assert rate["backend 10 ms", "epoll"] >= 3 * rate["backend 10 ms", "iterative"]
    saved, meta = netlab.results.load(tmp_path / "runs" / "mini.csv")
    assert len(saved) == 4 and meta["params"]["concurrency"] == [10]
    assert meta["params"]["workloads"]["backend 10 ms"] == {"serve": {"backend_ms": 10}, "load": {}}
    assert meta["params"]["models"] == ["iterative", "epoll"] and meta["params"]["timeout"] == 3.0


def test_marked_puts_what_limited_each_number_next_to_it():
    df = pd.DataFrame(dict(model=["a", "a", "b", "b"], workload=["fast clients"] * 2 + ["CPU 500 µs"] * 2,
                           concurrency=[1, 2, 1, 2], rps=[10.0, 20.0, 30.0, 40.0],
                           requests=[5, 0, 5, 5], errors=[0, 3, 0, 0],
                           limited_by=["server-cpu", "client-cpu", "neither", "other"]))
    t = showdown.marked(df)                    # 3 significant digits by default
    assert t.loc["a", ("fast clients", 1)] == "10.0 S"
    assert t.loc["a", ("fast clients", 2)] == "20.0 C !"
    assert t.loc["b", ("CPU 500 µs", 1)] == "30.0 W"
    assert t.loc["b", ("CPU 500 µs", 2)] == "40.0 ?"
    assert showdown.marked(df, per_request=True).loc["a", ("fast clients", 2)] == "— C !"
    assert showdown.marked(df, fmt="{:,.0f}").loc["a", ("fast clients", 1)] == "10 S"
    assert showdown.marked(df.assign(rps=df.rps * 1000.123)).loc["b", ("CPU 500 µs", 2)] == "40,000 ?"
    assert list(t.columns.get_level_values(0).unique()) == ["fast clients", "CPU 500 µs"]


def _runs(workload, *rows):
    return [dict(workload=workload, concurrency=100, model=m, rps=r, limited_by=lim, errors=e,
                 requests=100) for m, r, lim, e in rows]


def test_verdict_ranks_only_a_leader_limited_by_its_own_cpu():
    df = pd.DataFrame(
        _runs("CPU 500 µs", ("a", 2000.0, "server-cpu", 0), ("b", 1900.0, "server-cpu", 0),
              ("c", 500.0, "server-cpu", 0))
        + _runs("fast clients", ("a", 12000.0, "client-cpu", 0), ("b", 11500.0, "server-cpu", 0),
                ("c", 600.0, "server-cpu", 0))
        + _runs("backend 10 ms", ("a", 8000.0, "neither", 0), ("b", 95.0, "neither", 0))
        + _runs("idle clients", ("a", 13000.0, "client-cpu", 50), ("b", 9000.0, "server-cpu", 0),
                ("c", 0.0, "neither", 0))
        + [dict(workload="fast clients", concurrency=10, model="a", rps=1.0, limited_by="neither",
                errors=0, requests=1)])
    # ["last"], not .last: in pandas < 3 a Series has a last() method that hides the field
    v = showdown.verdict(df).set_index("workload")
    assert list(v.index) == ["fast clients", "idle clients", "backend 10 ms", "CPU 500 µs"]
    assert (v.clients == 100).all()
    cpu = v.loc["CPU 500 µs"]
    assert cpu.ranked and cpu.leader == "a" and cpu.tied == "b" and cpu["last"] == "c"
    assert cpu.says.startswith("led by a (2,000 req/s, server-cpu")
    fast = v.loc["fast clients"]         # the client's ceiling: b may be as fast as a
    assert not fast.ranked and fast.tied == "b" and "no ranking: a (b within 10%)" in fast.says
    assert "load generator's ceiling" in fast.says and fast["last"] == "c"
    wait = v.loc["backend 10 ms"]
    assert not wait.ranked and "no speed ranking" in wait.says and wait["last"] == "b"
    idle = v.loc["idle clients"]         # failing requests is no lead
    assert idle.ranked and idle.leader == "b" and idle.failed == "a" and "some requests failed: a" in idle.says
    assert showdown.verdict(df, clients=10).leader.tolist() == ["a"]


@pytest.mark.parametrize("workloads", [["nope"], []])
def test_an_unknown_workload_is_one_sentence(workloads):
    with pytest.raises(NetlabError, match="the workloads are fast clients"):
        showdown.showdown(["epoll"], [1], workloads, 0.1)


def test_cli_json_and_mistakes(capsys):
    assert showdown.main(["--models", "epoll", "--workloads", "fast clients",
                          "--concurrency", "5", "--duration", "0.3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["workload"], r["concurrency"]) for r in rows] == [("epoll", "fast clients", 5)]
    assert rows[0]["requests"] > 0 and rows[0]["why"].startswith("server used")
    assert showdown.main(["--models", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
