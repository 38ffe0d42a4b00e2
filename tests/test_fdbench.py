"""fdbench (TLPI 63-9 live) and its widget: the shapes the course claims, with margins a noisy
VM keeps; refusals are rows, never crashes; nothing is left behind."""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import sys

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from netlab import NetlabError  # noqa: E402
from netlab.__main__ import _Parser  # noqa: E402
from netlab.experiments import fdbench  # noqa: E402
from netlab.widgets import fd_explorer, values_at  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(fdbench.select, "epoll"), reason="needs Linux")

# DESIGN.md §4: TLPI table 63-9, CPU seconds per 100,000 operations
BOOK = {"poll": (0.61, 2.9, 35, 990), "select": (0.73, 3.0, 35, 930), "epoll": (0.41, 0.42, 0.53, 0.66)}


@pytest.fixture(scope="module")
def quick_run():
    """One quick-mode run shared by the shape tests (~5 s): the DataFrame, and the CPU seconds
    (user, sys) each point's worker process spent in all, from the kernel's count of the
    children this process has waited for."""
    worker_cpu, spawn = {}, fdbench._spawn

    def counted(mechanism, fds, budget):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        res = spawn(mechanism, fds, budget)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        worker_cpu[mechanism, fds] = (after.ru_utime - before.ru_utime,
                                      after.ru_stime - before.ru_stime)
        return res

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NETLAB_QUICK", "1")
        mp.setattr(fdbench, "_spawn", counted)
        return fdbench.measure(), worker_cpu


@pytest.fixture(scope="module")
def quick(quick_run):
    return quick_run[0]


def cost(df, mech, n):
    row = df[(df["mechanism"] == mech) & (df["fds"] == n)]
    assert len(row) == 1 and row["status"].iloc[0] == "measured", row.to_dict("records")
    return row["cpu_s_per_100k"].iloc[0]


def test_quick_run_has_every_point(quick):
    assert list(quick.columns) == fdbench.COLUMNS
    assert len(quick) == len(fdbench.MECHANISMS) * len(fdbench.QUICK_SIZES)
    assert set(quick["source"]) == {"measured"}
    assert quick.attrs["budget_s"] == fdbench.QUICK_BUDGET
    ok = quick[quick["status"] == "measured"]
    assert (ok["ops"] >= 20).all() and (ok["cpu_s_per_100k"] > 0).all()


def test_cpu_is_the_measured_loops_user_and_sys(quick_run):
    """Each point's user, sys and total CPU fit inside what its worker process spent (the
    kernel's count, taken here, not by fdbench), and the measured loop is the bulk of it: the
    worker's startup and calibration are small next to the ~0.2 CPU s measured (the loop is
    over half of the worker's CPU; a fifth is asserted)."""
    quick, worker_cpu = quick_run
    ok = quick[quick["status"] == "measured"]
    assert len(ok) >= 10
    slack = 0.005                     # rounding only: the kernel's user and sys never go down
    for r in ok.itertuples():
        user, sys_, cpu = (v * r.ops / 1e5 for v in (r.user_s_per_100k, r.sys_s_per_100k,
                                                      r.cpu_s_per_100k))
        w_user, w_sys = worker_cpu[r.mechanism, r.fds]
        point = f"{r.mechanism} at {r.fds}: user {user:.3f} sys {sys_:.3f} cpu {cpu:.3f} s, " \
                f"its worker {w_user:.3f} + {w_sys:.3f} s"
        assert 0 <= user <= w_user + slack and 0 <= sys_ <= w_sys + slack, point
        assert (w_user + w_sys) / 5 <= cpu <= w_user + w_sys + slack, point


def test_poll_grows_with_n_and_the_growth_is_kernel_time(quick):
    big = max(fdbench.QUICK_SIZES)
    assert cost(quick, "poll", 1000) >= 3 * cost(quick, "poll", 10)
    assert cost(quick, "poll", big) >= 3 * cost(quick, "poll", 10)
    row = quick[(quick["mechanism"] == "poll") & (quick["fds"] == big)].iloc[0]
    assert row["sys_s_per_100k"] > row["user_s_per_100k"]


