"""Per-operation cost constants measured in SecretFlow SPU: ``benchbed calibrate [--protocol P]``.

Every constant comes from tiny JAX functions run in SPU's simulator (FM64, 18 fractional bits) with
every party profiled, exactly as ``benchbed.secure.measure`` runs a model. Each function is
measured at three sizes; the bytes must be ``a·n + b`` and the rounds the same at every size, or the
script fails. Rounds are sequential communication rounds as ``benchbed.spu_runtime`` counts them.

- ``aby3`` (3 parties): ``a`` is the per-element constant, ``b`` the one-time cost of public
  constants that SPU turns secret (e.g. a zero for padding), which is ``constant_bytes``.
- ``cheetah`` (2 parties): the first HE product and the first oblivious transfers in each direction
  set up keys and silent-OT state, once per inference (``constant_*``); the first secret elementwise
  product sets up its HE keys (``mult_setup_*``), and products draw Beaver triples in batches
  (``beaver_batch_*``, priced by ``benchbed.cost.beaver_batches``). Every primitive is measured as the difference between
  a run with a warm-up (that pays the setup) plus the primitive and the warm-up alone. Linear layers
  are HE-based and their price depends on how SPU packs the layer's shape into ciphertexts, so each
  layer shape of the calibration models is measured as it is (``linear_measured``); a per-layer +
  per-output formula fitted to them prices other shapes. Sizes stay within SPU's first silent-OT
  batch (layers of up to 1024 elements, as in the smoke suite's model at batch size 1): a model that
  draws more oblivious transfers pays refills that this profile does not price.

Bytes are totals over the parties; ``busiest_share`` is the share of each primitive's bytes that its
busiest party sends. The ``seconds_*`` figures are SPU's local execution time on the machine that
ran the script: simulator time with all parties on one CPU, rough, for relative comparisons only.
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
from benchbed.secure.cost import linear_key, linear_layers
from benchbed.secure.spu_runtime import FIELD, compile_spu, protocol, run_executable, run_secure, spu_version

FXP_BITS = 18
CHANNELS = 16
# the models whose layer shapes the cheetah profile measures: the smoke suite's. Larger layers (a
# 32x32 input) would draw more oblivious transfers than SPU's first silent-OT batch holds, and the
# refill they trigger belongs to the model's total demand, not to one layer
CALIBRATION_MODELS = [("resnet_narrow", (1, 8, 8))]

Make = Callable[[int], tuple[Callable, list[np.ndarray]]]


class Cost:
    """Bytes (all parties), the busiest party's bytes and rounds of one run, or of a difference of runs."""

    def __init__(self, bytes_: float, busiest: float, rounds: int):
        self.bytes, self.busiest, self.rounds = bytes_, busiest, rounds

    def __sub__(self, other: "Cost") -> "Cost":
        return Cost(self.bytes - other.bytes, self.busiest - other.busiest, self.rounds - other.rounds)


class Meter:
    """Runs functions in SPU under one protocol; with a warm-up, reports a function's cost on top of
    the warm-up's (the warm-up's outputs are returned too, so that SPU keeps its work)."""

    def __init__(self, protocol_name: str, warmup: tuple[Callable, list[np.ndarray]] | None = None):
        self.protocol = protocol_name
        self.warmup = warmup
        self.base = self._run(lambda: (), []) if warmup else Cost(0, 0, 0)

    def _run(self, fn: Callable, args: list[np.ndarray]) -> Cost:
        if self.warmup:
            wfn, wargs = self.warmup
            k = len(wargs)

            def both(*xs, measured=fn):
                return wfn(*xs[:k]), measured(*xs[k:])

            fn, args = both, [*wargs, *args]
        run = run_secure(fn, *args, protocol_name=self.protocol, fxp_fraction_bits=FXP_BITS)
        return Cost(run.bytes_total, run.busiest_party_bytes, run.rounds)

    def cost(self, fn: Callable, args: list[np.ndarray]) -> Cost:
        return self._run(fn, args) - self.base


