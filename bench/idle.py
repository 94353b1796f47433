#!/usr/bin/env python3
"""Hold N idle keep-alive connections open on a proxy and report its resident
memory per connection.

    idle.py HOST PORT N PID

Each connection sends one GET and reads the whole response, so the proxy
holds it as an idle keep-alive connection, not as a fresh one waiting for a
request head. PID's resident memory (with all its descendants, e.g. nginx
workers) is read from /proc before and after. Prints one line:
`<bytes per connection> <details>`. Standard library only.
"""

import asyncio
import os
import sys
import time


def rss_kib(pid):
    """VmRSS of pid and all its descendants, in KiB."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


async def one_request(host, port):
    r, w = await asyncio.open_connection(host, port)
    w.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer: {head[:40]!r}")
    await r.readexactly(length)
    return r, w


async def main(host, port, n, pid, deadline):
    r, w = await one_request(host, port)  # warm the proxy and its pool
    w.close()
    await asyncio.sleep(0.5)
    before = rss_kib(pid)
    sem = asyncio.Semaphore(200)
    conns = []

    async def opener():
        async with sem:
            conns.append(await one_request(host, port))

    await asyncio.wait_for(
        asyncio.gather(*(opener() for _ in range(n))),
        timeout=max(1, deadline - time.monotonic()),
    )
    # Let the proxy finish freeing per-request state before reading memory:
    # portcullis parks a connection idle for 1 s and gives back what it
    # freed within half a second more; the steady idle state is measured.
    await asyncio.sleep(3)
    after = rss_kib(pid)
    alive = sum(1 for r, _ in conns if not r.at_eof())
    for _, w in conns:
        w.close()
    per = (after - before) * 1024 / n
    print(
        f"{per:.0f} bytes/conn ({n} connections, {alive} still open; "
        f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB)"
    )


if __name__ == "__main__":
    host, port, n, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    asyncio.run(main(host, port, n, pid, time.monotonic() + 90))
