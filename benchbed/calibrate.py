"""Per-operation ABY3 cost constants measured in SecretFlow SPU: ``python -m benchbed.calibrate``.

Every constant comes from tiny JAX functions run in SPU's 3-party ABY3 simulator (FM64, 18
fractional bits) with all three parties profiled, exactly as ``benchbed.mpc.measure`` runs a model.
Each function is measured at three sizes; the bytes must be exactly ``a·n + b`` and the rounds the
same at every size, or the script fails. ``a`` is the per-element constant, ``b`` the one-time cost
of public constants that SPU turns secret (e.g. a zero for padding), which is ``constant_bytes``.

Bytes are totals over the three parties; rounds are the most send actions of any party (SPU's own
latency proxy; truncation reassigns party roles at random, so a party's count may move by one).
The ``seconds_*`` figures are SPU's local execution time on the machine that ran the script:
simulator time with all three parties on one CPU, rough, for relative comparisons only.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from benchbed import mpc
from benchbed.errors import BenchbedError

DEFAULT_OUTPUT = Path(__file__).with_name("aby3_profile.json")
FXP_BITS = 18
CHANNELS = 16


def _run(fn: Callable, *args: np.ndarray) -> mpc.SpuRun:
    return mpc.run_secure(fn, *args, fxp_fraction_bits=FXP_BITS)


class Fit:
    """Bytes ``a·n + b`` and rounds of one function measured at several sizes."""

    def __init__(self, name: str, sizes: Sequence[int], make: Callable[[int], tuple[Callable, list[np.ndarray]]]):
        self.name, self.sizes = name, list(sizes)
        self.bytes, self.rounds = [], []
        for n in self.sizes:
            fn, args = make(n)
            run = _run(fn, *args)
            self.bytes.append(run.bytes_total)
            self.rounds.append(run.rounds)
        n0, n1 = self.sizes[0], self.sizes[-1]
        self.a = (self.bytes[-1] - self.bytes[0]) / (n1 - n0)
        self.b = self.bytes[0] - self.a * n0
        predicted = [self.a * n + self.b for n in self.sizes]
        if any(abs(p - m) > 1e-9 * max(m, 1) for p, m in zip(predicted, self.bytes)):
            raise BenchbedError(f"calibration: {name} bytes {self.bytes} at sizes {self.sizes} are not linear in size")
        if len(set(self.rounds)) != 1:
            raise BenchbedError(f"calibration: {name} rounds {self.rounds} at sizes {self.sizes} depend on the size")

    @property
    def round_count(self) -> int:
        return self.rounds[0]

    def record(self) -> dict:
        return {"sizes": self.sizes, "bytes": self.bytes, "rounds": self.rounds,
                "bytes_per_unit": _num(self.a), "bytes_fixed": _num(self.b)}


def _num(v: float) -> int | float:
    return int(round(v)) if abs(v - round(v)) < 1e-9 else round(float(v), 6)


def _elementwise(fn: Callable, inputs: int = 1, dtype=np.float32) -> Callable[[int], tuple[Callable, list[np.ndarray]]]:
    """``fn`` on ``inputs`` secret tensors of shape (1, 16, s, s) with n = 16·s² elements."""
    def make(n: int):
        side = int(round((n / CHANNELS) ** 0.5))
        assert CHANNELS * side * side == n
        rng = np.random.default_rng(n)
        shape = (1, CHANNELS, side, side)
        if np.issubdtype(dtype, np.integer):
            args = [rng.integers(-1000, 1000, shape).astype(dtype) for _ in range(inputs)]
        else:
            args = [rng.standard_normal(shape).astype(dtype) for _ in range(inputs)]
        return fn, args
    return make


def _channel_constant(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.9, (1, CHANNELS, 1, 1)).astype(np.float32)


def _conv_fn():
    from jax import lax

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return conv


def _conv(cin: int, cout: int) -> Callable[[int], tuple[Callable, list[np.ndarray]]]:
    """3×3 SAME conv with SECRET weights; n = output elements = cout·s²."""
    def make(n: int):
        side = int(round((n / cout) ** 0.5))
        assert cout * side * side == n
        rng = np.random.default_rng(n)
        return _conv_fn(), [rng.standard_normal((1, cin, side, side)).astype(np.float32),
                            (rng.standard_normal((cout, cin, 3, 3)) / (3 * cin ** 0.5)).astype(np.float32)]
    return make


def _dense(features: int = 64) -> Callable[[int], tuple[Callable, list[np.ndarray]]]:
    """Linear layer with SECRET weights; n = output features."""
    def make(n: int):
        rng = np.random.default_rng(n)
        return (lambda x, w: x @ w), [rng.standard_normal((1, features)).astype(np.float32),
                                      (rng.standard_normal((features, n)) / features ** 0.5).astype(np.float32)]
    return make


def _seconds(fn: Callable, args: list[np.ndarray], repeats: int) -> float:
    executable = mpc.compile_spu(fn, args)
    return min(mpc.run_executable(executable, args, fxp_fraction_bits=FXP_BITS).seconds for _ in range(repeats))


def _time_slope(sizes: Sequence[int], make: Callable[[int], tuple[Callable, list[np.ndarray]]],
                units: Callable[[int], int], repeats: int) -> float:
    """Seconds per unit: least-squares slope of SPU's execution time over the units of work."""
    xs, ys = [], []
    for n in sizes:
        fn, args = make(n)
        xs.append(units(n))
        ys.append(_seconds(fn, args, repeats))
    slope = float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])
    return max(slope, ys[-1] / xs[-1] * 1e-3)  # never negative on a noisy machine


