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
    t = showdown.marked(df)
    assert t.loc["a", ("fast clients", 1)] == "10 S"
    assert t.loc["a", ("fast clients", 2)] == "20 C !"
    assert t.loc["b", ("CPU 500 µs", 1)] == "30 W"
    assert t.loc["b", ("CPU 500 µs", 2)] == "40 ?"
    assert showdown.marked(df, per_request=True).loc["a", ("fast clients", 2)] == "— C !"
    assert list(t.columns.get_level_values(0).unique()) == ["fast clients", "CPU 500 µs"]


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