class Fit:
    """Bytes ``a·n + b``, busiest-party share and rounds of one function measured at several sizes."""

    def __init__(self, meter: Meter, name: str, sizes: Sequence[int], make: Make, tolerance: float = 0.0):
        self.name, self.sizes = name, list(sizes)
        costs = [meter.cost(*make(n)) for n in self.sizes]
        self.bytes = [c.bytes for c in costs]
        self.rounds = [c.rounds for c in costs]
        n0, n1 = self.sizes[0], self.sizes[-1]
        self.a = (self.bytes[-1] - self.bytes[0]) / (n1 - n0)
        self.b = self.bytes[0] - self.a * n0
        self.share = (costs[-1].busiest - costs[0].busiest) / (self.bytes[-1] - self.bytes[0]) if self.a else 0.5
        predicted = [self.a * n + self.b for n in self.sizes]
        slack = tolerance * max(abs(b) for b in self.bytes) + 1e-9  # cheetah's OT messages vary by a few bytes
        if any(abs(p - m) > slack for p, m in zip(predicted, self.bytes)):
            raise BenchbedError(f"calibration: {name} bytes {self.bytes} at sizes {self.sizes} are not linear in size")
        if len(set(self.rounds)) != 1:
            raise BenchbedError(f"calibration: {name} rounds {self.rounds} at sizes {self.sizes} depend on the size")

    @property
    def round_count(self) -> int:
        return self.rounds[0]

    def record(self) -> dict:
        return {"sizes": self.sizes, "bytes": self.bytes, "rounds": self.rounds,
                "bytes_per_unit": _num(self.a), "bytes_fixed": _num(self.b), "busiest_share": round(self.share, 4)}


def _num(v: float) -> int | float:
    return int(round(v)) if abs(v - round(v)) < 1e-9 else round(float(v), 6)


def _elementwise(fn: Callable, inputs: int = 1, dtype=np.float32) -> Make:
    """``fn`` on ``inputs`` secret tensors of shape (1, 16, s, s) with n = 16·s² elements."""
    def make(n: int):
        side = int(round((n / CHANNELS) ** 0.5))
        assert CHANNELS * side * side == n
        rng = np.random.default_rng(n)
        shape = (1, CHANNELS, side, side)
        if np.issubdtype(dtype, np.integer):
            args = [rng.integers(-1000, 1000, shape).astype(dtype) for _ in range(inputs)]
        else:
            args = [rng.standard_normal(shape).astype(np.float32) * 0.5 for _ in range(inputs)]
        return fn, args
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
    executable = compile_spu(fn, args)
    return min(run_executable(executable, args, protocol_name=protocol_name, fxp_fraction_bits=FXP_BITS).seconds
               for _ in range(repeats))


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


def _primitives(meter: Meter, sizes: Sequence[int], tolerance: float, log: Callable[[str], None]) -> dict[str, Fit]:
    import jax.numpy as jnp

    fits: dict[str, Fit] = {}

    def fit(name: str, make: Make, sizes=sizes) -> Fit:
        fits[name] = f = Fit(meter, name, sizes, make, tolerance)
        log(f"  {name:14s} bytes {f.bytes} rounds {f.rounds} -> {_num(f.a)} B/unit + {_num(f.b)} B, "
            f"busiest party {f.share:.3f}")
        return f

    fit("relu", _elementwise(lambda x: jnp.maximum(x, 0)))
    fit("compare", _elementwise(lambda x: x > 0))
    fit("compare_select", _elementwise(lambda x, y: jnp.where(y > 0, x, 0), inputs=2))
    fit("mult_fxp", _elementwise(lambda x, y: x * y, inputs=2))
    # a polynomial pixel as the export computes it: per-pixel secret coefficients (gathered for free)
    fit("poly", _elementwise(lambda x, c2, c1, c0: x * (c2 * x + c1) + c0, inputs=4))
    fit("affine_secret", _elementwise(lambda x, s, t: x * s[:, :, :1, :1] + t[:, :, :1, :1], inputs=3))
    return fits


def _common(fits: dict[str, Fit]) -> dict:
    relu, compare, gated = fits["relu"], fits["compare"], fits["compare_select"]
    return {
        "relu_bytes": _num(relu.a), "compare_bytes": _num(compare.a), "select_bytes": _num(gated.a - compare.a),
        "poly_bytes": _num(fits["poly"].a), "affine_bytes": _num(fits["affine_secret"].a),
        "busiest_share": {"relu": round(relu.share, 4), "compare": round(compare.share, 4),
                          "select": round(((gated.a * gated.share - compare.a * compare.share) / (gated.a - compare.a))
                                          if gated.a != compare.a else relu.share, 4),
                          "poly": round(fits["poly"].share, 4), "affine": round(fits["affine_secret"].share, 4)},
    }


