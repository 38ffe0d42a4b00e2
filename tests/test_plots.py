"""Plots over sweep tables: titled with the workload, marked with what limited each point."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from netlab import NetlabError, plots  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def fonts_loaded():
    """matplotlib opens (and caches) its font files on the first drawing: not a leak."""
    fig = plots.throughput(table())
    fig.canvas.draw()
    plt.close(fig)


def table():
    rows = []
    for model, base, lim in (("threaded", 3000, "server-cpu"), ("epoll", 9000, "client-cpu")):
        for c in (1, 10, 100):
            for rep in range(2):
                rows.append(dict(model=model, concurrency=c, repeat=rep, rps=base * (1 + rep / 10),
                                 p50_ms=1.0 * c, p99_ms=3.0 * c, mode="close", backend_ms=0.0,
                                 cpu_us=0.0, limited_by=lim if c > 1 else "neither",
                                 server_cpu_us_per_req=100.0, ctx_per_req=2.0,
                                 rss_kb_per_conn=4.0, server_threads_max=c))
    return pd.DataFrame(rows)


def test_throughput_plot_has_a_line_per_model_and_says_the_workload_and_limits():
    fig = plots.throughput(table())
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["threaded", "epoll"]
    title = fig._suptitle.get_text()
    assert "a connection per request" in title
    assert "threaded: " in ax.get_title() and "client-cpu" in ax.get_title()
    plt.close(fig)


def test_latency_and_resources_and_bars():
    df = table()
    fig = plots.latency(df)
    assert fig.axes[0].get_yscale() == "log"
    assert len(fig.axes[0].get_legend().get_texts()) == 4      # 2 models x p50/p99
    plt.close(fig)
    fig = plots.resources(df)
    assert len(fig.axes) == 4
    plt.close(fig)
    fig = plots.bars(df[df.concurrency == 10])
    assert len(fig.axes[0].patches) == 2
    assert "10 concurrent clients" in fig.axes[0].get_title()
    plt.close(fig)


def test_describe_workload_names_what_the_runs_share():
    df = table()
    df["backend_ms"] = 10.0
    assert plots.describe_workload(df) == "a connection per request, backend 10 ms"
    df.loc[0, "backend_ms"] = 0
    assert "backend_ms varies" in plots.describe_workload(df)


def test_plots_refuse_a_table_they_cannot_draw():
    with pytest.raises(NetlabError, match="columns"):
        plots.throughput(pd.DataFrame({"x": [1]}))
    with pytest.raises(NetlabError, match="empty"):
        plots.throughput(table().iloc[0:0])
