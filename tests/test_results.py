"""Records, percentiles, the limited_by rule, saving and reloading runs."""

import json
import math

import pytest

from netlab import NetlabError
from netlab import results
from netlab.results import LoadResult, Result, Usage, limited_by, percentile


def load_result(**kw):
    d = dict(tool="netlab", url="http://127.0.0.1:1/", mode="close", concurrency=10,
             requests=1000, errors={"refused": 2, "reset": 0}, duration_s=2.0, rps=500.0,
             mean_ms=2.0, p50_ms=1.5, p90_ms=3.0, p99_ms=9.0, p999_ms=12.0, max_ms=20.0,
             timeline=(500, 500), client_cpu_s=0.5, client_cores=1.0)
    d.update(kw)
    return LoadResult(**d)


def usage(**kw):
    d = dict(pid=1, seconds=2.1, cpu_user_s=1.5, cpu_sys_s=0.3, rss_peak_mb=30.0,
             rss_start_mb=20.0, uss_peak_mb=None, pss_peak_mb=None, procs_max=1, threads_max=1,
             fds_max=12, ctx_voluntary=100, ctx_involuntary=50, samples=20, cores=1.0)
    d.update(kw)
    return Usage(**d)


def test_percentiles_are_nearest_rank_on_synthetic_latencies():
    values = sorted(range(1, 1001))                # 1..1000 ms
    assert percentile(values, 50) == 500
    assert percentile(values, 90) == 900
    assert percentile(values, 99) == 990
    assert percentile(values, 99.9) == 999
    assert percentile(values, 100) == 1000
    assert percentile([7.0], 99.9) == 7.0
    assert math.isnan(percentile([], 50))
    # a tail of ten slow requests among 1000 shows at p99.9 and max, not at p50
    lat = sorted([1.0] * 990 + [100.0] * 10)
    assert percentile(lat, 50) == 1.0 and percentile(lat, 99) == 1.0
    assert percentile(lat, 99.9) == 100.0


@pytest.mark.parametrize("server,client,expect", [
    (1.9, 0.2, results.SERVER_CPU),      # a saturated server
    (0.3, 0.95, results.CLIENT_CPU),     # the load generator was the limit
    (0.05, 0.05, results.NEITHER),       # latency-bound: both sides mostly waited
])
def test_limited_by_compares_each_side_with_the_cores_it_had(server, client, expect):
    verdict, why = limited_by(2.0, server * 2.0, 1, client * 2.0, 1, cpus=2)
    assert verdict == expect
    assert "server used" in why and "client" in why


def test_limited_by_names_the_busier_side_when_they_shared_the_machine():
    # neither kept its own (unpinned, 2-core) budget busy, but together they filled the machine
    verdict, why = limited_by(1.0, 1.1, 2, 0.8, 2, cpus=2)
    assert verdict == results.SERVER_CPU and "competed" in why


def test_limited_by_survives_an_unmeasured_side_and_a_zero_length_run():
    assert limited_by(1.0, float("nan"), 1, 0.5, 1)[0] == results.NEITHER
    assert limited_by(0.0, 1.0, 1, 1.0, 1)[0] == results.NEITHER


def test_records_are_immutable_and_flatten_into_one_row():
    lr = load_result()
    with pytest.raises(Exception):
        lr.requests = 5
    row = lr.row()
    assert row["errors"] == 2 and row["err_refused"] == 2 and row["err_timeout"] == 0
    r = Result(model="epoll", workload={"backend_ms": 0, "cpu_us": 0, "body_bytes": None},
               load=lr, server=usage(), limited_by="server-cpu", why="because")
    row = r.row()
    assert row["model"] == "epoll" and row["rps"] == 500.0
    assert row["server_cpu_s"] == pytest.approx(1.8)
    assert row["server_cpu_us_per_req"] == pytest.approx(1.8 / 1000 * 1e6)
    assert row["ctx_per_req"] == pytest.approx(0.15)
    assert row["rss_kb_per_conn"] == pytest.approx(10 * 1024 / 10)
    df = results.frame([r, r])
    assert len(df) == 2 and {"model", "rps", "limited_by", "why"} <= set(df.columns)


def test_a_run_too_short_for_any_sample_says_its_peaks_saw_nothing():
    def result(samples):
        return Result(model="forking", workload={"backend_ms": 0, "cpu_us": 0, "body_bytes": None},
                      load=load_result(), server=usage(samples=samples), limited_by="neither",
                      why="because")
    # a start and an end sample only: children that came and went between them were never seen
    assert not usage(samples=2).peaks_seen and usage(samples=3).peaks_seen
    assert "saw nothing during the run" in result(2).summary()
    assert "saw nothing" not in result(3).summary()
    assert "saw nothing" not in str(result(20))


def test_save_and_load_keep_the_machine_and_parameters(tmp_path):
    lr = load_result()
    path = results.save([lr], "unit-run", directory=tmp_path, concurrency=[10])
    assert path.exists() and path.with_suffix(".json").exists()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["params"] == {"concurrency": [10]}
    assert meta["machine"]["cpus"] and meta["machine"]["kernel"] and meta["machine"]["python"]
    assert meta["rows"] == 1 and "when" in meta and "git_commit" in meta
    df, meta2 = results.load(path)
    assert df["requests"].tolist() == [1000] and meta2 == meta


def test_save_and_load_refuse_bad_names_with_one_sentence(tmp_path):
    with pytest.raises(NetlabError, match="run name"):
        results.save([load_result()], "../escape", directory=tmp_path)
    with pytest.raises(NetlabError, match="no saved run"):
        results.load(tmp_path / "nothing.csv")


def test_spread_warning_only_when_repeats_disagree():
    assert results.spread_warning([100, 105, 98]) is None
    assert "disagree" in results.spread_warning([100, 150, 90])
    assert results.spread_warning([100]) is None


def test_limited_by_counts_only_the_cores_other_processes_left():
    # 0.2 of a core used while other processes kept 1.8 of 2 cores busy: that was all it got
    verdict, why = limited_by(1.0, 0.05, 1, 0.2, 1, cpus=2, others_cores=1.8)
    assert verdict == results.CLIENT_CPU and "other processes left" in why
    assert "used 5% of its 1" in why          # percentages stay of the side's own cores


def test_sig_rounds_to_significant_digits_and_keeps_counts_exact():
    assert results.sig(1656.952133) == "1,660"
    assert results.sig(0.0123456) == "0.0123"
    assert results.sig(99.95) == "100"
    assert results.sig(-0.7) == "-0.700"
    assert results.sig(2.5, digits=2) == "2.5"
    assert results.sig(123456) == "123,456"          # an int is a count
    assert results.sig(float("nan")) == "" and results.sig("epoll") == "epoll"


def test_table_names_units_and_formats_every_number():
    import pandas as pd
    df = pd.DataFrame({"model": ["epoll", "poll"], "rps": [1656.952133, 23.456],
                       "p99_ms": [0.51234, 12.0], "requests": [10, 2000], "mine": [1.23456, 2.0]})
    t = results.table(df, ["model", "rps", "p99_ms", "requests", "mine"], units={"mine": "mine (s)"})
    assert list(t.columns) == ["model", "req/s", "p99 (ms)", "requests ok", "mine (s)"]
    assert t.iloc[0].tolist() == ["epoll", "1,660", "0.512", "10", "1.23"]
    assert t.iloc[1].tolist() == ["poll", "23.5", "12.0", "2,000", "2.00"]
    assert df["rps"].dtype.kind == "f"                # the numeric frame is left alone