def _calibrate_aby3(log: Callable[[str], None]) -> tuple[dict, dict[str, Fit]]:
    import jax.numpy as jnp

    meter = Meter("aby3")
    fits = _primitives(meter, (256, 1024, 4096), 0.0, log)
    for name, sizes, make in [("conv_secret", (128, 512, 2048), _conv(4, 8)), ("linear_secret", (16, 64, 256), _dense()),
                              ("constant", (256, 1024, 4096),
                               _elementwise(lambda x: jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))))]:
        fits[name] = f = Fit(meter, name, sizes, make)
        log(f"  {name:14s} bytes {f.bytes} rounds {f.rounds} -> {_num(f.a)} B/unit + {_num(f.b)} B")
    conv, dense, const = fits["conv_secret"], fits["linear_secret"], fits["constant"]
    if const.a != 0 or const.b <= 0:
        raise BenchbedError(f"calibration: padding a secret map should cost a fixed amount, got {const.record()}")
    constant_bytes, constant_rounds = const.b, const.round_count

    def without_constants(f: Fit) -> int:
        """Rounds of ``f`` less the rounds of the public constants it turned secret."""
        return f.round_count - (constant_rounds * round(f.b / constant_bytes) if f.b > 0 else 0)

    for f in fits.values():
        if f.b not in (0, constant_bytes):
            raise BenchbedError(f"calibration: unexpected fixed cost {f.b} B in {f.name}")
    if abs(conv.a - dense.a) > 1e-9:
        raise BenchbedError(f"calibration: conv ({conv.a} B/output) and linear ({dense.a} B/output) disagree")
    profile = _common(fits)
    profile.update({
        "relu_rounds": without_constants(fits["relu"]), "compare_rounds": without_constants(fits["compare"]),
        "select_rounds": without_constants(fits["compare_select"]) - without_constants(fits["compare"]),
        "poly_rounds": without_constants(fits["poly"]), "affine_rounds": without_constants(fits["affine_secret"]),
        "linear_bytes_per_output": _num(conv.a), "linear_rounds": without_constants(conv),
        "constant_bytes": _num(constant_bytes), "constant_rounds": constant_rounds,
    })
    profile["busiest_share"].update({"linear": round(conv.share, 4), "constant": round(1 / 3, 4)})
    profile["checks"] = {
        "relu = compare + select": fits["relu"].a == fits["compare_select"].a
        and without_constants(fits["relu"]) == without_constants(fits["compare_select"]),
        "poly = 2 fixed-point products": fits["poly"].a == 2 * fits["mult_fxp"].a
        and fits["poly"].round_count == 2 * fits["mult_fxp"].round_count,
        "conv and linear bytes per output agree": conv.a == dense.a,
    }
    return profile, fits


# SPU's Cheetah makes Beaver triples in HE-based OLE batches of 8,192 slots (FM64): 4,096 triples each;
# a product of at least two batches' slots (16,384 elements) is computed without triples
BEAVER_TRIPLES = 4096


def _beaver(u: np.ndarray, k: np.ndarray, mult: Fit, log: Callable[[str], None]) -> dict:
    """The price of one batch of triples, measured after a warm-up whose product (large enough to skip
    the triples) set up the HE keys: a product of T + 1 elements draws one batch more than one of T,
    and one of 2T + 1 one more than one of 2T."""
    big = np.random.default_rng(3).standard_normal((2, 4 * BEAVER_TRIPLES)).astype(np.float32)
    meter = Meter("cheetah", (lambda x, w, a: (x @ w, x > 0, a[0] * a[1]), [u, k, big]))
    sizes = (BEAVER_TRIPLES, BEAVER_TRIPLES + 1, 2 * BEAVER_TRIPLES, 2 * BEAVER_TRIPLES + 1)
    cost = [meter.cost(lambda a: a[0] * a[1], [np.random.default_rng(n).standard_normal((2, n)).astype(np.float32)])
            for n in sizes]
    batch, again = cost[1] - cost[0], cost[3] - cost[2]
    if batch.rounds <= 0 or again.rounds != batch.rounds:
        raise BenchbedError(f"calibration: products of {', '.join(map(str, sizes))} elements took "
                            f"{', '.join(str(c.rounds) for c in cost)} rounds; SPU's triple batch is no longer "
                            f"{BEAVER_TRIPLES} triples")
    log(f"  triple batch   {batch.bytes} B, {batch.rounds} rounds per {BEAVER_TRIPLES} triples "
        f"(products of >= {4 * BEAVER_TRIPLES} elements skip them)")
    return {"beaver_batch_triples": BEAVER_TRIPLES, "beaver_batch_bytes": _num(batch.bytes - mult.a),
            "beaver_batch_rounds": int(batch.rounds), "beaver_direct_min": 4 * BEAVER_TRIPLES}


