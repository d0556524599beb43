"""Per-operation cost constants measured in SecretFlow SPU: ``benchbed calibrate [--protocol P]``.

Every constant comes from small JAX functions run in SPU's simulator (FM64, 18 fractional bits) as
``benchbed.secure.measure`` runs a model, every party profiled:

- **bytes** are SPU's own count of a *warm* session's run (the second run of the function in one
  session: what every further inference costs), at three sizes; they must be ``a·n + b``;
- **rounds** are measured on links that delay every message (``spu_runtime.measure_rounds``), in
  a warm run (the least of two), and must be the same at two sizes;
- each party's **share** of the bytes is read off the delayed links, by rank;
- the **setup** a session pays once is its first run less its second, on the wire (SPU's count
  leaves out the sub-links its silent-OT instances open), measured for comparison calls of growing
  size: SPU's Cheetah opens more OT instances, each with its own setup, for larger calls.

Phases: SPU runs everything after the input arrives and separates no offline phase. The split is
made here by what the work depends on: what a session's first run pays on top of the others is
setup; Cheetah's Beaver triples (HE-made, input-independent, drawn in batches) are offline, priced
per batch from the difference of two products that draw one batch more; the rest is online.

``aby3`` (3 parties) has no setup in SPU: its correlated randomness comes from PRG seeds the link
set-up exchanged. ``cheetah`` (2 parties) prices HE linear layers per layer shape as measured
(``linear.measured``: the shapes of the built-in models at their suites' inputs), with a fitted
per-layer + per-input + per-output + per-weight formula for other shapes.

The ``seconds`` figures are SPU's local execution time on the machine that ran the script:
simulator time with all parties on one CPU, rough, for relative comparisons only.
"""
from __future__ import annotations

import datetime
import platform
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from benchbed.errors import BenchbedError
from benchbed.model.architectures import builtin_models
from benchbed.model.sites import sites
from benchbed.secure.cost import linear_key, linear_layers
from benchbed.secure.spu_runtime import FIELD, Parties, compile_spu, protocol, spu_version

FXP_BITS = 18
CHANNELS = 16
# the layer shapes the cheetah profile measures: the built-in models at their suites' inputs
CALIBRATION_MODELS = [("resnet_narrow", (1, 8, 8), 10), ("resnet_tiny", (1, 28, 28), 10),
                      ("resnet18_cifar", (3, 32, 32), 100)]
QUICK_MODELS = CALIBRATION_MODELS[:1]
# comparison calls whose session setup is measured (the largest: one ResNet-18 site on CIFAR and 4x it)
SETUP_CALLS = (1024, 4096, 16384, 65536, 262144)

Make = Callable[[int], tuple[Callable, list[np.ndarray]]]


class Cost:
    """What one warm run cost: bytes (all parties), each rank's share, rounds, and the session's setup."""

    def __init__(self, bytes_: float, shares: Sequence[float], rounds: float, setup_bytes: float = 0.0,
                 setup_rounds: float = 0.0, setup_shares: Sequence[float] = (), seconds: float = 0.0):
        self.bytes, self.shares, self.rounds = float(bytes_), [float(s) for s in shares], float(rounds)
        self.seconds = float(seconds)
        self.setup_bytes, self.setup_rounds, self.setup_shares = setup_bytes, setup_rounds, list(setup_shares)

    def __sub__(self, other: "Cost") -> "Cost":
        return Cost(self.bytes - other.bytes, self.shares, self.rounds - other.rounds)


