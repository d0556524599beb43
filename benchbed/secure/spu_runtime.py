"""Run a JAX function in SecretFlow SPU's simulator with every party profiled, and read its cost.

Protocols: ``aby3`` (3 parties, replicated sharing) and ``cheetah`` (2 parties, HE linear layers and
silent-OT non-linear ones), both over the 64-bit ring FM64.

SPU reports traffic only through C++ log lines on file descriptor 1: per party, its pphlo ops, its
MPC kernels and a ``Link details`` total of the run. ``Parties.run`` profiles every party in one run
and reads them all; the lines do not say which party printed them, so the bytes each *rank* sent
are read off the delayed links (``sent_by_rank``) where a measurement needs them.

**Rounds** are measured, not tabulated: the one-way message latencies on the run's critical path,
read as the extra wall time of the same run over links that delay every message (``measure_rounds``).
Whatever SPU's kernels do (a truncation's extra message, a helper role drawn per call, an OT
refill inside some comparison) shows in the wall time, so nothing here models them.
"""
from __future__ import annotations

import ctypes
import itertools
import os
import re
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from benchbed.errors import BenchbedError
from benchbed.secure.links import DelayedLinks

FIELD = "FM64"
# one-way delay of a measurement's links: large enough that a round stands out of the run-to-run
# jitter of SPU's local work (a few ms on the models benchbed measures), small enough to stay quick
DELAY_S = 0.1
LINK_SETUP_TIMEOUT_S = 120  # SPU's link creation waits for every peer; a port taken meanwhile would hang it


@dataclass(frozen=True)
class Protocol:
    name: str
    spu_kind: str  # libspu.ProtocolKind member
    parties: int


PROTOCOLS = {"aby3": Protocol("aby3", "ABY3", 3), "cheetah": Protocol("cheetah", "CHEETAH", 2)}


def protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise BenchbedError(f"unknown SPU protocol {name!r}; choose one of {', '.join(PROTOCOLS)}") from None


def _spu():
    try:
        import spu
        import spu.api as spu_api
        import spu.libspu as libspu
        import spu.utils.frontend as spu_fe
    except ImportError:
        raise BenchbedError("secure inference needs SecretFlow SPU: pip install 'benchbed[mpc]'") from None
    return spu, spu_api, libspu, spu_fe


def spu_version() -> str:
    spu, _, _, _ = _spu()
    return str(getattr(spu, "__version__", "unknown"))


_RE_LINK = re.compile(r"Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+), recv actions (\d+)")
_RE_OP = re.compile(r"\] - (\S+), executed (\d+) times, duration ([0-9.eE+-]+)s, send bytes (\d+) recv bytes (\d+), "
                    r"send actions (\d+), recv actions (\d+)")
# SPU prints a HAL and an MPC section per party, and the parties' lines can interleave: the layer of a
# line is told by its name (HAL functions are f_*, i_*, mixed_*, _* and seal/reveal; pphlo ops pphlo.*)
_RE_NOT_MPC = re.compile(r"^(pphlo\.|f_|i_|mixed_|_)|^(seal|reveal|reveal_to)$")
_RE_EXEC = re.compile(r"\[Profiling\] SPU execution (\S+) completed, .*execution took ([0-9.eE+-]+)s")
# SPU's own informational log lines (profile, thread pools): swallowed; anything else is passed on
_RE_SPU_INFO = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:.]+\] \[(info|debug|trace)\] ")

_RUN_LOCK = threading.Lock()  # fd 1 is process-wide: one profiled SPU run at a time
_SESSIONS = itertools.count()  # in-memory links find each other by address: one per session


