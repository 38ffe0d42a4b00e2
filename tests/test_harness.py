"""measure() and sweep(): both sides watched, and an honest verdict on what limited each run."""

import pytest

import netlab
from netlab import NetlabError, results


def test_measure_counts_exactly_and_a_busy_server_is_named():
    # 1 ms of CPU per request in one loop: at least 0.3 s of server CPU, 30 ticks of the 10 ms
    # clock, while the clients mostly wait for answers: the server's core is the limit
    with netlab.serve("epoll", cpu_us=1000) as srv:
        r = netlab.measure(srv, 4, requests=300)
    assert r.load.requests == 300 and r.load.error_count == 0
    assert r.model == "epoll" and r.server.cpu_s >= 0.25 and r.server.procs_max == 1
    assert r.limited_by == results.SERVER_CPU, r.why
    assert "server used" in r.why and r.machine["cpus"]
    row = r.row()
    assert row["requests"] == 300 and row["server_cpu_us_per_req"] >= 800
    assert "limited by server-cpu" in str(r)


def test_a_run_shorter_than_the_sampling_interval_warns_about_its_peaks():
    # 20 requests end long before the first of the 10 s samples: peaks come from the two ends only
    with netlab.serve("epoll") as srv:
        r = netlab.measure(srv, 2, requests=20, interval=10)
    assert r.load.requests == 20 and r.server.samples == 2
    assert "saw nothing during the run" in str(r)


def test_a_latency_bound_run_is_limited_by_neither():
    # 50 ms of backend wait per request and two clients: both sides mostly sleep
    with netlab.serve("epoll", backend_ms=50) as srv:
        r = netlab.measure(srv, 2, duration=1.0)
    assert r.limited_by == results.NEITHER, r.why
    assert 20 <= r.load.requests <= 45      # ~2 / 0.05 s = 40 per second at most


@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="needs two cores")
def test_a_client_that_cannot_keep_up_is_named():
    # one generator process against two server processes that each do the same work per
    # request: the client fills its core first, the server has two. On 2 cores the three share
    # them, so the verdict comes from "they competed": enough connections that nobody waits
    # on a round trip keep the machine full (32 left it 83% busy once on a CI runner)
    with netlab.serve("epoll", workers=2) as srv:
        r = netlab.measure(srv, 128, duration=1.0, keepalive=True, processes=1)
    assert r.load.requests > 0
    assert r.limited_by == results.CLIENT_CPU, r.why


def test_pinning_puts_the_server_on_core_0():
    import psutil
    with netlab.serve("epoll") as srv:
        netlab.measure(srv, 2, requests=50, pin=True)
        assert psutil.Process(srv.pid).cpu_affinity() == [0]


def test_sweep_gives_a_row_per_run_and_warns_on_spread(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "DATA_DIR", tmp_path)
    df = netlab.sweep(["iterative", "epoll"], concurrency=[1, 4], requests=100, repeats=2,
                      warmup=0.1, save_as="unit-sweep", spread=0.0)
    assert len(df) == 2 * 2 * 2
    assert set(df["model"]) == {"iterative", "epoll"}
    assert (df["requests"] == 100).all() and (df["errors"] == 0).all()
    assert set(df["repeat"]) == {0, 1}
    # a threshold of 0 makes any two real runs disagree: one warning per model and level,
    # naming them, so a sweep that drops or misroutes the warning fails here
    warned = sorted(w.split(":")[0] for w in df.attrs["warnings"])
    assert warned == ["epoll c=1 ", "epoll c=4 ", "iterative c=1 ", "iterative c=4 "], warned
    assert all("repeats disagree" in w for w in df.attrs["warnings"])
    saved, meta = results.load(tmp_path / "runs" / "unit-sweep.csv")
    assert len(saved) == 8 and meta["params"]["repeats"] == 2


def test_measure_and_sweep_refuse_bad_input_with_one_sentence():
    with pytest.raises(NetlabError, match="running server"):
        netlab.measure("epoll")
    with pytest.raises(NetlabError, match="concurrency"):
        netlab.sweep(["epoll"], concurrency=[0])
    with pytest.raises(NetlabError, match="repeats"):
        netlab.sweep(["epoll"], repeats=0)
    with pytest.raises(NetlabError):
        netlab.sweep(["no-such-model"], requests=10)


def test_sweep_can_start_a_fresh_server_per_level():
    df = netlab.sweep(["iterative"], concurrency=[1, 2], requests=20, warmup=0,
                      fresh_server=True, workloads=[{"backend_ms": 5}])
    assert len(df) == 2 and (df["requests"] == 20).all()
    assert df["backend_ms"].tolist() == [5, 5]


def test_holding_idle_connections_is_not_counted_as_request_work():
    # accepting 500 idle connections happens before the measured window starts
    with netlab.serve("threaded") as srv:
        r = netlab.measure(srv, 2, requests=100, idle=500)
    assert r.load.requests == 100 and r.load.params["idle_connected"] == 500
    assert r.server.threads_max >= 500
    assert r.server.fds_max >= 500


def test_the_warm_up_leaves_no_request_in_flight_for_the_first_level():
    """A duration-bound warm-up abandoned its last request when its clock stopped: behind a slow
    backend, the forking server's child still serving it was counted by the first level (3
    processes at peak with 1 client). Whole requests only: with 1 client, at most 1 child."""
    df = netlab.sweep(["forking"], concurrency=[1], requests=3, warmup=0.45,
                      workloads=[{"backend_ms": 300}])
    assert df["requests"].tolist() == [3]
    assert df["server_procs_max"].max() <= 2, "a warm-up request was still being served"