class ProtocolMeter:
    """Runs functions in SPU under one protocol; ``cost`` is a warm run's (the second in a session).
    ``warmup`` (a function and its arguments) runs first in every session, so that a measured
    function finds what it sets up (keys, triples) already there."""

    def __init__(self, protocol_name: str, delay_s: float, warmup: tuple[Callable, list[np.ndarray]] | None = None,
                 warm_runs: int = 3):
        self.protocol, self.delay_s, self.warmup, self.warm_runs = protocol_name, delay_s, warmup, warm_runs

    def _programs(self, fn: Callable, args: list[np.ndarray]):
        executable = compile_spu(fn, args)
        if self.warmup is None:
            return [(executable, args), (executable, args)]
        wfn, wargs = self.warmup
        return [(compile_spu(wfn, wargs), wargs), (executable, args)]

    def _runs(self, fn: Callable, args: list[np.ndarray], delay: float | None, warm_runs: int | None = None):
        """The session's first run and its warm ones."""
        (first, first_args), (warm, warm_args) = self._programs(fn, args)
        with Parties(self.protocol, fxp_fraction_bits=FXP_BITS, delay_s=delay) as parties:
            return parties.run(first, first_args), [parties.run(warm, warm_args)
                                                    for _ in range(warm_runs or self.warm_runs)]

    def bytes(self, fn: Callable, args: list[np.ndarray]) -> float:
        """SPU's count of a warm run's bytes (in-memory links: quick): the least of the warm runs, as
        some warm runs also refill the session's OT pool or its triples (input-independent work
        priced apart or shown small at scale; see the module's docstring)."""
        return min(run.bytes_total for run in self._runs(fn, args, None)[1])

    def cost(self, fn: Callable, args: list[np.ndarray]) -> Cost:
        """A warm run's bytes, rank shares and measured rounds, and the session's setup on the wire."""
        fast_first, fast_warm = self._runs(fn, args, 0.0)
        slow_first, slow_warm = self._runs(fn, args, self.delay_s)
        rounds = min(max(0.0, (slow.wall_s - fast.wall_s) / self.delay_s) for slow, fast in zip(slow_warm, fast_warm))
        first_rounds = max(0.0, (slow_first.wall_s - fast_first.wall_s) / self.delay_s)
        quiet = min(fast_warm, key=lambda run: run.bytes_total)
        setup = [a - b for a, b in zip(fast_first.sent_by_rank, quiet.sent_by_rank)]
        return Cost(quiet.bytes_total, quiet.rank_shares(), rounds, setup_bytes=float(sum(setup)),
                    setup_rounds=first_rounds - rounds,
                    setup_shares=[s / sum(setup) for s in setup] if sum(setup) > 0 else (), seconds=quiet.seconds)

    def rounds(self, fn: Callable, args: list[np.ndarray]) -> float:
        """A warm run's measured rounds: the least of two (one of them may refill the OT pool)."""
        fast = self._runs(fn, args, 0.0, warm_runs=2)[1]
        slow = self._runs(fn, args, self.delay_s, warm_runs=2)[1]
        return min(max(0.0, (s.wall_s - f.wall_s) / self.delay_s) for s, f in zip(slow, fast))

    def shares(self, fn: Callable, args: list[np.ndarray]) -> list[float]:
        """Each rank's share of a warm run's bytes (on undelayed TCP links, which count them by rank)."""
        return min(self._runs(fn, args, 0.0)[1], key=lambda run: run.bytes_total).rank_shares()

    def bytes_and_shares(self, fn: Callable, args: list[np.ndarray]) -> tuple[float, list[float], float]:
        """A warm run's bytes, rank shares and SPU seconds from one undelayed session of two runs: for
        layers whose runs take seconds each."""
        run = self._runs(fn, args, 0.0, warm_runs=1)[1][0]
        return float(run.bytes_total), run.rank_shares(), run.seconds


def _repeated(fn: Callable, args: list[np.ndarray], times: int) -> tuple[Callable, list[np.ndarray]]:
    """``fn`` called ``times`` times on copies of its arguments in one program: a protocol that draws
    a helper role per call (SPU's ABY3 truncation) shows its mean split, not one draw's."""
    k = len(args)

    def repeated(*xs):
        return tuple(fn(*xs[i * k:(i + 1) * k]) for i in range(times))

    return repeated, [a.copy() for _ in range(times) for a in args]


SHARE_REPEATS = 8


class Fit:
    """Bytes ``a·n + b`` at several sizes, the rank shares and the rounds of one function."""

    def __init__(self, meter: ProtocolMeter, name: str, sizes: Sequence[int], make: Make, tolerance: float = 0.0,
                 rounds_slack: float = 1.5):
        self.name, self.sizes = name, list(sizes)
        self.bytes = [meter.bytes(*make(n)) for n in self.sizes]
        self.rounds_measured = [round(meter.rounds(*make(n)), 2) for n in (self.sizes[0], self.sizes[-1])]
        self.shares = meter.shares(*_repeated(*make(self.sizes[0]), SHARE_REPEATS))
        n0, n1 = self.sizes[0], self.sizes[-1]
        self.a = (self.bytes[-1] - self.bytes[0]) / (n1 - n0)
        self.b = self.bytes[0] - self.a * n0
        predicted = [self.a * n + self.b for n in self.sizes]
        slack = tolerance * max(abs(b) for b in self.bytes) + 1e-9  # cheetah's OT messages vary by a few bytes
        if any(abs(p - m) > slack for p, m in zip(predicted, self.bytes)):
            raise BenchbedError(f"calibration: {name} bytes {self.bytes} at sizes {self.sizes} are not linear in size")
        if abs(self.rounds_measured[0] - self.rounds_measured[1]) > rounds_slack:
            raise BenchbedError(f"calibration: {name} took {self.rounds_measured} rounds at sizes {n0} and {n1}; "
                                "the rounds of one call should not depend on its size")

    @property
    def rounds(self) -> int:
        return int(round(sum(self.rounds_measured) / 2))

    def record(self) -> dict:
        return {"sizes": self.sizes, "bytes": self.bytes, "rounds_measured": self.rounds_measured,
                "bytes_per_unit": _num(self.a), "bytes_fixed": _num(self.b),
                "shares": [round(s, 4) for s in self.shares]}


def _num(v: float) -> int | float:
    return int(round(v)) if abs(v - round(v)) < 1e-9 else round(float(v), 6)


def _shares(values: Sequence[float]) -> list[float]:
    return [round(float(v), 4) for v in values]


def _elementwise(fn: Callable, inputs: int = 1) -> Make:
    """``fn`` on ``inputs`` secret tensors of shape (1, 16, s, s) with n = 16·s² elements."""
    def make(n: int):
        side = int(round((n / CHANNELS) ** 0.5))
        assert CHANNELS * side * side == n
        rng = np.random.default_rng(n)
        return fn, [rng.standard_normal((1, CHANNELS, side, side)).astype(np.float32) * 0.5 for _ in range(inputs)]
    return make