@contextmanager
def _capture_fd1() -> Iterator[dict]:
    """Capture what C++ writes to file descriptor 1; lines that are not SPU's profile go back out."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        libc = None
    box: dict = {}
    sys.stdout.flush()
    if libc is not None:
        libc.fflush(None)
    saved = os.dup(1)
    tmp = tempfile.TemporaryFile()
    try:
        os.dup2(tmp.fileno(), 1)
        try:
            yield box
        finally:
            sys.stdout.flush()
            if libc is not None:
                libc.fflush(None)
            os.dup2(saved, 1)
    finally:
        os.close(saved)
        tmp.seek(0)
        box["text"] = tmp.read().decode(errors="replace")
        tmp.close()
    other = [line for line in box["text"].splitlines() if line.strip() and not _RE_SPU_INFO.match(line)]
    if other:
        sys.stdout.write("\n".join(other) + "\n")
        sys.stdout.flush()


@dataclass
class SpuRun:
    """One profiled SPU run of a JAX function: outputs and costs of all parties."""
    outputs: list[np.ndarray]
    protocol: str
    bytes_total: int             # sent by all parties together
    bytes_per_party: list[int]   # sent by each party, in the order SPU printed them (not by rank)
    seconds: float               # SPU's execution time of the slowest party, compilation excluded
    per_op: dict[str, dict]      # pphlo op -> bytes (all parties), executions
    kernels: dict[str, dict]     # MPC kernel -> calls, bytes (all parties)
    pphlo: str
    wall_s: float = 0.0          # the slowest party's wall time of the run
    rounds: float | None = None  # measured by ``measure_rounds``; None for a run over undelayed links
    sent_by_rank: list[int] = field(default_factory=list)  # bytes on the delayed links per rank, framing included

    @property
    def busiest_party_bytes(self) -> int:
        return max(self.bytes_per_party)

    def rank_shares(self) -> list[float]:
        """Each rank's share of the bytes of this run (from the delayed links; even without them)."""
        total = sum(self.sent_by_rank)
        if not total:
            return [1 / len(self.bytes_per_party)] * len(self.bytes_per_party)
        return [sent / total for sent in self.sent_by_rank]


def runtime_config(proto: Protocol, fxp_fraction_bits: int = 18):
    _, _, libspu, _ = _spu()
    cfg = libspu.RuntimeConfig(protocol=getattr(libspu.ProtocolKind, proto.spu_kind), field=libspu.FieldType.FM64)
    cfg.fxp_fraction_bits = int(fxp_fraction_bits)
    cfg.enable_pphlo_profile = True  # per-op lines and the party's "Link details" total
    cfg.enable_hal_profile = True    # per-kernel lines ("MPC profiling"), from which rounds are counted
    return cfg


def compile_spu(fn: Callable, args: Sequence[np.ndarray]):
    """Compile ``fn`` for SPU with every positional argument secret; returns the executable."""
    _, _, libspu, spu_fe = _spu()
    names = [f"in{i}" for i in range(len(args))]
    executable, _ = spu_fe.compile(spu_fe.Kind.JAX, fn, list(args), {}, names,
                                   [libspu.Visibility.VIS_SECRET] * len(args),
                                   lambda outs: [f"out{i}" for i in range(len(outs))])
    return executable


