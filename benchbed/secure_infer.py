"""Secure inference of a benchbed model in SecretFlow SPU, measured, and ``benchbed secure-infer``.

``measure`` runs one batch through SPU with every party profiled; ``secure_inference`` runs many
images and compares the result with the plaintext model; ``secure_infer`` does it for a finished
entry of a run and puts the measured bytes and rounds next to the price recorded in the entry.
Measurements live in ``RUN_DIR/secure_infer/<entry>.<protocol>.json``, outside ``entries/``, where
every JSON file is an entry record.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from benchbed.checkpoint import load_checkpoint
from benchbed.config import DatasetConfig
from benchbed.cost import recorded_prices
from benchbed.data import load_dataset, to_float
from benchbed.errors import BenchbedError
from benchbed.jax_export import export
from benchbed.records import read_json, write_json
from benchbed.sites import eval_mode
from benchbed.spu_runtime import FIELD, compile_spu, protocol, run_executable, spu_version

MEASUREMENTS_DIR = "secure_infer"


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


def _locate(target: str) -> tuple[Path, str]:
    path = Path(target)
    entry = path.name.removesuffix(".json").removesuffix(".pt")
    run_dir = path.parent.parent if path.parent.name == "entries" else path.parent
    if not (run_dir / "entries" / f"{entry}.pt").exists():
        raise BenchbedError(f"no finished entry {entry!r} in {run_dir}; pass RUN_DIR/ENTRY as listed in RUN_DIR/entries")
    return run_dir, entry


def recorded_price(record: dict, profile: str) -> dict:
    """The entry's recorded price under ``profile`` (its ``secure_cost`` hook's answer)."""
    prices = recorded_prices(record)
    if profile not in prices:
        listed = ", ".join(prices) or "none"
        raise BenchbedError(f"entry {record.get('entry')!r} has no recorded {profile!r} price (recorded: {listed}); "
                            f"list {profile} in the suite's secure_cost.profiles and run it again")
    return prices[profile]


def measurement_path(run_dir: Path, entry: str, protocol_name: str) -> Path:
    return run_dir / MEASUREMENTS_DIR / f"{entry}.{protocol_name}.json"


def secure_infer(target: str, images: int, batch_size: int = 1, protocol_name: str = "aby3") -> dict:
    proto = protocol(protocol_name)
    run_dir, entry = _locate(target)
    predicted = recorded_price(read_json(run_dir / "entries" / f"{entry}.json"), proto.name)
    spec = DatasetConfig.model_validate(read_json(run_dir / "suite.json")["suite"]["dataset"])
    data = load_dataset(spec.name, spec.root, spec.download, spec.val_fraction, spec.split_seed)
    model = load_checkpoint(run_dir / "entries" / f"{entry}.pt").eval()
    measured = secure_inference(model, to_float(data.test_x[:images]), batch_size=batch_size, protocol_name=proto.name)
    predicted_bytes = predicted["comm_mb"] * 1e6
    result = {"entry": entry, "protocol": proto.name, "measured": measured,
              "predicted": {k: predicted.get(k) for k in ("profile", "drelus", "secure_mults", "comm_mb",
                                                           "busiest_party_mb", "rounds", "compute_s")},
              "bytes_ratio": measured["bytes_per_image"] / predicted_bytes,
              # a batch runs its images side by side: its rounds are one image's
              "rounds_agree": all(r == predicted["rounds"] for r in measured["rounds_per_batch"])}
    path = measurement_path(run_dir, entry, proto.name)
    path.parent.mkdir(exist_ok=True)
    result["path"] = str(path)
    write_json(path, result)
    return result
