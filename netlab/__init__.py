"""netlab: every classic server model, one protocol, one lifecycle, honest measurements.

    import netlab
    netlab.setup()                           # one line on this machine; first cell of a notebook
    netlab.models()                          # the server models, in course order
    with netlab.serve("epoll", backend_ms=10) as srv:
        print(netlab.fetch(srv.url).body)
"""

__version__ = "0.1.0"

from .client import Reply, bottleneck, fetch  # noqa: E402
from .env import quick_mode, setup  # noqa: E402
from .lifecycle import Server, ServerError, serve  # noqa: E402
from .servers import MODELS, Model, NetlabError  # noqa: E402
from .servers import get as model  # noqa: E402
from .servers._blocking import handle_connection  # noqa: E402
from .workload import App, Workload, WorkloadError  # noqa: E402


def models(available_only: bool = False) -> list:
    """The server models in the order the course meets them."""
    return [m for m in MODELS if m.available or not available_only]


__all__ = ["App", "Model", "NetlabError", "Reply", "Server", "ServerError", "Workload", "WorkloadError", "bottleneck", "fetch",
           "handle_connection", "model", "models", "quick_mode", "serve", "setup", "__version__"]
