"""A delaying TCP proxy: latency in user space, where there is no netem.

    from netlab.peers import delay_proxy, redis_server
    with redis_server() as rds, delay_proxy(rds.port, delay_ms=5) as slow:
        netlab.serve("epoll", redis=slow.address)      # every Redis round trip takes 5 ms more

Why: a backend next door answers in microseconds, and then how a server waits for it hardly
matters. Behind a backend with latency, a blocking call holds its thread for every round
trip while an event loop keeps serving, and K calls made one after another take K times as
long as K made at once. The proxy holds each chunk a client sends for ``delay_ms`` before it
passes it on (chunks stay in order; replies pass at once), so each round trip gains the delay
whatever else is in flight, like a longer wire. It is a peer: its own process group, stopped
with nothing left.

Run alone, this file is the proxy (standard library only): python delay.py PORT TARGET DELAY_MS
"""

# Only the standard library at the top: the proxy process runs this file alone (python -I).
import asyncio
import sys

CHUNK = 65536


async def _pipe(reader, writer, delay: float) -> None:
    """Copy reader -> writer, each chunk ``delay`` s after it arrived, in order."""
    loop = asyncio.get_running_loop()
    due = asyncio.Queue()

    async def send_when_due():
        while True:
            when, data = await due.get()
            if data is None:
                break
            wait = when - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(send_when_due())
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            due.put_nowait((loop.time() + delay, data))
        due.put_nowait((loop.time() + delay, None))
        await sender
    except (OSError, asyncio.CancelledError):
        sender.cancel()
    finally:
        try:
            writer.close()
        except OSError:
            pass


async def _main(port: int, target: int, delay: float) -> None:
    async def handle(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, up_writer, delay),
                             _pipe(up_reader, client_writer, 0.0))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"Listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: delay.py PORT TARGET_PORT DELAY_MS (netlab.peers.delay_proxy starts it)")
    try:
        asyncio.run(_main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000))
    except KeyboardInterrupt:
        pass
else:
    from ..arguments import number
    from ..sockets import check_port
    from . import Peer

    def delay_proxy(target_port: int, delay_ms: float, port: int = 0) -> Peer:
        """Start a proxy on 127.0.0.1:``port`` (0: a free one) to 127.0.0.1:``target_port``
        that delays what clients send by ``delay_ms``; its ``address`` is what
        ``serve(redis=...)`` takes."""
        check_port(target_port)
        check_port(port)
        number("delay_ms", delay_ms, 0, 10_000)
        argv = [sys.executable, "-I", __file__, str(port), str(target_port), str(delay_ms)]
        return Peer("delay-proxy", argv, port=port,
                       announce=r"Listening on [\d.]+:(\d+)").start()
