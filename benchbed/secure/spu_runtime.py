"""Run a JAX function in SecretFlow SPU's simulator with every party profiled, and read its cost.

Protocols: ``aby3`` (3 parties, replicated sharing) and ``cheetah`` (2 parties, HE linear layers and
silent-OT non-linear ones), both over the 64-bit ring FM64.

SPU reports traffic only through C++ log lines on file descriptor 1: per party, its pphlo ops, its
MPC kernels and a ``Link details`` total. ``run_executable`` profiles every party in one run and
reads them all.

**Rounds** are the protocol's sequential communication rounds: the messages on the critical path,
where messages that go out together (a party sending to both peers, every party sending to its
neighbour) are one round. SPU runs kernels one after another, so a run's rounds are the sum over its
kernel calls of each kernel's rounds. SPU's own "send actions" are not rounds: a send to two peers
counts twice and some kernels add actions by hand for accounting (``addCommStatsManually``).

- ``aby3``: each kernel's rounds from the protocol as SPU implements it (``KERNEL_ROUNDS``, from
  secretflow/spu ``libspu/mpc/aby3``), times the calls SPU's MPC profile counts. The counts are the
  same in every party, so the figure is the same for every image and every run.
- ``cheetah``: two parties, so a send never goes to two peers and SPU adds no actions by hand; the
  run's rounds are its busier party's messages over the whole run (its link's send actions; the OT
  and HE sub-protocols answer each other). Not per kernel: SPU refills a party's silent-OT pool
  lazily, inside whichever kernel finds it empty, so the two parties' refills may fall in two kernels
  or in one, while each party sends the same messages in all. This counts every message of the
  silent-OT setup as a round, a bound from above where the setup sends several messages without
  waiting for an answer. A kernel's ``rounds`` are its busier party's messages in it, for reading only.
"""
from __future__ import annotations

import ctypes
import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from benchbed.errors import BenchbedError

FIELD = "FM64"


@dataclass(frozen=True)
class Protocol:
    name: str
    spu_kind: str  # libspu.ProtocolKind member
    parties: int


PROTOCOLS = {"aby3": Protocol("aby3", "ABY3", 3), "cheetah": Protocol("cheetah", "CHEETAH", 2)}

# Sequential rounds of one call of each communicating ABY3 kernel (secretflow/spu libspu/mpc/aby3):
# mul_aa, mmul_aa: one rotate of the product share; trunc_a: "Share Truncation I" (ABY3 §5.1), P1
# sends to P0 once; mul_a1b: two parallel 3-party OTs, sender and helper to receiver, then receiver to
# helper ("two rounds latency"); msb_a2b: a boolean adder over the 64-bit ring, one rotate per AND
# layer (8 layers, every party sends and receives 8 times); p2a (a public constant made secret, e.g.
# conv padding): a fresh zero sharing, one rotate.
KERNEL_ROUNDS = {
    "aby3": {"mul_aa": 1, "mmul_aa": 1, "trunc_a": 1, "mul_a1b": 2, "msb_a2b": 8, "p2a": 1},
}


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
    bytes_per_party: list[int]   # sent by each party (in the order SPU printed them)
    rounds: int                  # sequential communication rounds (module docstring)
    seconds: float               # SPU's execution time of the slowest party, compilation excluded
    per_op: dict[str, dict]      # pphlo op -> bytes (all parties), executions, rounds
    kernels: dict[str, dict]     # MPC kernel -> calls, bytes (all parties), rounds
    pphlo: str

    @property
    def busiest_party_bytes(self) -> int:
        return max(self.bytes_per_party)


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