def _calibrate_cheetah(log: Callable[[str], None]) -> tuple[dict, dict[str, Fit]]:
    rng = np.random.default_rng(7)
    # the silent-OT state is sized on its first use: the warm-up uses it at the size of a small model's layer
    u = rng.standard_normal((1, 1024)).astype(np.float32)
    k = rng.standard_normal((1024, 2)).astype(np.float32) / 32

    def warm(x, w):  # an HE product with its truncation (OT one way) and a comparison (OT the other way)
        return x @ w, x > 0

    def warm_twice(x, w, y, v):
        return warm(x, w), warm(y, v)

    bare = Meter("cheetah")
    once, twice = bare.cost(warm, [u, k]), bare.cost(warm_twice, [u, k, u + 1, k + 1])
    setup = once - (twice - once)
    log(f"  setup          {setup.bytes} B, {setup.rounds} rounds (HE keys, silent-OT state both ways)")
    meter = Meter("cheetah", (warm, [u, k]))
    fits = _primitives(meter, (256, 576, 1024), 0.03, log)
    profile = _common(fits)
    poly, affine = fits["poly"], fits["affine_secret"]
    profile.update({
        "relu_rounds": fits["relu"].round_count, "compare_rounds": fits["compare"].round_count,
        "select_rounds": fits["compare_select"].round_count - fits["compare"].round_count,
        "poly_rounds": poly.round_count, "affine_rounds": affine.round_count,
        "constant_bytes": _num(setup.bytes), "constant_rounds": int(setup.rounds),
    })
    profile.update(_beaver(u, k, fits["mult_fxp"], log))
    # the fits' fixed part is the first product's: its HE keys and one batch of triples
    profile["mult_setup_bytes"] = _num(max(poly.b, affine.b) - profile["beaver_batch_bytes"])
    mult_once = meter.cost(lambda x, y: x * y, _elementwise(lambda x, y: x, inputs=2)(256)[1])
    mult_twice = meter.cost(lambda x, y: (x * y, (x + 1) * y), _elementwise(lambda x, y: x, inputs=2)(256)[1])
    first = int(mult_once.rounds - (mult_twice.rounds - mult_once.rounds))  # keys and a batch, in the first
    profile["mult_setup_rounds"] = first - profile["beaver_batch_rounds"]
    profile["poly_rounds"] -= first
    profile["affine_rounds"] -= first

    measured, keys = {}, []
    for name, shape in CALIBRATION_MODELS:
        torch.manual_seed(0)
        model = builtin_models().build(name, num_classes=10, input_shape=shape)
        for _, module, shape_in, outputs, _ in linear_layers(model, shape):
            if isinstance(module, nn.BatchNorm2d):
                continue
            key = linear_key(module, shape_in)
            if key in measured:
                continue
            c = meter.cost(*_layer(module, shape_in))
            measured[key] = {"bytes": _num(c.bytes), "busiest_bytes": _num(c.busiest), "rounds": int(c.rounds),
                             "outputs": int(outputs)}
            keys.append(key)
            log(f"  {key:40s} {c.bytes} B, {c.rounds} rounds")
    outputs = np.asarray([measured[k]["outputs"] for k in keys], float)
    costs = np.asarray([measured[k]["bytes"] for k in keys], float)
    per_output, per_layer = np.polyfit(outputs, costs, 1) if len(set(outputs)) > 1 else (0.0, costs.mean())
    profile.update({
        "linear_measured": measured, "linear_bytes_per_layer": _num(float(per_layer)),
        "linear_bytes_per_output": _num(float(per_output)),
        "linear_rounds": int(np.median([measured[k]["rounds"] for k in keys])),
    })
    busiest = sum(m["busiest_bytes"] for m in measured.values()) / sum(m["bytes"] for m in measured.values())
    profile["busiest_share"].update({"linear": round(busiest, 4),
                                     "constant": round(setup.busiest / setup.bytes, 4) if setup.bytes else 0.5})
    profile["checks"] = {
        # OT messages vary by a few bytes from run to run
        "relu = compare + select (within 2%)": abs(fits["relu"].a - fits["compare_select"].a) <= 0.02 * fits["relu"].a,
        "setup paid once": setup.bytes > 0 and (twice - once).bytes < once.bytes,
    }
    fits["setup"] = setup
    return profile, fits


