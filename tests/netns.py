"""Hosts on one machine for multi-host tests: network namespaces, a bridge, links that fail.

`Hosts()` makes a "head" namespace with a bridge (10.231.0.1/24) and one namespace per
laptop, each joined to the bridge by a veth pair (laptop `a`: 10.231.0.2, `b`: 10.231.0.3).
Traffic goes only to these addresses: no namespace has a route anywhere else. Every
namespace is named `gct-<pid of the test process>-<name>`, removed on exit even after a
failure; a namespace left behind by a test process that no longer runs is removed first.

A process runs in a namespace through `ip netns exec`, and with a hostname of its own
(`unshare --uts`), so two "laptops" on this machine register as two hosts.

`python tests/netns.py relay LISTEN_HOST:PORT TARGET_HOST:PORT` is a delaying TCP relay (a
slow link: `tc netem` is not in this kernel): each chunk read on either side is written to
the other `--delay` ± `--jitter` seconds later, in order. A test fixture, not product code;
standard library only, so it runs as a script in any namespace.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from shared.embedded import pid_alive

SUBNET = "10.231.0"
HEAD_ADDRESS = f"{SUBNET}.1"
PREFIX = "gct-"


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add): run the tests as root"
    for tool in ("ip", "unshare", "hostname"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH (Debian: apt-get install iproute2 util-linux hostname)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip() or made.returncode}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out


def namespaces() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]


def remove_namespace(name: str) -> None:
    """Kill every process still in the namespace, then delete it (its veth ends go with it)."""
    for pid in _ip("netns", "pids", name, check=False).stdout.split():
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass
    _ip("netns", "del", name, check=False)


def remove_stale() -> list[str]:
    """Remove `gct-<pid>-*` namespaces whose test process is gone; the names removed."""
    stale = []
    for name in namespaces():
        parts = name.split("-")
        if name.startswith(PREFIX) and len(parts) >= 3 and parts[1].isdigit() and not pid_alive(int(parts[1])):
            remove_namespace(name)
            stale.append(name)
    return stale


class Hosts:
    """A head namespace and laptop namespaces on one bridge. Use as a context manager."""

    def __init__(self, laptops: tuple[str, ...] = ("a", "b")):
        self.tag = f"{PREFIX}{os.getpid()}"
        self.laptops = laptops
        self.head = f"{self.tag}-head"
        self.ns = {"head": self.head} | {x: f"{self.tag}-{x}" for x in laptops}
        self.address = {"head": HEAD_ADDRESS} | {x: f"{SUBNET}.{i + 2}" for i, x in enumerate(laptops)}

    def __enter__(self) -> "Hosts":
        remove_stale()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _build(self) -> None:
        for name in self.ns.values():
            _ip("netns", "add", name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", self.head, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.head, "addr", "add", f"{HEAD_ADDRESS}/24", "dev", "br0")
        _ip("-n", self.head, "link", "set", "br0", "up")
        for x in self.laptops:
            # Created straight inside the namespaces: nothing is added to this host's own.
            _ip("link", "add", f"to-{x}", "netns", self.head, "type", "veth",
                "peer", "name", "eth0", "netns", self.ns[x])
            _ip("-n", self.head, "link", "set", f"to-{x}", "master", "br0")
            _ip("-n", self.head, "link", "set", f"to-{x}", "up")
            _ip("-n", self.ns[x], "addr", "add", f"{self.address[x]}/24", "dev", "eth0")
            _ip("-n", self.ns[x], "link", "set", "eth0", "up")

    def close(self) -> None:
        for name in self.ns.values():
            if name in namespaces():
                remove_namespace(name)

    # -- processes ------------------------------------------------------------------------

    def argv(self, where: str, argv: list[str], hostname: str | None = None) -> list[str]:
        """`argv` run in namespace `where` ("head" or a laptop), under `hostname` if given
        (a UTS namespace of its own: this machine's hostname is untouched)."""
        inner = argv if hostname is None else [
            "unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *argv]
        return ["ip", "netns", "exec", self.ns[where], *inner]

    def run(self, where: str, argv: list[str], env: dict | None = None, timeout: float = 120,
            hostname: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(where, argv, hostname), env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=cwd)

    def popen(self, where: str, argv: list[str], env: dict | None, log: Path,
              hostname: str | None = None, cwd: Path | None = None) -> subprocess.Popen:
        """A background process in its own session (signal its group), output appended to `log`."""
        with open(log, "ab") as out:
            return subprocess.Popen(self.argv(where, argv, hostname), env=env, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)

    # -- links ----------------------------------------------------------------------------

    def link_down(self, laptop: str) -> None:
        """Cut the laptop off: the head's end of its cable is down (the laptop sees no carrier)."""
        _ip("-n", self.head, "link", "set", f"to-{laptop}", "down")

    def link_up(self, laptop: str) -> None:
        _ip("-n", self.head, "link", "set", f"to-{laptop}", "up")

    def relay_argv(self, listen: tuple[str, int], target: tuple[str, int], delay_s: float = 0.15,
                   jitter_s: float = 0.05) -> list[str]:
        """The command line of a delaying relay (run it in a namespace with `popen`)."""
        return [sys.executable, str(Path(__file__).resolve()), "relay", f"{listen[0]}:{listen[1]}",
                f"{target[0]}:{target[1]}", "--delay", str(delay_s), "--jitter", str(jitter_s)]


@contextmanager
def hosts(laptops: tuple[str, ...] = ("a", "b")):
    with Hosts(laptops) as h:
        yield h


# -- the delaying relay (a test fixture, run as a script) ---------------------------------

async def _pipe(reader, writer, delay_s: float, jitter_s: float, stats: dict) -> None:
    import asyncio
    import random

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    rng = random.Random()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if data is None:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    last = float("-inf")
    try:
        while data := await reader.read(65536):
            delay = max(0.0, delay_s + rng.uniform(-jitter_s, jitter_s))
            last = max(last, loop.time() + delay)
            stats["chunks"] += 1
            stats["delay_sum"] += delay
            await queue.put((last, data))
    except ConnectionError:
        pass
    await queue.put((0.0, None))
    try:
        await sender
    except ConnectionError:
        pass


async def _relay(listen: tuple[str, int], target: tuple[str, int], delay_s: float, jitter_s: float) -> None:
    import asyncio

    stats = {"connections": 0, "chunks": 0, "delay_sum": 0.0}

    async def handle(client_r, client_w) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*target)
        except OSError as exc:
            print(f"relay: cannot reach {target[0]}:{target[1]}: {exc}", flush=True)
            client_w.close()
            return
        stats["connections"] += 1
        await asyncio.gather(_pipe(client_r, server_w, delay_s, jitter_s, stats),
                             _pipe(server_r, client_w, delay_s, jitter_s, stats))

    async def report() -> None:    # counters every second while they change (connections live long)
        said = None
        while True:
            await asyncio.sleep(1.0)
            now = (stats["connections"], stats["chunks"])
            if now != said:
                mean = stats["delay_sum"] / max(1, stats["chunks"])
                print(f"relay: connections={now[0]} chunks={now[1]} mean_delay_s={mean:.3f}", flush=True)
                said = now

    server = await asyncio.start_server(handle, *listen)
    asyncio.get_running_loop().create_task(report())
    print(f"relay ready: {listen[0]}:{listen[1]} -> {target[0]}:{target[1]}, "
          f"{delay_s:g} ± {jitter_s:g} s per chunk each way", flush=True)
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main(argv: list[str]) -> int:
    import argparse
    import asyncio

    parser = argparse.ArgumentParser(prog="netns.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    relay = sub.add_parser("relay", help="a delaying TCP relay")
    relay.add_argument("listen", type=_address)
    relay.add_argument("target", type=_address)
    relay.add_argument("--delay", type=float, default=0.15, help="mean delay per chunk, each way (s)")
    relay.add_argument("--jitter", type=float, default=0.05, help="± uniform jitter (s)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_relay(args.listen, args.target, args.delay, args.jitter))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