def run_executable(executable, args: Sequence[np.ndarray], *, protocol_name: str = "aby3",
                   fxp_fraction_bits: int = 18) -> SpuRun:
    """Secret-share ``args``, run ``executable`` on in-memory parties with all of them profiled,
    reconstruct the outputs and read the parties' costs."""
    _, spu_api, libspu, _ = _spu()
    proto = protocol(protocol_name)
    cfg = runtime_config(proto, fxp_fraction_bits)
    io = spu_api.Io(proto.parties, cfg)
    desc = libspu.link.Desc()
    for rank in range(proto.parties):
        desc.add_party(f"id_{rank}", f"thread_{rank}")
    results: list[Any] = [None] * proto.parties
    errors: list[BaseException] = []

    def party(rank: int) -> None:
        try:
            rt = spu_api.Runtime(libspu.link.create_mem(desc, rank), libspu.RuntimeConfig(cfg))
            for name, share in zip(executable.input_names, shares):
                rt.set_var(name, share[rank])
            rt.run(executable)
            results[rank] = [rt.get_var(name) for name in executable.output_names]
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    with _RUN_LOCK, _capture_fd1() as cap:
        shares = [io.make_shares(np.asarray(a), libspu.Visibility.VIS_SECRET) for a in args]
        threads = [threading.Thread(target=party, args=(r,), daemon=True) for r in range(proto.parties)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if not errors:
            outputs = [np.asarray(io.reconstruct(list(out))) for out in zip(*results)]
    if errors:
        raise errors[0]
    return parse(cap["text"], outputs, executable.code.decode("utf-8", errors="replace"), proto)


def _kernel_rounds(proto: Protocol, kernels: dict[str, dict], send_actions: list[int]) -> int:
    if proto.name in KERNEL_ROUNDS:
        table = KERNEL_ROUNDS[proto.name]
        unknown = sorted(k for k, v in kernels.items() if v["bytes"] and k not in table)
        if unknown:
            raise BenchbedError(f"SPU ran {proto.name} kernels whose rounds benchbed does not know: "
                                f"{', '.join(unknown)}; add them to benchbed.spu_runtime.KERNEL_ROUNDS")
        for name, k in kernels.items():
            k["rounds"] = table.get(name, 0) * k["calls"] if k["bytes"] else 0
        for k in kernels.values():
            k.pop("party_sends")
        return sum(k["rounds"] for k in kernels.values())
    for k in kernels.values():
        k["rounds"] = max(k.pop("party_sends"))
    return max(send_actions)


def parse(text: str, outputs: list[np.ndarray], pphlo: str, proto: Protocol) -> SpuRun:
    """Read the profile blocks that SPU printed, one per party."""
    links = [tuple(int(g) for g in m.groups()) for m in _RE_LINK.finditer(text)]
    if len(links) != proto.parties:
        raise BenchbedError(f"SPU printed {len(links)} 'Link details' profile lines instead of {proto.parties}; "
                            "is something else redirecting file descriptor 1?")
    per_op: dict[str, dict] = {}
    kernels: dict[str, dict] = {}
    for m in _RE_OP.finditer(text):
        name, count, _, send, _, actions, _ = m.groups()
        if name.startswith("pphlo."):
            op = per_op.setdefault(name, {"bytes": 0, "count": 0})
            op["bytes"] += int(send)
            op["count"] = max(op["count"], int(count))
        elif not _RE_NOT_MPC.match(name):
            k = kernels.setdefault(name, {"calls": 0, "bytes": 0, "party_sends": []})
            k["calls"] = max(k["calls"], int(count))
            k["bytes"] += int(send)
            k["party_sends"].append(int(actions))
    rounds = _kernel_rounds(proto, kernels, [link[2] for link in links])
    seconds = [float(m.group(2)) for m in _RE_EXEC.finditer(text)]
    return SpuRun(outputs=outputs, protocol=proto.name, bytes_total=sum(link[0] for link in links),
                  bytes_per_party=[link[0] for link in links], rounds=rounds,
                  seconds=max(seconds) if seconds else float("nan"),
                  per_op=dict(sorted(per_op.items(), key=lambda kv: -kv[1]["bytes"])),
                  kernels=dict(sorted(kernels.items(), key=lambda kv: -kv[1]["bytes"])), pphlo=pphlo)


def run_secure(fn: Callable, *args: np.ndarray, protocol_name: str = "aby3", fxp_fraction_bits: int = 18) -> SpuRun:
    """Compile and run ``fn(*args)`` in SPU with every argument secret (numpy arrays that ``fn``
    captures are public constants)."""
    args = [np.asarray(a) for a in args]
    return run_executable(compile_spu(fn, args), args, protocol_name=protocol_name,
                          fxp_fraction_bits=fxp_fraction_bits)