class Parties:
    """The SPU runtimes of one session of a protocol, one per party, kept between runs: a second run
    finds the keys and oblivious-transfer state the first set up, so a session pays its setup once.

    ``delay_s=None`` links the parties in memory (fast: bytes only); a number links them over TCP on
    this machine with every message held that long (``benchbed.secure.links``), which is how rounds
    are measured and the parties' bytes told apart. Use as a context manager."""

    def __init__(self, protocol_name: str = "aby3", *, fxp_fraction_bits: int = 18, delay_s: float | None = None):
        _, self._api, self._lib, _ = _spu()
        self.protocol = protocol(protocol_name)
        self.cfg = runtime_config(self.protocol, fxp_fraction_bits)
        self.delay_s = delay_s
        self.links = None if delay_s is None else DelayedLinks(self.protocol.parties, delay_s)
        self._contexts: list = [None] * self.protocol.parties
        self._runtimes: list = [None] * self.protocol.parties

    def __enter__(self) -> "Parties":
        n = self.protocol.parties
        session = next(_SESSIONS)
        if self.links is not None:
            self.links.__enter__()

        def start(rank: int) -> None:
            desc = self._lib.link.Desc()
            if self.links is None:
                for r in range(n):
                    desc.add_party(f"id_{r}", f"session_{session}_{r}")
                context = self._lib.link.create_mem(desc, rank)
            else:
                desc.throttle_window_size = 0  # no waiting for the receiver's answer: one message, one latency
                desc.http_max_payload_size = 1 << 30  # no chunks, each of which would wait for its answer
                desc.recv_timeout_ms = 3_600_000
                for r in range(n):
                    desc.add_party(f"id_{r}", self.links.address(rank, r))
                context = self._lib.link.create_brpc(desc, rank)
            self._contexts[rank] = context
            self._runtimes[rank] = self._api.Runtime(context, self._lib.RuntimeConfig(self.cfg))

        _in_parties(n, start, timeout=LINK_SETUP_TIMEOUT_S)
        return self

    def __exit__(self, *exc) -> None:
        if self.links is not None:
            if all(c is not None for c in self._contexts):
                _in_parties(self.protocol.parties, lambda rank: self._contexts[rank].stop_link())
            self.links.__exit__(*exc)

    def run(self, executable, args: Sequence[np.ndarray]) -> "SpuRun":
        """Secret-share ``args``, run ``executable`` with every party profiled, reconstruct the outputs
        and read the parties' costs of this run."""
        io = self._api.Io(self.protocol.parties, self.cfg)
        results: list[Any] = [None] * self.protocol.parties
        walls = [0.0] * self.protocol.parties
        sent_before = list(self.links.sent) if self.links is not None else None

        def party(rank: int) -> None:
            rt = self._runtimes[rank]
            for name, share in zip(executable.input_names, shares):
                rt.set_var(name, share[rank])
            start = time.perf_counter()
            rt.run(executable)
            walls[rank] = time.perf_counter() - start
            results[rank] = [rt.get_var(name) for name in executable.output_names]

        with _RUN_LOCK, _capture_fd1() as cap:
            shares = [io.make_shares(np.asarray(a), self._lib.Visibility.VIS_SECRET) for a in args]
            _in_parties(self.protocol.parties, party)
            outputs = [np.asarray(io.reconstruct(list(out))) for out in zip(*results)]
        run = parse(cap["text"], outputs, executable.code.decode("utf-8", errors="replace"), self.protocol)
        run.wall_s = max(walls)
        if sent_before is not None:
            run.sent_by_rank = [after - before for after, before in zip(self.links.sent, sent_before)]
        return run


def _in_parties(parties: int, work: Callable[[int], None], timeout: float | None = None) -> None:
    """``work(rank)`` for every party at once, each in a thread; the first error is raised here, and a
    party still at work after ``timeout`` seconds is an error too (its thread is left behind)."""
    errors: list[BaseException] = []

    def guarded(rank: int) -> None:
        try:
            work(rank)
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(r,), daemon=True) for r in range(parties)]
    for t in threads:
        t.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    for t in threads:
        t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    stuck = [rank for rank, t in enumerate(threads) if t.is_alive()]
    if stuck:
        raise BenchbedError(f"SPU part{'ies' if len(stuck) > 1 else 'y'} {stuck} did not connect within {timeout:g} s; "
                            "run it again (a port may have been taken)")
    if errors:
        raise errors[0]


def run_executable(executable, args: Sequence[np.ndarray], *, protocol_name: str = "aby3",
                   fxp_fraction_bits: int = 18) -> "SpuRun":
    """One run of ``executable`` on a fresh session with in-memory links (its setup included)."""
    with Parties(protocol_name, fxp_fraction_bits=fxp_fraction_bits) as parties:
        return parties.run(executable, args)


