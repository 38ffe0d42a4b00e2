"""asyncio: one thread; coroutines that look blocking, driven by an event loop.

Concurrency: each connection is a coroutine; every ``await`` hands control back to the loop
(epoll on Linux, kqueue on macOS), which resumes whichever coroutine's socket or timer is
ready. The handler reads like the blocking one in ``blocking.py``, plus ``await``.
"""

import asyncio
import os
import signal

from .forks import STOP_SIGNALS, run_workers

MAX_REDIS = 64          # connections to the guestbook's Redis, at most, per process


async def _guestbook(rds, app, req, commands) -> bytes:
    """The guestbook's Redis calls, awaited together (each on a connection of the client's
    pool): the loop serves others until the replies come."""
    import redis.asyncio as aioredis
    from ..guestbook import why
    try:
        replies = await asyncio.gather(*(rds.execute_command(*cmd) for cmd in commands))
        return app.backend_answer(req, list(replies))
    except (aioredis.RedisError, OSError) as e:
        return app.backend_answer(req, why(e))


async def _handle(reader, writer, app, rds=None):
    parser = app.new_parser()
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for req in parser.feed(data):
                if app.backend_s and not req.error:
                    await asyncio.sleep(app.backend_s)     # a timer: the loop serves others
                todo = app.backend_commands(req) if rds is not None else None
                if type(todo) is list:                     # Redis, awaited (redis.asyncio)
                    writer.write(await _guestbook(rds, app, req, todo))
                else:
                    writer.write(todo or app.respond(req))
                await writer.drain()
                if not req.keep_alive:
                    return
    except OSError:               # the client reset: only this connection ends
        return
    except asyncio.CancelledError:
        # the server is stopping and asyncio cancels every connection's task; ending quietly
        # keeps asyncio's stream machinery from logging each one as an error
        return
    finally:
        writer.close()


async def _main(listen, app, held):
    loop = asyncio.get_running_loop()
    stopping = loop.create_future()
    if held is not None:
        # a stop signal becomes an event of the loop, not an exception thrown into whatever
        # coroutine happens to be running
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, lambda: stopping.done() or stopping.set_result(None))
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    # asyncio calls listen() again, with a backlog of 100 unless told: keep the harness's
    rds = None
    if app.workload.redis:
        import redis.asyncio as aioredis
        from ..guestbook import parse_address
        host, port = parse_address(app.workload.redis)
        # a bounded pool that makes a request wait for a free connection: the default pool
        # refuses ("Too many connections") as soon as 100 requests gather their calls at once
        # (and no retries: redis-py's default backs off ~4 s before it admits Redis is gone)
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        pool = aioredis.BlockingConnectionPool(host=host, port=port, max_connections=MAX_REDIS,
                                               timeout=5, socket_timeout=5,
                                               socket_connect_timeout=5,
                                               retry=Retry(NoBackoff(), 0))
        rds = aioredis.Redis(connection_pool=pool)
    server = await asyncio.start_server(lambda r, w: _handle(r, w, app, rds), sock=listen,
                                        limit=65536, backlog=4096)
    await stopping                # then asyncio.run cancels the connections' tasks
    if held is not None:          # one stop is enough: repeats (the group's SIGTERM, the
        for sig in STOP_SIGNALS:  # supervisor's) must not hit a loop that is closing
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
    server.close()
    if rds is not None:
        await rds.aclose()


def _run(listen, app, uvloop=False):
    # hold stop signals until the loop can take them (they are delivered then, not lost)
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS) if os.name == "posix" else None
    if uvloop:                  # the same coroutines on libuv's loop (Node.js's), in C
        import uvloop as _uvloop
        _uvloop.run(_main(listen, app, held))
    else:
        asyncio.run(_main(listen, app, held))


def serve(listen, app, workers=1, uvloop=False):
    run_workers(workers, _run, listen, app, uvloop)
