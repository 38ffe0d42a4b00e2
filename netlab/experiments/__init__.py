"""The experiments: each measures one claim of the course, live, on this machine.

    fdbench      CPU per readiness wait against the number of watched fds: select, poll, epoll
                 (TLPI table 63-9 repeated here)
    herd         the thundering herd: which pre-forked workers are woken per connection
    acceptlock   the pre-threaded pool: waits on the accept() mutex against pool size
    c10k         10,000 idle connections: memory per connection and the active clients' latency
    syscalls     system calls per request: each model's architecture as the kernel sees it

Import the one you need (``from netlab.experiments import fdbench``); this package imports
none of them, so loading one never pays for the others.
"""
