"""Secure inference of a benchbed model in SecretFlow SPU, measured: what ``benchbed secure-infer`` runs.

``measure`` runs one batch through SPU with every party profiled; ``secure_inference`` runs many
images and compares the result with the plaintext model; ``against_price`` sets a measurement beside
the price an entry recorded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from benchbed.errors import BenchbedError
from benchbed.model.passes import eval_mode
from benchbed.secure.cost import recorded_prices
from benchbed.secure.export import export
from benchbed.secure.spu_runtime import FIELD, compile_spu, protocol, run_executable, spu_version


@dataclass
class MpcMeasurement:
    bytes_total: int            # sent by all parties, one inference batch
    bytes_per_party: list[int]  # sent by each party
    rounds: int                 # sequential communication rounds (benchbed.spu_runtime)
    seconds: float              # SPU's reported execution time (slowest party), compilation excluded
    per_op: dict[str, dict]     # pphlo op -> {"bytes": all parties, "count": executions}
    kernels: dict[str, dict]    # MPC kernel -> {"calls", "bytes", "rounds"}
    logits: np.ndarray          # (N, classes) decoded SPU output


def _images(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.dim() != 4:
        raise BenchbedError(f"secure inference needs images of shape (N,C,H,W), got {tuple(images.shape)}")
    return images.float()


def _measure_with(fn: Callable, weights: list[np.ndarray], images: torch.Tensor, protocol_name: str,
                  fxp_fraction_bits: int, cache: dict | None = None) -> MpcMeasurement:
    x = fn.preprocess(images)
    args = [x, *weights]
    if cache is not None and x.shape in cache:
        executable = cache[x.shape]
    else:
        executable = compile_spu(fn, args)
        if cache is not None:
            cache[x.shape] = executable
    run = run_executable(executable, args, protocol_name=protocol_name, fxp_fraction_bits=fxp_fraction_bits)
    return MpcMeasurement(bytes_total=run.bytes_total, bytes_per_party=run.bytes_per_party, rounds=run.rounds,
                          seconds=run.seconds, per_op=run.per_op, kernels=run.kernels,
                          logits=np.asarray(run.outputs[0], dtype=np.float32))


def measure(model: nn.Module, images: torch.Tensor, *, protocol_name: str = "aby3",
            fxp_fraction_bits: int = 18) -> MpcMeasurement:
    """Run one batch (images: float (N,C,H,W) in [0,1]) through SPU with every party profiled."""
    images = _images(images)
    fn, weights = export(model, tuple(images.shape[1:]))
    return _measure_with(fn, weights, images, protocol_name, fxp_fraction_bits)


def _plaintext_logits(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    param = next(iter(list(model.parameters()) + list(model.buffers())), None)
    device = param.device if param is not None else torch.device("cpu")
    with torch.no_grad(), eval_mode(model):
        return model(images.to(device)).float().cpu().numpy()


def secure_inference(model: nn.Module, images: torch.Tensor, *, batch_size: int = 1, protocol_name: str = "aby3",
                     fxp_fraction_bits: int = 18) -> dict:
    """Run N images (in batches) through SPU and compare with the plaintext torch model in eval mode
    (fp32). Per-image bytes divide the totals by N; ``rounds_per_batch`` lists every batch's rounds
    (with batch_size 1, every image's); ``per_op`` holds each pphlo op's bytes per image."""
    images = _images(images)
    proto = protocol(protocol_name)
    if batch_size < 1:
        raise BenchbedError(f"batch_size must be at least 1, got {batch_size}")
    n = images.shape[0]
    if n == 0:
        raise BenchbedError("secure inference needs at least one image")
    fn, weights = export(model, tuple(images.shape[1:]))
    cache: dict = {}
    logits, rounds, seconds = [], [], 0.0
    total_bytes, busiest = 0, 0
    per_op: dict[str, dict] = {}
    for start in range(0, n, batch_size):
        m = _measure_with(fn, weights, images[start:start + batch_size], proto.name, fxp_fraction_bits, cache)
        logits.append(m.logits)
        total_bytes += m.bytes_total
        busiest += max(m.bytes_per_party)
        seconds += m.seconds
        rounds.append(m.rounds)
        for name, op in m.per_op.items():
            agg = per_op.setdefault(name, {"bytes_per_image": 0.0, "count": 0})
            agg["bytes_per_image"] += op["bytes"] / n
            agg["count"] = max(agg["count"], op["count"])
    secure = np.concatenate(logits)
    plain = _plaintext_logits(model, images)
    import jax

    return {
        "images": int(n),
        "bytes_per_image": total_bytes / n,
        "busiest_party_bytes_per_image": busiest / n,
        "rounds_per_batch": rounds,
        "rounds_per_inference": int(max(rounds)),
        "seconds_per_image": seconds / n,
        "top1_agreement": float(np.mean(secure.argmax(1) == plain.argmax(1))),
        "max_logit_error": float(np.abs(secure - plain).max()),
        "per_op": per_op,
        "spu_version": spu_version(),
        "jax_version": jax.__version__,
        "protocol": proto.name,
        "parties": proto.parties,
        "field": FIELD,
        "fxp_fraction_bits": int(fxp_fraction_bits),
        "batch_size": int(batch_size),
    }


def recorded_price(record: dict, profile: str) -> dict:
    """The entry's recorded price under ``profile`` (its ``secure_cost`` hook's answer)."""
    prices = recorded_prices(record)
    if profile not in prices:
        listed = ", ".join(prices) or "none"
        raise BenchbedError(f"entry {record.get('entry')!r} has no recorded {profile!r} price (recorded: {listed}); "
                            f"list {profile} in the suite's secure_cost.profiles and run it again")
    return prices[profile]


def against_price(entry: str, measured: dict, predicted: dict) -> dict:
    """A measurement of ``entry`` beside the price it recorded (``predicted``, one profile's)."""
    return {"entry": entry, "protocol": measured["protocol"], "measured": measured,
            "predicted": {k: predicted.get(k) for k in ("profile", "drelus", "secure_mults", "comm_mb",
                                                         "busiest_party_mb", "rounds", "compute_s")},
            "bytes_ratio": measured["bytes_per_image"] / (predicted["comm_mb"] * 1e6),
            # a batch runs its images side by side: its rounds are one image's
            "rounds_agree": all(r == predicted["rounds"] for r in measured["rounds_per_batch"])}