def _public_poly(shape: Callable[[int], tuple[int, ...]]) -> Make:
    """A polynomial pixel with PUBLIC per-pixel coefficients (constants of the program, known to every
    party): c2·x and c1 are local, x·(c2·x + c1) one secret product."""
    def make(n: int):
        rng = np.random.default_rng(n)
        c2, c1, c0 = (rng.standard_normal(shape(n)).astype(np.float32) * 0.5 for _ in range(3))
        return (lambda x: x * (c2 * x + c1) + c0), [rng.standard_normal(shape(n)).astype(np.float32) * 0.5]
    return make


def _image_shape(n: int) -> tuple[int, ...]:
    side = int(round((n / CHANNELS) ** 0.5))
    assert CHANNELS * side * side == n
    return (1, CHANNELS, side, side)


def _flat(fn: Callable, inputs: int = 1) -> Make:
    """``fn`` on ``inputs`` secret vectors of n elements."""
    def make(n: int):
        rng = np.random.default_rng(n)
        return fn, [rng.standard_normal((1, n)).astype(np.float32) for _ in range(inputs)]
    return make


def _conv_fn(stride: int = 1, padding: int = 1):
    from jax import lax

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), [(padding, padding)] * 2,
                                        dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return conv


def _conv(cin: int, cout: int) -> Make:
    """3×3 SAME conv with SECRET weights; n = output elements = cout·s²."""
    def make(n: int):
        side = int(round((n / cout) ** 0.5))
        assert cout * side * side == n
        rng = np.random.default_rng(n)
        return _conv_fn(), [rng.standard_normal((1, cin, side, side)).astype(np.float32),
                            (rng.standard_normal((cout, cin, 3, 3)) / (3 * cin ** 0.5)).astype(np.float32)]
    return make


def _dense(features: int = 64) -> Make:
    """Linear layer with SECRET weights; n = output features."""
    def make(n: int):
        rng = np.random.default_rng(n)
        return (lambda x, w: x @ w), [rng.standard_normal((1, features)).astype(np.float32),
                                      (rng.standard_normal((features, n)) / features ** 0.5).astype(np.float32)]
    return make


def _layer(module: nn.Module, shape_in: tuple[int, ...]) -> tuple[Callable, list[np.ndarray]]:
    """One conv or dense layer of a model as a JAX function of a secret input and secret weights."""
    rng = np.random.default_rng(0)
    weight = module.weight.detach().cpu().numpy().astype(np.float32)
    if isinstance(module, nn.Conv2d):
        return (_conv_fn(module.stride[0], module.padding[0]),
                [rng.standard_normal((1, *shape_in)).astype(np.float32), weight])
    return (lambda x, w: x @ w), [rng.standard_normal((1, shape_in[0])).astype(np.float32), weight.T.copy()]


def _seconds(protocol_name: str, fn: Callable, args: list[np.ndarray], repeats: int) -> float:
    """SPU's execution time of a warm run, the least of ``repeats``."""
    executable = compile_spu(fn, args)
    with Parties(protocol_name, fxp_fraction_bits=FXP_BITS) as parties:
        parties.run(executable, args)
        return min(parties.run(executable, args).seconds for _ in range(repeats))


def _time_slope(protocol_name: str, sizes: Sequence[int], make: Make, units: Callable[[int], int],
                repeats: int) -> float:
    """Seconds per unit: least-squares slope of SPU's execution time over the units of work."""
    xs, ys = [], []
    for n in sizes:
        fn, args = make(n)
        xs.append(units(n))
        ys.append(_seconds(protocol_name, fn, args, repeats))
    slope = float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])
    return max(slope, ys[-1] / xs[-1] * 1e-3)  # never negative on a noisy machine


def _product_makes() -> dict[str, Make]:
    """The primitives made of secret products: a fixed-point product, a polynomial pixel as the export
    computes it (per-pixel secret coefficients, gathered for free; or public ones), an unfolded BN."""
    return {"mult_fxp": _elementwise(lambda x, y: x * y, inputs=2),
            "poly": _elementwise(lambda x, c2, c1, c0: x * (c2 * x + c1) + c0, inputs=4),
            "poly_public": _public_poly(_image_shape),
            "affine_secret": _elementwise(lambda x, s, t: x * s[:, :, :1, :1] + t[:, :, :1, :1], inputs=3)}


def _fits(meter: ProtocolMeter, sizes: Sequence[int], tolerance: float, makes: dict[str, Make],
          log: Callable[[str], None]) -> dict[str, Fit]:
    fits: dict[str, Fit] = {}
    for name, make in makes.items():
        fits[name] = f = Fit(meter, name, sizes, make, tolerance)
        log(f"  {name:14s} bytes {f.bytes} rounds {f.rounds_measured} -> {_num(f.a)} B/unit + {_num(f.b)} B, "
            f"shares {_shares(f.shares)}")
    return fits


