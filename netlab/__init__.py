"""netlab: every classic server model, one protocol, one lifecycle, honest measurements.

    import netlab
    netlab.models()                          # the server models, in course order
    with netlab.serve("epoll", backend_ms=10) as srv:
        print(srv.url)
"""

from .lifecycle import Server, ServerError, serve
from .servers import MODELS, Model, NetlabError
from .servers import get as model
from .workload import App, Workload

__version__ = "0.1.0"


def models(available_only: bool = False) -> list:
    """The server models in the order the course meets them."""
    return [m for m in MODELS if m.available or not available_only]


__all__ = ["App", "Model", "NetlabError", "Server", "ServerError", "Workload", "model", "models",
           "serve", "__version__"]