def calibrate(*, quick: bool = False, log: Callable[[str], None] = print) -> dict:
    import jax
    import jax.numpy as jnp

    sizes = (256, 1024, 4096)
    fits: dict[str, Fit] = {}

    def fit(name: str, make, sizes=sizes) -> Fit:
        fits[name] = f = Fit(name, sizes, make)
        log(f"  {name:14s} bytes {f.bytes} rounds {f.rounds} -> {_num(f.a)} B/unit + {_num(f.b)} B")
        return f

    log("measuring communication (ABY3, FM64, fxp 18, all 3 parties profiled)")
    relu = fit("relu", _elementwise(lambda x: jnp.maximum(x, 0)))
    compare = fit("compare", _elementwise(lambda x: x > 0))
    gated = fit("compare_select", _elementwise(lambda x, y: jnp.where(y > 0, x, 0), inputs=2))
    mult = fit("mult_int", _elementwise(lambda x, y: x * y, inputs=2, dtype=np.int32))
    mult_fxp = fit("mult_fxp", _elementwise(lambda x, y: x * y, inputs=2))
    scale = _channel_constant(1)
    trunc = fit("trunc", _elementwise(lambda x: x * scale))
    c2, c1, c0 = _channel_constant(2) - 0.5, _channel_constant(3), _channel_constant(4) - 0.5
    poly = fit("poly", _elementwise(lambda x: x * (c2 * x + c1) + c0))
    conv = fit("conv_secret", _conv(4, 8), sizes=(128, 512, 2048))
    dense = fit("linear_secret", _dense(), sizes=(16, 64, 256))
    affine = fit("affine_secret", _elementwise(lambda x, s, t: x * s[:, :, :1, :1] + t[:, :, :1, :1], inputs=3))
    const = fit("constant", _elementwise(lambda x: jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))))

    if const.a != 0 or const.b <= 0:
        raise BenchbedError(f"calibration: padding a secret map should cost a fixed amount, got {const.record()}")
    constant_bytes, constant_rounds = const.b, const.round_count

    def without_constants(f: Fit) -> int:
        """Rounds of ``f`` less the rounds of the public constants it turned secret."""
        return f.round_count - (constant_rounds * round(f.b / constant_bytes) if f.b > 0 else 0)

    for f in (relu, compare, mult, trunc, poly, affine):
        if f.b not in (0, constant_bytes):
            raise BenchbedError(f"calibration: unexpected fixed cost {f.b} B in {f.name}")
    if abs(conv.a - dense.a) > 1e-9:
        raise BenchbedError(f"calibration: conv ({conv.a} B/output) and linear ({dense.a} B/output) disagree")

    profile = {
        "name": "aby3-spu",
        "description": "Per-operation costs of 3-party ABY3 (FM64 ring, 18 fractional bits) measured in "
                       "SecretFlow SPU's simulator by `python -m benchbed.calibrate`. Bytes are totals over the "
                       "3 parties per element (per output element for linear layers); rounds are the most send "
                       "actions of any party (SPU's latency proxy) per layer, whatever its size.",
        "relu_bytes": _num(relu.a), "relu_rounds": without_constants(relu),
        "compare_bytes": _num(compare.a), "compare_rounds": without_constants(compare),
        "select_bytes": _num(gated.a - compare.a),
        "select_rounds": without_constants(gated) - without_constants(compare),
        "mult_bytes": _num(mult.a), "mult_rounds": without_constants(mult),
        "trunc_bytes": _num(trunc.a), "trunc_rounds": without_constants(trunc),
        "poly_bytes": _num(poly.a), "poly_rounds": without_constants(poly),
        "linear_bytes_per_output": _num(conv.a), "linear_rounds": without_constants(conv),
        "affine_bytes": _num(affine.a), "affine_rounds": without_constants(affine),
        "constant_bytes": _num(constant_bytes), "constant_rounds": constant_rounds,
    }

    log("measuring local execution time (simulator, this CPU)")
    repeats = 1 if quick else 3
    big = (16384, 262144) if quick else (16384, 65536, 262144)
    per_cmp = _time_slope(big, _elementwise(lambda x: x > 0), lambda n: n, repeats)
    per_mult = _time_slope(big, _elementwise(lambda x, y: x * y, inputs=2, dtype=np.int32), lambda n: n, repeats)
    per_trunc = _time_slope(big, _elementwise(lambda x: x * scale), lambda n: n, repeats)
    conv_sides = (8, 16) if quick else (8, 16, 32)
    per_mac = _time_slope([16 * s * s for s in conv_sides], _conv(16, 16), lambda n: n * 16 * 9, repeats)
    profile.update({"seconds_per_comparison": float(f"{per_cmp:.4g}"), "seconds_per_mult": float(f"{per_mult:.4g}"),
                    "seconds_per_trunc": float(f"{per_trunc:.4g}"), "seconds_per_mac": float(f"{per_mac:.4g}")})

    profile["checks"] = {
        "relu = compare + select": relu.a == compare.a + (gated.a - compare.a)
        and without_constants(relu) == without_constants(gated),
        "fixed-point mult = mult + trunc": mult_fxp.a == mult.a + trunc.a
        and mult_fxp.round_count == mult.round_count + trunc.round_count,
        "conv and linear bytes per output agree": conv.a == dense.a,
        "every cost exactly linear in size, rounds constant": True,
    }
    profile["notes"] = {
        "relu": "jnp.maximum(x, 0): comparison (msb_a2b) + select (mul_a1b)",
        "compare": "x > 0 alone, per comparison",
        "select": "jnp.where(secret_bool, x, 0) per gated element, measured as where(y > 0, x, 0) less the comparison",
        "mult": "secret x secret elementwise product without truncation (int32 operands); a fixed-point product "
                "costs mult + trunc",
        "trunc": "one fixed-point truncation (what any multiply by a public float costs)",
        "poly": "x*(c2*x + c1) + c0 with public per-channel coefficients: trunc + mult + trunc",
        "linear": "conv (3x3, SAME) or dense with SECRET weights, per output element, truncation included; "
                  "independent of fan-in",
        "affine": "x*scale + shift with a secret per-channel scale (a BatchNorm that could not be folded)",
        "constant": "a public constant turned secret once per distinct constant per inference (padding zero, "
                    "reduction init value); SPU deduplicates it across layers",
        "seconds": "SPU's reported execution time (slowest party) with all 3 parties simulated as threads on "
                   f"this machine ({platform.processor() or platform.machine()}); rough and relative only. "
                   "seconds_per_mac is per multiply-accumulate of a secret-weight conv",
    }
    profile["measured_with"] = {
        "spu": mpc.spu_version(), "jax": jax.__version__, "numpy": np.__version__,
        "protocol": mpc.PROTOCOL, "field": mpc.FIELD, "fxp_fraction_bits": FXP_BITS, "parties": mpc.WORLD_SIZE,
        "date": datetime.date.today().isoformat(), "machine": f"{platform.system()} {platform.machine()}",
    }
    profile["measurements"] = {name: f.record() for name, f in fits.items()}
    return profile


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchbed.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the profile JSON")
    parser.add_argument("--quick", action="store_true", help="fewer timing repeats and sizes")
    args = parser.parse_args(argv)
    try:
        profile = calibrate(quick=args.quick)
    except BenchbedError as exc:
        parser.exit(1, f"error: {exc}\n")
    failed = [name for name, ok in profile["checks"].items() if not ok]
    args.output.write_text(json.dumps(profile, indent=2) + "\n")
    print(f"wrote {args.output}")
    if failed:
        print(f"warning: consistency checks failed: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
