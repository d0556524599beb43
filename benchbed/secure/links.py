"""Links between SPU parties over TCP on this machine, each message held a fixed delay on its way:
how benchbed measures rounds. A protocol's rounds are the one-way message latencies on its critical
path, so a run over links that delay every message by ``d`` takes ``rounds · d`` longer than the
same run over undelayed links: rounds = Δwall / d (``benchbed.secure.spu_runtime.measure_rounds``).

Each party listens on a port of its own; its peers reach it through a proxy port that forwards
every chunk ``d`` seconds after it arrived, in order, in both directions (the receiver's answers
are delayed too, as on a real network). The proxy also counts the bytes each party sends, which
is how a measurement tells the parties apart: SPU's own profile lines do not say whose they are.
"""
from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from contextlib import closing

CHUNK = 1 << 20
CONNECT_TRIES = 400  # a party's server starts when its link is created; its peers may be faster


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


# Every port ``free_port`` gave in this process: two sessions open side by side (``measure_rounds``' delayed
# and undelayed ones) must never be given one port between its check and its bind.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port outside the kernel's ephemeral range: a party binds its port only when its link is
    created, and meanwhile the proxy's own outgoing connections take ephemeral ports — one of which
    could otherwise be the port a party is about to bind, and that party would wait forever."""
    low, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10_000, low) if low > 11_000 else 0
        if port in _HANDED_OUT:  # free now, but promised to a link of this process that has not bound it yet
            continue
        with closing(socket.socket()) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(s.getsockname()[1])
            return s.getsockname()[1]
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DelayedLinks:
    """Ports for ``parties`` SPU parties whose every message is delayed by ``delay_s`` seconds.

    ``address(rank, peer)`` is where ``rank`` reaches ``peer``: its own listening port when
    ``peer == rank``, else a proxy port of that pair alone, so that ``sent[rank]`` can count the
    bytes ``rank`` sent (framing included). Use as a context manager: the proxy runs in a thread of
    its own until closed."""

    def __init__(self, parties: int, delay_s: float):
        self.parties, self.delay_s = parties, float(delay_s)
        self.ports = [free_port() for _ in range(parties)]  # where each party listens
        self.pairs = {(a, b): free_port() for a in range(parties) for b in range(parties) if a != b}
        self.sent = [0] * parties
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._servers: list = []
        self._thread = threading.Thread(target=self._serve, daemon=True, name="benchbed-delayed-links")

    def __enter__(self) -> "DelayedLinks":
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure
        return self

    def __exit__(self, *exc) -> None:
        async def stop():
            for server in self._servers:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(stop(), self._loop)
        self._thread.join()
        self._loop.close()

    def address(self, rank: int, peer: int) -> str:
        return f"127.0.0.1:{self.ports[rank] if peer == rank else self.pairs[rank, peer]}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.set_exception_handler(lambda loop, context: None)  # peers hang up when a run ends

        async def start():
            for (a, b), port in self.pairs.items():
                self._servers.append(await asyncio.start_server(
                    lambda r, w, a=a, b=b: self._connection(r, w, a, b), "127.0.0.1", port))

        try:
            self._loop.run_until_complete(start())
        except BaseException as exc:  # reported to the caller of __enter__
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _connection(self, reader, writer, rank: int, peer: int) -> None:
        """``rank``'s connection to ``peer``: forwarded to ``peer``'s port, delayed both ways."""
        for _ in range(CONNECT_TRIES):
            try:
                peer_reader, peer_writer = await asyncio.open_connection("127.0.0.1", self.ports[peer])
                break
            except OSError:
                await asyncio.sleep(0.025)
        else:
            writer.close()
            return
        towards, back = asyncio.Queue(), asyncio.Queue()
        for task in (self._read(reader, towards, rank), self._write(peer_writer, towards),
                     self._read(peer_reader, back, peer), self._write(writer, back)):
            self._loop.create_task(task)

    async def _read(self, source, queue: asyncio.Queue, rank: int) -> None:
        while True:
            data = await source.read(CHUNK)
            self.sent[rank] += len(data)
            await queue.put((time.monotonic() + self.delay_s, data))
            if not data:
                return

    async def _write(self, target, queue: asyncio.Queue) -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                target.close()
                return
            target.write(data)
            await target.drain()
