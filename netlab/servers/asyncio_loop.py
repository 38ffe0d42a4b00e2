"""asyncio: one thread; coroutines that look blocking, driven by an event loop.

Concurrency: each connection is a coroutine; every ``await`` hands control back to the loop
(epoll on Linux, kqueue on macOS), which resumes whichever coroutine's socket or timer is
ready. The handler reads like the blocking one in ``_blocking.py``, plus ``await``.
"""

import asyncio

from ._workers import run_workers


async def _handle(reader, writer, app):
    parser = app.new_parser()
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for req in parser.feed(data):
                if app.backend_s and not req.error:
                    await asyncio.sleep(app.backend_s)     # a timer: the loop serves others
                writer.write(app.respond(req))
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


async def _main(listen, app):
    server = await asyncio.start_server(lambda r, w: _handle(r, w, app), sock=listen,
                                        limit=65536)
    async with server:
        await server.serve_forever()


def _run(listen, app):
    asyncio.run(_main(listen, app))


def serve(listen, app, workers=1):
    run_workers(workers, _run, listen, app)
