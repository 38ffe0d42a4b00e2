"""netlab: every classic server model, one protocol, one lifecycle, honest measurements.

    import netlab
    netlab.setup()                           # one line on this machine; first cell of a notebook
    netlab.models()                          # the server models, in course order
    with netlab.serve("epoll", backend_ms=10) as srv:
        print(netlab.fetch(srv.url).body)
        print(netlab.measure(srv, concurrency=100, duration=2))   # with what limited it
    netlab.sweep(["threaded", "epoll"], concurrency=[1, 10, 100])  # a DataFrame, a row per run
    netlab.check(my_server)                  # your own server against netlab's promises
"""

__version__ = "0.1.0"

from .client import Reply, fetch, post  # noqa: E402
from .env import quick_mode, setup  # noqa: E402
from .lifecycle import Server, ServerError, serve  # noqa: E402
from .servers import MODELS, Model, NetlabError  # noqa: E402
from .servers import get as model  # noqa: E402
from .servers.blocking import handle_connection  # noqa: E402
from .workload import App, Workload, WorkloadError  # noqa: E402
from . import load, plots, results, timeline  # noqa: E402
from .check import check  # noqa: E402
from .harness import measure, sweep  # noqa: E402
from .monitor import Monitor  # noqa: E402


def models(available_only: bool = False) -> list:
    """The server models in the order the course meets them."""
    return [m for m in MODELS if m.available or not available_only]


def source(obj):
    """The code of a model (by name) or of any function or module, shown highlighted in a
    notebook (plain text elsewhere): read the real thing, not a copy of it."""
    import inspect
    target = model(obj).module if isinstance(obj, str) else obj
    text = inspect.getsource(target)
    try:
        from IPython.display import Code
        return Code(text, language="python")
    except ImportError:
        return text


__all__ = ["App", "Model", "Monitor", "NetlabError", "Reply", "Server", "ServerError", "Workload",
           "WorkloadError", "check", "fetch", "handle_connection", "load", "measure",
           "model", "models", "plots", "post", "quick_mode", "results", "serve", "setup", "source",
           "sweep",
           "timeline",
           "__version__"]
