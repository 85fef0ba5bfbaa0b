#!/usr/bin/env python3
"""A TCP proxy in front of the API server that is down for a while: for
the first OUTAGE seconds every connection is closed at once (as a server
that is restarting), then connections are forwarded byte for byte (TLS
passes through untouched). Used to start an operator during an outage
without stopping the API server the other checks share. With HANG_FILE,
once that file exists nothing more is forwarded either way and new
connections are held open unanswered: an API server whose writes hang.

    outage-proxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT OUTAGE_SECONDS [HANG_FILE]
"""
import os
import asyncio
import sys
import time


HANG_FILE = sys.argv[4] if len(sys.argv) > 4 else None


def hanging():
    return HANG_FILE is not None and os.path.exists(HANG_FILE)


async def hold():
    while True:
        await asyncio.sleep(3600)


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            if hanging():
                await hold()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main():
    port, target, outage = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    host, tport = target.rsplit(":", 1)
    up_at = time.monotonic() + outage

    async def handle(reader, writer):
        if time.monotonic() < up_at:
            writer.close()
            return
        if hanging():
            await hold()
        try:
            treader, twriter = await asyncio.open_connection(host, int(tport))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, twriter), pipe(treader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


asyncio.run(main())