def _primitives(meter: ProtocolMeter, sizes: Sequence[int], tolerance: float, log: Callable[[str], None]) -> dict[str, Fit]:
    import jax.numpy as jnp

    comparisons = {"relu": _elementwise(lambda x: jnp.maximum(x, 0)), "compare": _elementwise(lambda x: x > 0),
                   "compare_select": _elementwise(lambda x, y: jnp.where(y > 0, x, 0), inputs=2)}
    return _fits(meter, sizes, tolerance, {**comparisons, **_product_makes()}, log)


def _select(fits: dict[str, Fit]) -> tuple[float, float, list[float]]:
    """A gated pixel: where(y > 0, x, 0) less the comparison; its shares from the two fits' bytes."""
    gated, compare = fits["compare_select"], fits["compare"]
    extra = gated.a - compare.a
    if extra <= 0:
        return 0.0, 0.0, compare.shares
    shares = [(gated.a * g - compare.a * c) / extra for g, c in zip(gated.shares, compare.shares)]
    return extra, gated.rounds - compare.rounds, _shares(shares)


def _ops(fits: dict[str, Fit], constant_rounds: float = 0.0, constant_b: float = 0.0) -> dict:
    """The per-element primitives of a profile (bytes, rounds, shares) from their fits."""
    def rounds(f: Fit) -> float:  # less the rounds of the public constants the function turned secret
        return f.rounds - (constant_rounds * round(f.b / constant_b) if constant_b and f.b > 0 else 0)

    select_bytes, select_rounds, select_shares = _select(fits)
    op = lambda f: {"bytes": _num(f.a), "rounds": rounds(f), "shares": _shares(f.shares)}  # noqa: E731
    return {"relu": op(fits["relu"]), "compare": op(fits["compare"]),
            "select": {"bytes": _num(select_bytes), "rounds": select_rounds, "shares": select_shares},
            "poly": op(fits["poly"]), "poly_public": op(fits["poly_public"]), "affine": op(fits["affine_secret"])}


def _calibrate_aby3(meter: ProtocolMeter, log: Callable[[str], None]) -> tuple[dict, dict[str, Fit]]:
    import jax.numpy as jnp

    fits = _primitives(meter, (256, 1024, 4096), 0.0, log)
    for name, sizes, make in [("conv_secret", (128, 512, 2048), _conv(4, 8)), ("linear_secret", (16, 64, 256), _dense()),
                              ("constant", (256, 1024, 4096),
                               _elementwise(lambda x: jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))))]:
        fits[name] = f = Fit(meter, name, sizes, make)
        log(f"  {name:14s} bytes {f.bytes} rounds {f.rounds_measured} -> {_num(f.a)} B/unit + {_num(f.b)} B")
    conv, dense, const = fits["conv_secret"], fits["linear_secret"], fits["constant"]
    if const.a != 0 or const.b <= 0:
        raise BenchbedError(f"calibration: padding a secret map should cost a fixed amount, got {const.record()}")
    for f in fits.values():
        if f.b not in (0, const.b):
            raise BenchbedError(f"calibration: unexpected fixed cost {f.b} B in {f.name}")
    if abs(conv.a - dense.a) > 1e-9:
        raise BenchbedError(f"calibration: conv ({conv.a} B/output) and linear ({dense.a} B/output) disagree")
    ops = _ops(fits, const.rounds, const.b)
    conv_rounds = conv.rounds - (const.rounds if conv.b > 0 else 0)
    profile = {
        **ops,
        "linear": {"per_output": {"bytes": _num(conv.a), "shares": _shares(conv.shares)},
                   "per_layer": {"rounds": conv_rounds}},
        "constant": {"bytes": _num(const.b), "rounds": const.rounds, "shares": _shares(const.shares)},
        "checks": {
            "relu = compare + select": fits["relu"].a == fits["compare_select"].a,
            "poly = 2 fixed-point products": fits["poly"].a == 2 * fits["mult_fxp"].a
            and fits["poly"].rounds == 2 * fits["mult_fxp"].rounds,
            "conv and linear bytes per output agree": conv.a == dense.a,
            "conv and linear rounds agree": conv_rounds == dense.rounds,
        },
    }
    return profile, fits


# SPU's Cheetah makes Beaver triples in HE-based OLE batches of 8,192 slots (FM64): 4,096 triples each;
# a product of at least two batches' slots (16,384 elements) is computed without triples
BEAVER_TRIPLES = 4096


