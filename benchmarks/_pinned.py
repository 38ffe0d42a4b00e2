"""One keep-alive (or connection-per-request) run against a server pinned to core 0, with the
load on core 1: shared by the benchmark scripts that compare servers on one core."""

from __future__ import annotations

import shutil

import netlab
from netlab import loadtools
from netlab.monitor import Monitor, pin

TOOL = "wrk -t1" if shutil.which("wrk") else "netlab's generator"


def pinned_load(srv, seconds: float, keepalive: bool = True, connections: int = 50):
    """(rate, requests, the server's Usage): wrk on core 1 after a 1 s warm-up when installed,
    else netlab's generator (pin=True)."""
    pin(srv, [0])
    if shutil.which("wrk"):
        loadtools.wrk(srv.url, connections, 1, keepalive=keepalive, cpus=[1])      # warm-up
        with Monitor(srv, cores=1) as mon:
            r = loadtools.wrk(srv.url, connections, seconds, keepalive=keepalive, cpus=[1])
        return r.rps, r.requests, mon.usage
    r = netlab.measure(srv, connections, duration=seconds, keepalive=keepalive, pin=True)
    return r.load.rps, r.load.requests, r.server