def test_epoll_stays_flat(quick):
    assert cost(quick, "epoll", max(fdbench.QUICK_SIZES)) <= 3 * cost(quick, "epoll", 10)


def test_one_repeat_is_todays_row_plus_repeats_and_spread(quick):
    ok = quick[quick["status"] == "measured"]
    assert (ok["repeats"] == 1).all() and (ok["spread"] == 0).all()
    assert all(runs == (cpu,) for runs, cpu in zip(ok["cpu_s_runs"], ok["cpu_s_per_100k"]))
    refused = quick[quick["status"] == "refused"]
    assert (refused["repeats"] == 0).all() and refused["spread"].isna().all()
    assert quick.attrs["repeats"] == 1


def test_repeats_give_medians_spread_and_every_run(monkeypatch):
    """Each point runs `repeats` times, in turn (all points once, then again), each run in its
    own worker; the numbers are the medians, `spread` is (max - min) / median of the CPU; a
    refused point is tried once."""
    calls = []
    cpu = {("poll", 10): [4.0, 1.0, 2.0], ("poll", 100): [10.0, 30.0, 20.0]}

    def fake(mechanism, fds, budget):
        calls.append((mechanism, fds))
        if mechanism == "select":
            return dict(status="refused", reason=fdbench.FD_SETSIZE_REASON)
        run = sum(c == (mechanism, fds) for c in calls) - 1
        s = cpu[mechanism, fds][run]                  # CPU seconds for 100k ops: 3/4 of it sys
        return dict(status="measured", ops=100_000 + run, user_s=s / 4, sys_s=s * 3 / 4,
                    wall_s=s, ready_by="eventfd")

    monkeypatch.setattr(fdbench, "_spawn", fake)
    lines = []
    df = fdbench.measure(sizes=[100, 10], mechanisms=["poll", "select"], budget=0.1, repeats=3,
                         progress=lines.append)
    assert calls == [("poll", 10), ("poll", 100), ("select", 10), ("select", 100),
                     ("poll", 10), ("poll", 100), ("poll", 10), ("poll", 100)]
    assert len(lines) == 12 and "(repeat 3 of 3)" in lines[-1]
    assert list(df.columns) == fdbench.COLUMNS and df.attrs["repeats"] == 3
    at = df.set_index(["mechanism", "fds"])
    p10, p100 = at.loc[("poll", 10)], at.loc[("poll", 100)]
    assert p10.repeats == 3 and p10.cpu_s_runs == pytest.approx((4.0, 1.0, 2.0), rel=1e-4)
    assert p10.cpu_s_per_100k == pytest.approx(2.0, rel=1e-4)       # the median, not the mean
    assert p10.us_per_op == pytest.approx(20.0, rel=1e-4)
    assert p10.sys_s_per_100k == pytest.approx(1.5, rel=1e-4) and p10.sys_share == pytest.approx(0.75)
    assert p10.spread == pytest.approx((4.0 - 1.0) / 2.0, rel=1e-4)
    assert p100.cpu_s_per_100k == pytest.approx(20.0, rel=1e-4) and p100.ops == 100_001
    assert p100.spread == pytest.approx(1.0, rel=1e-4)
    sel = at.loc[("select", 10)]
    assert sel.status == "refused" and sel.repeats == 0 and math.isnan(sel.spread)


def test_repeats_of_a_real_run(monkeypatch):
    monkeypatch.setenv("NETLAB_QUICK", "1")
    df = fdbench.measure(sizes=[10, 1000], mechanisms="poll", budget=0.05, repeats=3)
    for r in df.itertuples():
        runs = sorted(r.cpu_s_runs)
        assert r.status == "measured" and r.repeats == 3 and len(runs) == 3
        assert r.cpu_s_per_100k == runs[1]
        assert r.spread == pytest.approx((runs[2] - runs[0]) / runs[1])
    # the ratio between the two points holds however noisy each value is (margins: a 2-core VM)
    assert cost(df, "poll", 1000) >= 3 * cost(df, "poll", 10)