def calibrate(*, protocol_name: str = "aby3", quick: bool = False, log: Callable[[str], None] = print) -> dict:
    import jax

    proto = protocol(protocol_name)
    log(f"measuring communication ({proto.name}, {FIELD}, fxp {FXP_BITS}, all {proto.parties} parties profiled)")
    if proto.name == "aby3":
        profile, fits = _calibrate_aby3(log)
    else:
        profile, fits = _calibrate_cheetah(log)
    profile = {"name": f"{proto.name}-spu", "parties": proto.parties,
               "description": f"Per-operation costs of {proto.name} ({FIELD} ring, {FXP_BITS} fractional bits) measured "
                              f"in SecretFlow SPU's simulator by `benchbed calibrate --protocol {proto.name}`"
                              f"{' --quick' if quick else ''}. Bytes are totals over the {proto.parties} parties per "
                              "element (per output element for linear layers); rounds are sequential communication "
                              "rounds (benchbed.spu_runtime) per layer, whatever its size.",
               **profile}

    log("measuring local execution time (simulator, this CPU)")
    repeats = 1 if quick else 3
    big = (16384, 262144) if proto.name == "aby3" else (256, 1024)
    if not quick and proto.name == "aby3":
        big = (16384, 65536, 262144)
    per_cmp = _time_slope(proto.name, big, _elementwise(lambda x: x > 0), lambda n: n, repeats)
    per_mult = _time_slope(proto.name, big, _elementwise(lambda x, y: x * y, inputs=2), lambda n: n, repeats)
    conv_sides = (8, 16) if quick or proto.name != "aby3" else (8, 16, 32)
    per_mac = _time_slope(proto.name, [16 * s * s for s in conv_sides], _conv(16, 16), lambda n: n * 16 * 9, repeats)
    profile.update({"seconds_per_comparison": float(f"{per_cmp:.4g}"), "seconds_per_mult": float(f"{per_mult:.4g}"),
                    "seconds_per_mac": float(f"{per_mac:.4g}")})
    profile["notes"] = {
        "relu": "jnp.maximum(x, 0): comparison (msb_a2b) + select (mul_a1b)",
        "compare": "x > 0 alone, per comparison",
        "select": "jnp.where(secret_bool, x, 0) per gated element, measured as where(y > 0, x, 0) less the comparison",
        "poly": "x*(c2*x + c1) + c0 with SECRET per-pixel coefficients: two secret products and their truncations",
        "linear": "conv or dense with SECRET weights, truncation included",
        "affine": "x*scale + shift with a secret per-channel scale (a BatchNorm that could not be folded)",
        "constant": "once per inference: aby3, a public constant turned secret (padding zero); cheetah, the HE keys "
                    "and the silent-OT state in both directions",
        "seconds": "SPU's reported execution time (slowest party) with all parties simulated as threads on this machine "
                   f"({platform.processor() or platform.machine()}); rough and relative only. seconds_per_mac is per "
                   "multiply-accumulate of a secret-weight conv",
    }
    if proto.name == "cheetah":
        profile["notes"]["silent_ot"] = ("SPU sizes its silent-OT batch on first use and refills it when a model draws "
                                         "more: measured within the first batch (layers up to 1024 elements), so a "
                                         "larger model's refills are not priced")
    profile["measured_with"] = {
        "spu": spu_version(), "jax": jax.__version__, "numpy": np.__version__, "protocol": proto.name.upper(),
        "field": FIELD, "fxp_fraction_bits": FXP_BITS, "parties": proto.parties, "quick": quick,
        "date": datetime.date.today().isoformat(), "machine": f"{platform.system()} {platform.machine()}",
    }
    profile["measurements"] = {name: f.record() for name, f in fits.items() if isinstance(f, Fit)}
    return profile
