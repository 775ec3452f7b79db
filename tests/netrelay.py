"""A userspace WAN between hosts: a TCP relay that adds delay, stalls and cuts.

This kernel has no ``netem`` qdisc, so a slow, lossy link is made here: every
chunk is held ``--delay-ms`` before it goes on (each way, order kept), a
connection is cut (both sides reset) after a random ``--cut-after`` seconds, and
now and then one stalls (forwards nothing) for ``--stall-s`` without closing.
Faults are drawn from ``--seed``, so a run repeats.

    python netrelay.py --listen HOST:PORT --to HOST:PORT [--delay-ms 50]
        [--cut-after 5:15] [--stall-every 0] [--stall-s 3] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import struct
import time


class Pump:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 delay: float) -> None:
        self.reader, self.writer, self.delay = reader, writer, delay
        self.stalled_until = 0.0

    async def run(self) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue))
        try:
            while data := await self.reader.read(65536):
                queue.put_nowait((time.monotonic() + self.delay, data))
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(Exception):
                await sender

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes]]) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = max(due, self.stalled_until) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self.writer.write(data)
            await self.writer.drain()
        with contextlib.suppress(Exception):
            self.writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # linger on, 0 s: close() resets the connection (RST), as a cut link does
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def serve(args: argparse.Namespace) -> None:
    host, port = args.listen.rsplit(":", 1)
    to_host, to_port = args.to.rsplit(":", 1)
    rng = random.Random(args.seed)
    low, high = (float(x) for x in args.cut_after.split(":"))

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            sr, sw = await asyncio.open_connection(to_host, int(to_port))
        except OSError:
            cw.close()
            return
        up, down = Pump(cr, sw, args.delay_ms / 1000), Pump(sr, cw, args.delay_ms / 1000)
        pumps = asyncio.gather(up.run(), down.run())
        cut_at = time.monotonic() + rng.uniform(low, high) if high > 0 else float("inf")
        try:
            while not pumps.done():
                await asyncio.wait([pumps], timeout=0.5)
                now = time.monotonic()
                if now >= cut_at:
                    break
                if args.stall_every and rng.random() < 0.5 / args.stall_every:
                    up.stalled_until = down.stalled_until = now + args.stall_s
        finally:
            for w in (cw, sw):
                _reset(w)
            pumps.cancel()
            with contextlib.suppress(BaseException):
                await pumps

    server = await asyncio.start_server(handle, host, int(port), reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--cut-after", default="0:0", help="seconds LOW:HIGH (0:0 never)")
    p.add_argument("--stall-every", type=float, default=0.0,
                   help="on average one stall per this many seconds per connection")
    p.add_argument("--stall-s", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=1)
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