def _beaver(delay_s: float, mult: Fit, log: Callable[[str], None]) -> dict:
    """The price of one batch of triples, measured after a warm-up whose product (large enough to skip
    the triples) set up the HE keys: a product of T + 1 elements draws one batch more than one of T."""
    big = np.random.default_rng(3).standard_normal((2, 4 * BEAVER_TRIPLES)).astype(np.float32)
    # one warm run: a second would find the first's leftover triples
    meter = ProtocolMeter("cheetah", delay_s, (lambda a: a[0] * a[1], [big]), warm_runs=1)
    product = lambda n: (lambda a: a[0] * a[1], [np.random.default_rng(n).standard_normal((2, n)).astype(np.float32)])  # noqa: E731
    one, more = meter.cost(*product(BEAVER_TRIPLES)), meter.cost(*product(BEAVER_TRIPLES + 1))
    batch = more - one
    # the batches of one call are made side by side: a product that draws one takes the batch's rounds
    # over those of a product whose triples are in the pool (the fit's warm runs)
    batch_rounds = max(one.rounds - mult.rounds, 0.0)
    if batch.bytes <= 0.5 * mult.a * BEAVER_TRIPLES:
        raise BenchbedError(f"calibration: a product of {BEAVER_TRIPLES + 1} elements cost {batch.bytes:.0f} B more "
                            f"than one of {BEAVER_TRIPLES}; SPU's triple batch is no longer {BEAVER_TRIPLES} triples")
    log(f"  triple batch   {batch.bytes:.0f} B, {batch_rounds:.1f} rounds per {BEAVER_TRIPLES} triples "
        f"(products of >= {4 * BEAVER_TRIPLES} elements skip them)")
    return {"triples": BEAVER_TRIPLES, "direct_min": 4 * BEAVER_TRIPLES,
            "batch": {"offline_bytes": _num(batch.bytes - mult.a), "offline_rounds": round(batch_rounds),
                      "offline_shares": _shares(one.shares)}}


def _setup_steps(delay_s: float, calls: Sequence[int], log: Callable[[str], None]) -> tuple[list[dict], dict]:
    """The setup a session pays when its largest comparison has n elements: a small HE product with
    its truncation (the keys every model's linear layers need) and a ReLU of n elements, first run
    less warm run, on the wire."""
    import jax.numpy as jnp

    rng = np.random.default_rng(7)
    u, k = rng.standard_normal((1, 1024)).astype(np.float32), rng.standard_normal((1024, 2)).astype(np.float32) / 32
    steps, measured = [], {}
    for n in calls:
        x = rng.standard_normal((1, n)).astype(np.float32)
        c = ProtocolMeter("cheetah", delay_s, warm_runs=1).cost(lambda u, k, x: (u @ k, jnp.maximum(x, 0)), [u, k, x])
        measured[str(n)] = {"bytes": _num(c.setup_bytes), "rounds": round(c.setup_rounds, 2)}
        log(f"  setup, largest comparison {n:7d}: {c.setup_bytes:.0f} B, {c.setup_rounds:.1f} rounds on the wire")
        cost = {"bytes": _num(c.setup_bytes), "rounds": round(c.setup_rounds), "shares": _shares(c.setup_shares)}
        if not steps or cost["bytes"] > steps[-1]["cost"]["bytes"] * 1.05:
            steps.append({"from_call": 0 if not steps else n, "cost": cost})
    return steps, measured


def _mult_setup(delay_s: float, log: Callable[[str], None]) -> dict:
    """What the first secret elementwise product adds to a session's setup (its HE keys)."""
    import jax.numpy as jnp

    rng = np.random.default_rng(8)
    u, k = rng.standard_normal((1, 1024)).astype(np.float32), rng.standard_normal((1024, 2)).astype(np.float32) / 32
    x = rng.standard_normal((1, 1024)).astype(np.float32)
    plain = ProtocolMeter("cheetah", delay_s, warm_runs=1).cost(lambda u, k, x: (u @ k, jnp.maximum(x, 0)), [u, k, x])
    product = ProtocolMeter("cheetah", delay_s, warm_runs=1).cost(lambda u, k, x: (u @ k, jnp.maximum(x, 0), x * x),
                                                          [u, k, x])
    extra = product.setup_bytes - plain.setup_bytes
    rounds = product.setup_rounds - plain.setup_rounds
    log(f"  product setup  {extra:.0f} B, {rounds:.1f} rounds")
    return {"bytes": _num(max(extra, 0.0)), "rounds": round(max(rounds, 0.0)), "shares": _shares(product.setup_shares)}