def measure_rounds(executable, args: Sequence[np.ndarray], *, protocol_name: str = "aby3", runs: int = 2,
                   delay_s: float = DELAY_S, fxp_fraction_bits: int = 18) -> tuple[list["SpuRun"], list["SpuRun"]]:
    """``runs`` runs of ``executable`` in one session over delayed links, each with its ``rounds``
    measured: (its wall time − the same run's over undelayed TCP links) / ``delay_s``; and those
    undelayed runs. The two sessions take turns, each delayed run right after its undelayed twin, so
    that a busy spell of the machine slows both. The first run pays the session's setup; the later
    ones are what every further inference costs.

    The undelayed run is slower by a spell that no delay pays back (its parties' local work contends
    for the CPU where delays hold them apart), which a short delay turns into missing rounds: on a
    Cheetah resnet_narrow with 187 rounds priced, 170.5 measured at 50 ms and 182.3 at 150 ms."""
    with (Parties(protocol_name, fxp_fraction_bits=fxp_fraction_bits, delay_s=0.0) as fast,
          Parties(protocol_name, fxp_fraction_bits=fxp_fraction_bits, delay_s=delay_s) as slow):
        base, timed = [], []
        for _ in range(runs):
            base.append(fast.run(executable, args))
            timed.append(slow.run(executable, args))
    for run, undelayed in zip(timed, base):
        run.rounds = max(0.0, (run.wall_s - undelayed.wall_s) / delay_s)
    return timed, base


def least_rounds(timed: Sequence["SpuRun"], base: Sequence["SpuRun"], delay_s: float) -> float:
    """Rounds from ``measure_rounds``' quickest delayed run less its quickest undelayed one: a busy
    machine only adds wall time, so each least is the run nearest its true time, where a pair's
    difference carries both runs' jitter (seconds of HE work on a Cheetah model)."""
    return max(0.0, (min(run.wall_s for run in timed) - min(run.wall_s for run in base)) / delay_s)


def parse(text: str, outputs: list[np.ndarray], pphlo: str, proto: Protocol) -> SpuRun:
    """Read the profile blocks that SPU printed, one per party."""
    links = [tuple(int(g) for g in m.groups()) for m in _RE_LINK.finditer(text)]
    if len(links) != proto.parties:
        raise BenchbedError(f"SPU printed {len(links)} 'Link details' profile lines instead of {proto.parties}; "
                            "is something else redirecting file descriptor 1?")
    per_op: dict[str, dict] = {}
    kernels: dict[str, dict] = {}
    for m in _RE_OP.finditer(text):
        name, count, _, send, _, _, _ = m.groups()
        if name.startswith("pphlo."):
            op = per_op.setdefault(name, {"bytes": 0, "count": 0})
            op["bytes"] += int(send)
            op["count"] = max(op["count"], int(count))
        elif not _RE_NOT_MPC.match(name):
            k = kernels.setdefault(name, {"calls": 0, "bytes": 0})
            k["calls"] = max(k["calls"], int(count))
            k["bytes"] += int(send)
    seconds = [float(m.group(2)) for m in _RE_EXEC.finditer(text)]
    return SpuRun(outputs=outputs, protocol=proto.name, bytes_total=sum(link[0] for link in links),
                  bytes_per_party=[link[0] for link in links],
                  seconds=max(seconds) if seconds else float("nan"),
                  per_op=dict(sorted(per_op.items(), key=lambda kv: -kv[1]["bytes"])),
                  kernels=dict(sorted(kernels.items(), key=lambda kv: -kv[1]["bytes"])), pphlo=pphlo)


def run_secure(fn: Callable, *args: np.ndarray, protocol_name: str = "aby3", fxp_fraction_bits: int = 18) -> SpuRun:
    """Compile and run ``fn(*args)`` in SPU with every argument secret (numpy arrays that ``fn``
    captures are public constants)."""
    args = [np.asarray(a) for a in args]
    return run_executable(compile_spu(fn, args), args, protocol_name=protocol_name,
                          fxp_fraction_bits=fxp_fraction_bits)
