"""``benchbed secure-infer RUN_DIR/ENTRY``: run a finished entry's model in SPU's 3-party simulator on
test images and put the measured bytes, rounds and time next to the cost model's prediction."""
from __future__ import annotations

from pathlib import Path

from benchbed.checkpoint import load_checkpoint
from benchbed.config import SecureCostSettings, Suite
from benchbed.cost import aby3_profile, price
from benchbed.data import load_dataset, to_float
from benchbed.errors import BenchbedError
from benchbed.records import read_json, write_json


def _locate(target: str) -> tuple[Path, str]:
    path = Path(target)
    entry = path.name.removesuffix(".json").removesuffix(".pt")
    run_dir = path.parent.parent if path.parent.name == "entries" else path.parent
    if not (run_dir / "entries" / f"{entry}.pt").exists():
        raise BenchbedError(f"no finished entry {entry!r} in {run_dir}; pass RUN_DIR/ENTRY as listed in RUN_DIR/entries")
    return run_dir, entry


def secure_infer(target: str, images: int, batch_size: int = 1) -> dict:
    try:
        from benchbed import mpc
    except ImportError as exc:
        raise BenchbedError(f"secure-infer needs SecretFlow SPU ({exc.name} is missing): pip install 'benchbed[mpc]'") from None
    run_dir, entry = _locate(target)
    suite = Suite.model_validate(read_json(run_dir / "suite.json")["suite"])
    spec = suite.dataset
    data = load_dataset(spec.name, spec.root, spec.download, spec.val_fraction, spec.split_seed)
    model = load_checkpoint(run_dir / "entries" / f"{entry}.pt").eval()
    measured = mpc.secure_inference(model, to_float(data.test_x[:images]), batch_size=batch_size)
    predicted = price(model, data.input_shape, SecureCostSettings(networks=suite.secure_cost.networks), aby3_profile())
    result = {"entry": entry, "measured": measured,
              "predicted": {k: predicted[k] for k in ("profile", "drelus", "secure_mults", "comm_mb", "rounds", "compute_s")},
              "bytes_ratio": measured["bytes_per_image"] / (predicted["comm_mb"] * 1e6)}
    write_json(run_dir / "entries" / f"{entry}.mpc.json", result)
    return result
