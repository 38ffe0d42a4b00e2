"""The notes' client in asyncio: N GETs one after another, or all at once with gather, on one
thread and one event loop (epoll). ``python aio.py URL N sequential|concurrent`` prints one JSON
line. Standard library only: it runs alone (python -I)."""

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


async def one(host: str, port: int, path: str):
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()            # to EOF: the server closes after its answer
        writer.close()
        return int(data.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError) as e:
        return type(e).__name__


async def main(url: str, n: int, mode: str) -> dict:
    parts = urlsplit(url)
    host, port, path = parts.hostname, parts.port or 80, parts.path or "/"
    start = time.perf_counter()
    if mode == "sequential":
        statuses = [await one(host, port, path) for _ in range(n)]
    else:
        statuses = await asyncio.gather(*(one(host, port, path) for _ in range(n)))
    return dict(client="asyncio", mode=mode, n=n, ok=statuses.count(200),
                wall_s=time.perf_counter() - start, statuses=statuses)


if __name__ == "__main__":
    url, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    print(json.dumps(asyncio.run(main(url, n, mode))))