def test_select_is_refused_past_fd_setsize(quick):
    assert cost(quick, "select", 1000) > 0
    row = quick[(quick["mechanism"] == "select") & (quick["fds"] == 2000)].iloc[0]
    assert row["status"] == "refused" and row["reason"] == fdbench.FD_SETSIZE_REASON
    assert math.isnan(row["cpu_s_per_100k"])


def test_select_watches_1000_fds_however_many_the_caller_holds():
    """A kernel or test process may hold hundreds of fds; the worker must not inherit them, or
    its 1,000 watched fds would be numbered past FD_SETSIZE and select() refused."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    held = len(os.listdir("/proc/self/fd"))
    if soft != resource.RLIM_INFINITY and soft < held + 900 + 64:
        pytest.skip(f"the open-file limit ({soft}) leaves no room for 900 more fds")
    r, w = os.pipe()
    extra = []
    try:
        for _ in range(900):
            extra.append(os.dup(r))
            os.set_inheritable(extra[-1], True)   # what a careless fork/exec would pass on
        assert max(extra) + 1000 >= fdbench.FD_SETSIZE   # here, 1,000 more would be refused
        row = fdbench.measure(sizes=[1000], mechanisms=["select"], budget=0.05).iloc[0]
    finally:
        for fd in (*extra, r, w):
            os.close(fd)
    assert row["status"] == "measured", row["reason"]
    assert row["ops"] >= 20


def test_select_watches_1000_pipes_without_eventfd():
    """Without os.eventfd (Python < 3.10, macOS) each watched fd is a pipe's read end: the write
    ends must not take the numbers between them, or the 1,000th read end is near fd 2,000."""
    job = json.dumps(dict(mechanism="select", fds=1000, budget=0.05))
    no_eventfd = ("import os, runpy, sys; os.__dict__.pop('eventfd', None); "
                  "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    out = subprocess.run([sys.executable, "-I", "-c", no_eventfd, fdbench.__file__, "--worker",
                          job], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["status"] == "measured" and res["ready_by"] == "pipe", res
    assert res["ops"] >= 20


def test_more_fds_than_the_limit_is_a_refused_row():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]      # the worker raises its soft one
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no open-file limit here")
    df = fdbench.measure(sizes=[hard + 1], mechanisms=["epoll"], budget=0.05)
    row = df.iloc[0]
    assert row["status"] == "refused"
    assert f"the limit is {hard:,} (ulimit -n)" in row["reason"] and "needs" in row["reason"]


def test_a_laptops_soft_fd_limit_is_raised_for_the_measurement():
    """Most Linux desktops start with a soft limit of 1,024 and a far higher hard one: 2,000 fds
    must still be measured, since raising a soft limit to the hard one needs no privileges."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2000 + 64:
        pytest.skip(f"the hard open-file limit ({hard}) is below 2,064")
    if not shutil.which("prlimit"):
        pytest.skip("prlimit is not installed (apt-get install util-linux)")
    job = json.dumps(dict(mechanism="epoll", fds=2000, budget=0.05))
    out = subprocess.run(["prlimit", "--nofile=1024:", "--", sys.executable, fdbench.__file__,
                          "--worker", job], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "measured"


def test_a_missing_mechanism_is_unavailable_with_the_reason(monkeypatch):
    monkeypatch.delattr(fdbench.select, "epoll")
    row = fdbench.measure(sizes=[10], mechanisms=["epoll"]).iloc[0]
    assert row["status"] == "unavailable" and "epoll" in row["reason"]


@pytest.mark.parametrize("kwargs", [dict(mechanisms=["kqueue"]), dict(sizes=[0]), dict(sizes=[]),
                                    dict(sizes=[10.5]), dict(budget=0), dict(budget="1"),
                                    dict(repeats=0), dict(repeats=2.0), dict(repeats=True)])
def test_bad_arguments_are_one_sentence(kwargs):
    with pytest.raises(NetlabError):
        fdbench.measure(**kwargs)


def test_reference_is_the_book():
    ref = fdbench.reference()
    assert len(ref) == 12 and set(ref["source"]) == {fdbench.TLPI}
    for mech, values in BOOK.items():
        got = ref[ref["mechanism"] == mech].sort_values("fds")
        assert list(got["fds"]) == [10, 100, 1000, 10000]
        assert list(got["cpu_s_per_100k"]) == list(values)
        assert list(got["us_per_op"]) == [v * 10 for v in values]


def test_table_long_and_like_the_book(quick):
    both = fdbench.table(quick)
    assert set(both["source"]) == {"measured", fdbench.TLPI} and len(both) == len(quick) + 12
    wide = fdbench.table(quick, wide=True)
    assert list(wide.index) == [10, 100, 1000, 2000, 10000]
    assert wide.loc[10000, ("poll", fdbench.TLPI)] == 990
    assert wide.loc[1000, ("epoll", "here")] == cost(quick, "epoll", 1000)
    assert math.isnan(wide.loc[2000, ("select", "here")])        # refused: blank


def test_plot_draws_measured_solid_reference_dashed_refused_and_mark(quick):
    fig = fdbench.plot(quick, mark=500)
    try:
        ax = fig.axes[0]
        lines = {ln.get_label(): ln for ln in ax.lines}
        for mech in fdbench.MECHANISMS:
            assert lines[f"{mech} (this machine)"].get_linestyle() == "-"
            assert lines[f"{mech} ({fdbench.TLPI})"].get_linestyle() == "--"
        refused = [ln for ln in ax.lines if ln.get_gid() == "refused"]
        assert len(refused) == 1 and list(refused[0].get_xdata()) == [2000]
        mark = [ln for ln in ax.lines if ln.get_gid() == "mark"]
        assert len(mark) == 1 and list(mark[0].get_xdata()) == [500, 500]
        assert ax.get_xscale() == ax.get_yscale() == "log"
        assert "TLPI 63-9 method" in ax.get_title() and "kernel" in ax.get_title()
    finally:
        plt.close(fig)


def test_plot_draws_each_points_repeats_as_a_bar(monkeypatch):
    monkeypatch.setenv("NETLAB_QUICK", "1")
    df = fdbench.measure(sizes=[10, 100], mechanisms="poll", budget=0.02, repeats=3)
    fig = fdbench.plot(df)
    try:
        bars = [c for c in fig.axes[0].collections if c.get_gid() == "spread"]
        assert len(bars) == 1 and len(bars[0].get_segments()) == 2
        for seg, runs in zip(bars[0].get_segments(), df["cpu_s_runs"]):
            assert seg[0][1] == pytest.approx(min(runs)) and seg[1][1] == pytest.approx(max(runs))
    finally:
        plt.close(fig)


def test_values_at_keeps_this_machine_and_the_book_apart():
    import pandas as pd
    rows = [dict(mechanism="poll", fds=n, cpu_s_per_100k=v, status="measured", reason="",
                 source="measured", repeats=1, spread=0.0) for n, v in ((10, 1.0), (1000, 100.0))]
    rows.append(dict(mechanism="select", fds=2000, cpu_s_per_100k=float("nan"),
                     status="refused", reason=fdbench.FD_SETSIZE_REASON, source="measured"))
    df = pd.DataFrame(rows, columns=fdbench.COLUMNS)
    at = values_at(1000, df).set_index("mechanism")
    assert at.loc["poll", "here_how"] == "measured" and at.loc["poll", "here_repeats"] == 1
    assert at.loc["poll", "here_spread"] == 0
    at = values_at(100, df).set_index("mechanism")
    assert at.loc["poll", "here_how"] == "interpolated" and math.isnan(at.loc["poll", "here_spread"])
    assert at.loc["poll", "here_s_per_100k"] == pytest.approx(10.0)
    assert at.loc["poll", "tlpi_s_per_100k"] == 2.9 and at.loc["poll", "tlpi_how"] == "the book's row"
    # not measured here: the book's value stays in the book's column, never in this machine's
    assert math.isnan(at.loc["epoll", "here_s_per_100k"]) and at.loc["epoll", "tlpi_s_per_100k"] == 0.42
    at = values_at(3000, df).set_index("mechanism")
    assert fdbench.FD_SETSIZE_REASON in at.loc["select", "here_how"]
    assert math.isnan(at.loc["poll", "here_s_per_100k"])              # beyond what was measured
    assert at.loc["poll", "tlpi_how"] == "interpolated between the book's rows"
    at = values_at(15_000, df).set_index("mechanism")
    assert at.loc["poll", "tlpi_how"].startswith("extrapolated past the book's rows")


def test_widget_slider_replots_and_button_measures(quick, monkeypatch, capsys):
    monkeypatch.setenv("NETLAB_QUICK", "1")
    figures = len(plt.get_fignums())
    w = fd_explorer(quick)
    first = w.figure
    w.slider.value = 1000
    assert w.figure is not first and w.n == 1000
    mark = [ln for ln in w.figure.axes[0].lines if ln.get_gid() == "mark"]
    assert list(mark[0].get_xdata()) == [1000, 1000]
    v = w.values.set_index("mechanism")
    assert (v["fds"] == 1000).all() and (v["here_how"] == "measured").all()
    assert v.loc["poll", "here_s_per_100k"] == cost(quick, "poll", 1000)
    assert v.loc["poll", "tlpi_s_per_100k"] == 35
    w.slider.value = 300
    assert (w.values["here_how"] == "interpolated").all()
    w.slider.value = 50
    w.button.click()
    v = w.values.set_index("mechanism")
    assert (v["here_how"] == "measured").all() and (v["fds"] == 50).all()
    assert (w.measured["fds"] == 50).sum() == 3 and not w.button.disabled
    assert "measured at 50 fds" in w.status.value
    assert len(plt.get_fignums()) == figures                  # every replaced figure closed
    capsys.readouterr()


def test_widget_button_measures_each_point_repeats_times(quick, monkeypatch):
    runs = []

    def fake(mechanism, fds, budget):
        runs.append((mechanism, fds))
        s = 1.0 + len(runs) % 2          # 2, 1, 2, ... CPU s per 100k waits: each point varies
        return dict(status="measured", ops=100_000, user_s=0.0, sys_s=s, ready_by="eventfd")

    monkeypatch.setattr(fdbench, "_spawn", fake)
    w = fd_explorer(quick, repeats=3)
    w.slider.value = 40
    w.button.click()
    assert len(runs) == 9 and set(runs) == {(m, 40) for m in fdbench.MECHANISMS}
    v = w.values.set_index("mechanism")
    assert (v["here_how"] == "measured").all() and (v["here_repeats"] == 3).all()
    assert (v["here_spread"] > 0).all() and "median of 3 runs, spread" in w.status.value
    plt.close("all")


def cli_args(*argv):
    p = _Parser(prog="python -m netlab")
    fdbench.add_cli(p.add_subparsers(dest="command", parser_class=_Parser))
    return p.parse_args(["fdbench", *argv])


def test_cli_json_and_table(capsys):
    args = cli_args("--sizes", "10,2000", "--mechanisms", "select,epoll", "--budget", "0.05",
                    "--json")
    assert args.func(args) == 0
    rows = json.loads(capsys.readouterr().out)
    got = {(r["mechanism"], r["fds"]): r["status"] for r in rows}
    assert got == {("select", 10): "measured", ("select", 2000): "refused",
                   ("epoll", 10): "measured", ("epoll", 2000): "measured"}
    args = cli_args("--sizes", "2000", "--mechanisms", "select", "--budget", "0.05")
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "CPU seconds per 100,000 waits" in out and fdbench.FD_SETSIZE_REASON in out


def test_cli_repeats_show_the_spread(capsys):
    args = cli_args("--sizes", "10", "--mechanisms", "epoll", "--budget", "0.05", "--repeats", "2")
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "median of 2 repeats" in out and "spread" in out and "%" in out.splitlines()[-1]


def test_cli_mistakes_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        cli_args("--sizes", "ten")
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "--sizes" in err


def test_wired_into_python_m_netlab():
    out = subprocess.run([sys.executable, "-m", "netlab", "fdbench", "--sizes", "10",
                          "--mechanisms", "epoll", "--budget", "0.05", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["status"] == "measured"