def _linear_measured(meter: ProtocolMeter, models, log: Callable[[str], None]) -> dict:
    """Every conv and dense layer shape of ``models``, measured warm. The first model's layers (small)
    have their rounds measured too; the later ones' runs take seconds each (ResNet-18's), so they are
    measured for bytes and shares only and take the median rounds of the measured layers (an HE
    layer's rounds do not grow with its size: one exchange of ciphertexts and the truncation)."""
    measured = {}
    for index, (name, shape, classes) in enumerate(models):
        torch.manual_seed(0)
        model = builtin_models().build(name, num_classes=classes, input_shape=shape)
        for _, module, shape_in, outputs, _ in linear_layers(model, shape):
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            key = linear_key(module, shape_in)
            if key in measured:
                continue
            weights = int(module.weight.numel())
            layer = {"inputs": int(np.prod(shape_in)), "outputs": int(outputs), "weights": weights,
                     "macs": weights * int(outputs) // int(module.weight.shape[0])}
            if index == 0:
                c = meter.cost(*_layer(module, shape_in))
                layer.update(bytes=_num(c.bytes), rounds_measured=round(c.rounds, 2), shares=_shares(c.shares),
                             seconds=round(c.seconds, 4))
            else:
                size, shares, seconds = meter.bytes_and_shares(*_layer(module, shape_in))
                layer.update(bytes=_num(size), shares=_shares(shares), seconds=round(seconds, 4))
            layer["model"] = name
            measured[key] = layer
            log(f"  {key:44s} {layer['bytes']:.0f} B" + (f", {layer['rounds_measured']} rounds"
                                                         if "rounds_measured" in layer else ""))
    # each layer's rounds measured from wall time carry the jitter of seconds of HE work; the layers'
    # median is the rounds of every one
    rounds = int(round(float(np.median([m["rounds_measured"] for m in measured.values() if "rounds_measured" in m]))))
    for layer in measured.values():
        layer["rounds"] = rounds
    return measured


def _linear_formula(measured: dict) -> tuple[dict, dict]:
    """bytes = per layer + per input·inputs + per output·outputs + per weight·weights, non-negative
    least squares over the measured layers' bytes (so the large layers, those of the unmeasured
    models it prices, weigh most), with its worst error per layer and its error on each calibration
    model's layers together (what pricing a model of unmeasured shapes depends on). HE layers' bytes
    depend on how SPU packs each shape; the per-model error is the figure to trust. Local compute
    per multiply-accumulate is the largest model's measured seconds over its MACs (HE work at scale)."""
    from scipy.optimize import nnls

    rows = np.asarray([[1.0, m["inputs"], m["outputs"], m["weights"]] for m in measured.values()])
    target = np.asarray([m["bytes"] for m in measured.values()], float)
    coef, _ = nnls(rows, target)
    error = float(np.max(np.abs(rows @ coef - target) / target))
    models = [m["model"] for m in measured.values()]
    per_model = {name: round(float(sum((rows @ coef)[i] for i, n in enumerate(models) if n == name)
                                   / sum(target[i] for i, n in enumerate(models) if n == name) - 1), 4)
                 for name in dict.fromkeys(models)}
    rounds = int(np.median([m["rounds"] for m in measured.values()]))
    shares = list(np.sum([np.asarray(m["shares"]) * m["bytes"] for m in measured.values()], axis=0) / target.sum())
    largest = [m for m in measured.values() if m["model"] == list(dict.fromkeys(models))[-1]]
    per_mac = sum(m["seconds"] for m in largest) / sum(m["macs"] for m in largest)
    formula = {"per_mac": {"seconds": float(f"{per_mac:.4g}")},
               "per_layer": {"bytes": _num(coef[0]), "rounds": rounds, "shares": _shares(shares)},
               "per_input": {"bytes": _num(coef[1]), "shares": _shares(shares)},
               "per_output": {"bytes": _num(coef[2]), "shares": _shares(shares)},
               "per_weight": {"bytes": _num(coef[3]), "shares": _shares(shares)}}
    return formula, {"layers": len(measured), "worst_relative_error": round(error, 4),
                     "relative_error_per_model": per_model}


def scale_check(relu_bytes: float, steps: list[dict], log: Callable[[str], None] = print) -> dict:
    """ResNet-18's ReLU calls on CIFAR (its 17 sites' sizes, in forward order; 557,056 ReLUs, calls of
    up to 65,536) in one Cheetah session: the bytes of a warm run and the setup (first run less warm,
    on the wire) against what the profile prices for the same calls. SPU splits large OT calls over
    parallel instances, each with its own setup; this shows whether the priced setup steps and the
    per-element price hold at that scale. The small HE product first sets up the HE keys, as in the
    setup steps' measurement (a model's linear layers need them); its own warm bytes are measured apart."""
    import jax.numpy as jnp

    torch.manual_seed(0)
    model = builtin_models().build("resnet18_cifar", num_classes=100, input_shape=(3, 32, 32))
    sizes = [site.numel for site in sites(model).values()]
    rng = np.random.default_rng(11)
    u, k = rng.standard_normal((1, 1024)).astype(np.float32), rng.standard_normal((1024, 2)).astype(np.float32) / 32
    args = [u, k] + [rng.standard_normal((1, n)).astype(np.float32) for n in sizes]
    executable = compile_spu(lambda u, k, *xs: (u @ k, *(jnp.maximum(x, 0) for x in xs)), args)
    with Parties("cheetah", fxp_fraction_bits=FXP_BITS, delay_s=0.0) as parties:
        first, warm = parties.run(executable, args), parties.run(executable, args)
    product = ProtocolMeter("cheetah", 0.0, warm_runs=1).bytes(lambda u, k: u @ k, [u, k])
    setup = float(sum(first.sent_by_rank) - sum(warm.sent_by_rank))
    priced_setup = max((s["cost"]["bytes"] for s in steps if max(sizes) >= s["from_call"]), default=0.0)
    result = {"relus": int(sum(sizes)), "largest_call": int(max(sizes)), "calls": len(sizes),
              "warm_bytes": int(warm.bytes_total), "priced_bytes": float(relu_bytes * sum(sizes) + product),
              "setup_bytes_on_wire": setup, "priced_setup_bytes": float(priced_setup)}
    result["bytes_ratio"] = round(result["warm_bytes"] / result["priced_bytes"], 4)
    result["setup_ratio"] = round(setup / priced_setup, 4) if priced_setup else None
    log(f"  ResNet-18's ReLUs in one session: {warm.bytes_total / 1e6:.2f} MB warm vs {result['priced_bytes'] / 1e6:.2f} "
        f"MB priced; setup {setup / 1e6:.2f} MB on the wire vs {priced_setup / 1e6:.2f} MB priced")
    return result


# SPU's Cheetah multiplies calls of at least this many elements directly, without Beaver triples
DIRECT_MIN = 4 * BEAVER_TRIPLES
LARGE_CALLS = (DIRECT_MIN, 2 * DIRECT_MIN, 4 * DIRECT_MIN)


def _large_calls(meter: ProtocolMeter, log: Callable[[str], None]) -> tuple[dict, dict[str, Fit]]:
    """The price per element of products in calls of at least ``DIRECT_MIN`` elements, which SPU's
    Cheetah computes another way: a ``by_call`` step for every primitive made of secret products."""
    fits = {}
    for name, make in (("poly", _flat(lambda x, c2, c1, c0: x * (c2 * x + c1) + c0, inputs=4)),
                       ("poly_public", _public_poly(lambda n: (1, n))),
                       ("affine", _flat(lambda x, s, t: x * s + t, inputs=3))):
        # seconds of HE work per call at these sizes: their rounds carry a few delays of jitter
        fits[f"{name}_large"] = f = Fit(meter, f"{name}_large", LARGE_CALLS, make, 0.01, rounds_slack=4.0)
        log(f"  {name + ' >= ' + str(DIRECT_MIN):24s} bytes {f.bytes} rounds {f.rounds_measured} -> {_num(f.a)} B/unit")
    steps = {name: [{"from_call": DIRECT_MIN, "bytes": _num(fits[f"{name}_large"].a),
                     "rounds": fits[f"{name}_large"].rounds, "shares": _shares(fits[f"{name}_large"].shares)}]
             for name in ("poly", "poly_public", "affine")}
    return steps, fits


def polynomial_parts(protocol_name: str, delay_s: float | None = None, log: Callable[[str], None] = print) -> dict:
    """Only what prices a polynomial (secret and public coefficients; for Cheetah its calls of every
    size and its triple batches), to merge into a calibrated profile (``calibrate --only polynomials``)."""
    proto = protocol(protocol_name)
    delay = delay_s if delay_s is not None else (0.05 if proto.name == "aby3" else 0.15)
    meter = ProtocolMeter(proto.name, delay)
    sizes = (256, 1024, 4096) if proto.name == "aby3" else (256, 576, 1024)
    fits = _fits(meter, sizes, 0.0 if proto.name == "aby3" else 0.03, _product_makes(), log)
    op = lambda f: {"bytes": _num(f.a), "rounds": f.rounds, "shares": _shares(f.shares)}  # noqa: E731
    parts = {"poly": op(fits["poly"]), "poly_public": op(fits["poly_public"]), "affine": op(fits["affine_secret"])}
    if proto.name == "cheetah":
        steps, large = _large_calls(meter, log)
        for name, step in steps.items():
            parts[name]["by_call"] = step
        parts["beaver"] = _beaver(delay, fits["mult_fxp"], log)
        fits.update(large)
    parts["measurements"] = {name: f.record() for name, f in fits.items()}
    return parts


def merged(profile: dict, parts: dict, today: str) -> dict:
    """``profile`` with the re-measured ``parts`` in place, each primitive's other fields (its simulator
    seconds) kept, and their measurements beside the others."""
    out = dict(profile)
    for key, value in parts.items():
        if key != "measurements":
            out[key] = {**out[key], **value} if key != "beaver" and isinstance(out.get(key), dict) else value
    if "seconds" in out.get("poly", {}) and "seconds" not in out["poly_public"]:  # one product to poly's two
        out["poly_public"]["seconds"] = float(f"{out['poly']['seconds'] / 2:.4g}")
    out["measurements"] = {**out.get("measurements", {}), **parts.get("measurements", {})}
    out.setdefault("measured_with", {})["polynomials_date"] = today
    return out


def _calibrate_cheetah(meter: ProtocolMeter, quick: bool, log: Callable[[str], None]) -> tuple[dict, dict[str, Fit]]:
    fits = _primitives(meter, (256, 576, 1024), 0.03, log)
    profile = _ops(fits)
    steps, large = _large_calls(meter, log)
    for name, step in steps.items():
        profile[name]["by_call"] = step
    fits.update(large)
    profile["beaver"] = _beaver(meter.delay_s, fits["mult_fxp"], log)
    steps, setup_measured = _setup_steps(meter.delay_s, SETUP_CALLS[:2] if quick else SETUP_CALLS, log)
    profile["setup"] = steps
    profile["mult_setup"] = _mult_setup(meter.delay_s, log)
    # linear layers measured warm, after a layer of their own kind has set up the HE keys
    measured = _linear_measured(meter, QUICK_MODELS if quick else CALIBRATION_MODELS, log)
    formula, fit = _linear_formula(measured)
    profile["linear"] = {**formula, "measured": {k: {f: m[f] for f in ("bytes", "rounds", "shares", "seconds")}
                                                 for k, m in measured.items()}}
    profile["checks"] = {
        # OT messages vary by a few bytes from run to run
        "relu = compare + select (within 2%)": abs(fits["relu"].a - fits["compare_select"].a) <= 0.02 * fits["relu"].a,
        "linear formula within 25% of each model's measured layers together":
            all(abs(e) <= 0.25 for e in fit["relative_error_per_model"].values()),
    }
    if not quick:
        profile["scale_check"] = check = scale_check(fits["relu"].a, steps, log)
        profile["checks"]["ResNet-18's ReLUs within 5% and their setup within 25% of the price"] = (
            abs(check["bytes_ratio"] - 1) <= 0.05 and check["setup_ratio"] is not None
            and abs(check["setup_ratio"] - 1) <= 0.25)
    profile["linear_fit"] = fit
    profile["measurements_setup"] = setup_measured
    profile["measurements_linear"] = measured
    return profile, fits


def calibrate(*, protocol_name: str = "aby3", quick: bool = False, delay_s: float | None = None,
              log: Callable[[str], None] = print) -> dict:
    import jax

    proto = protocol(protocol_name)
    # cheetah's warm runs take up to a second of local HE work whose jitter a longer delay keeps below a round
    delay = delay_s if delay_s is not None else (0.05 if proto.name == "aby3" else 0.15)
    log(f"measuring communication ({proto.name}, {FIELD}, fxp {FXP_BITS}, all {proto.parties} parties profiled, "
        f"rounds on links delayed {delay * 1e3:.0f} ms)")
    meter = ProtocolMeter(proto.name, delay)
    if proto.name == "aby3":
        profile, fits = _calibrate_aby3(meter, log)
    else:
        profile, fits = _calibrate_cheetah(meter, quick, log)

    log("measuring local execution time (simulator, this CPU)")
    repeats = 1 if quick else 3
    if proto.name == "aby3":
        big = (16384, 262144) if quick else (16384, 65536, 262144)
    else:
        big = (1024, 16384) if quick else (1024, 4096, 16384)
    per_cmp = _time_slope(proto.name, big, _elementwise(lambda x: x > 0), lambda n: n, repeats)
    per_mult = _time_slope(proto.name, big, _elementwise(lambda x, y: x * y, inputs=2), lambda n: n, repeats)
    for name, seconds in (("relu", per_cmp + per_mult), ("compare", per_cmp), ("select", per_mult),
                          ("poly", 2 * per_mult), ("poly_public", per_mult), ("affine", per_mult)):
        profile[name]["seconds"] = float(f"{seconds:.4g}")
    if proto.name == "aby3":  # cheetah's comes from its measured HE layers
        conv_sides = (8, 16) if quick else (8, 16, 32)
        per_mac = _time_slope(proto.name, [16 * s * s for s in conv_sides], _conv(16, 16), lambda n: n * 16 * 9,
                              repeats)
        profile["linear"]["per_mac"] = {"seconds": float(f"{per_mac:.4g}")}
    profile = {
        "name": f"{proto.name}-spu", "parties": proto.parties,
        "description": f"Per-operation costs of {proto.name} ({FIELD} ring, {FXP_BITS} fractional bits) measured in "
                       f"SecretFlow SPU's simulator by `benchbed calibrate --protocol {proto.name}`"
                       f"{' --quick' if quick else ''}: bytes all parties together per element (per layer, input, "
                       "output or weight for linear layers), rounds measured on delayed links per call, shares by rank.",
        **profile,
        "notes": {
            "relu": "jnp.maximum(x, 0): comparison + select",
            "compare": "x > 0 alone, per comparison",
            "select": "jnp.where(secret_bool, x, 0) per gated element, measured as where(y > 0, x, 0) less the comparison",
            "poly": "x*(c2*x + c1) + c0 with SECRET per-pixel coefficients: two secret products and their truncations",
            "poly_public": "x*(c2*x + c1) + c0 with PUBLIC per-pixel coefficients (constants of the program): one "
                           "secret product; c2*x is a public-times-secret product with its truncation",
            "by_call": "a primitive's price for calls of at least from_call elements, where the protocol computes "
                       "them another way (SPU's Cheetah multiplies calls of 16,384 or more directly, no triples)",
            "linear": "conv or dense with SECRET weights, truncation included",
            "affine": "x*scale + shift with a secret per-channel scale (a BatchNorm that could not be folded)",
            "constant": "aby3: a public constant turned secret (padding zero), once per inference",
            "phases": "SPU separates no offline phase: setup is a session's first run less its second (on the wire); "
                      "Cheetah's Beaver triple batches are offline (input-independent), shared out over inferences "
                      "in proportion to the triples each uses; everything else is online",
            "rounds": "one-way message latencies on the critical path: (wall time on links delaying every message "
                      "by the measurement's delay - wall time on undelayed links) / delay, in a warm run",
            "seconds": "SPU's reported execution time (slowest party) with all parties simulated as threads on this "
                       f"machine ({platform.processor() or platform.machine()}); rough and relative only: shown "
                       "apart as the simulator's compute, never added into latency",
        },
        "measured_with": {
            "spu": spu_version(), "jax": jax.__version__, "numpy": np.__version__, "protocol": proto.name.upper(),
            "field": FIELD, "fxp_fraction_bits": FXP_BITS, "parties": proto.parties, "quick": quick,
            "round_delay_s": delay, "date": datetime.date.today().isoformat(),
            "machine": f"{platform.system()} {platform.machine()}",
        },
        "measurements": {name: f.record() for name, f in fits.items()},
    }
    return profile
