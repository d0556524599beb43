"""Checkpoints: the state dict plus every site's kernel, loadable with ``weights_only=True``."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchbed.errors import BenchbedError, first_line
from benchbed.files import atomic_write
from benchbed.model.dual_bn import convert_dual_bn, has_dual_bn
from benchbed.model.registry import ModelRegistry
from benchbed.model.sites import apply_site_specs, site_specs

FORMAT = "benchbed-checkpoint/1"


def checkpoint_payload(model: nn.Module, *, model_name: str, num_classes: int, input_shape: tuple[int, int, int],
                       mean: tuple, std: tuple) -> dict:
    """Everything needed to rebuild ``model``, as tensors and plain data only."""
    return {"format": FORMAT, "model": model_name, "num_classes": num_classes, "input_shape": list(input_shape),
            "mean": list(mean), "std": list(std), "build": dict(getattr(model, "build_options", {})),
            "sites": site_specs(model),
            "transforms": ["dual_bn"] if has_dual_bn(model) else [],
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
          "_load_state_dict_pre_hooks")


def fingerprint(model: nn.Module) -> str:
    """A digest of everything that decides what ``model`` computes: its state (weights, buffers, site
    kernels), which parameters train, every module's class (site kernels are modules), train/eval mode,
    hooks (by count and function) and any ``forward`` set on the instance itself."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    digest.update(repr([(n, p.requires_grad) for n, p in model.named_parameters()]).encode())
    digest.update(repr([(n, f"{type(m).__module__}.{type(m).__qualname__}", m.training,
                         [sorted(getattr(h, "__qualname__", type(h).__qualname__) for h in getattr(m, kind, {}).values())
                          for kind in _HOOKS], "forward" in vars(m))
                        for n, m in model.named_modules()]).encode())
    return digest.hexdigest()


def write_checkpoint(payload: dict, path: Path) -> str:
    """Write ``payload`` to ``path`` atomically; returns the sha256 of the bytes written."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    raw = buffer.getvalue()
    atomic_write(path, lambda f: f.write(raw))
    return hashlib.sha256(raw).hexdigest()


def save_checkpoint(model: nn.Module, path: Path, **description) -> None:
    write_checkpoint(checkpoint_payload(model, **description), path)


@dataclass(frozen=True)
class CheckpointFile:
    """A checkpoint as read from disk, once: its payload and the sha256 of its bytes."""

    path: str
    payload: dict
    sha256: str


def read_checkpoint(path: str | Path) -> CheckpointFile:
    """Read a checkpoint file. Only tensors and plain data are unpickled (``weights_only=True``)."""
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BenchbedError(f"no checkpoint at {path}") from None
    except OSError as exc:
        raise BenchbedError(f"cannot read checkpoint {path} ({exc.strerror or exc})") from None
    try:
        payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated, foreign or tampered files
        raise BenchbedError(f"checkpoint {path} is unreadable or unsafe ({first_line(exc)}); "
                            "re-create it with `benchbed run` or point the suite at another file") from None
    return CheckpointFile(str(path), payload, hashlib.sha256(raw).hexdigest())


def load_checkpoint(path: str | Path, models: ModelRegistry, **expect) -> nn.Module:
    """Rebuild the model a checkpoint describes (see ``model_from_payload`` for ``expect``)."""
    file = read_checkpoint(path)
    return model_from_payload(file.payload, file.path, models=models, **expect)


def _legacy_patch_coeffs(key: str, specs: dict[str, dict]) -> bool:
    """A kernel's coefficients that a checkpoint from before patch kernels had polynomials lacks: its
    spec has none either, and the rebuilt kernel's identity is what it computed."""
    site, _, leaf = key.rpartition(".kernel.")
    return leaf == "coeffs" and site in specs and "coeffs" not in specs[site]


def model_from_payload(payload: object, source: str = "checkpoint", *, models: ModelRegistry,
                       expect_model: str | None = None,
                       expect_classes: int | None = None, expect_input_shape: tuple[int, ...] | None = None,
                       expect_mean: tuple[float, ...] | None = None, expect_std: tuple[float, ...] | None = None) -> nn.Module:
    """Rebuild a model from a payload, checking it against what the suite and its dataset expect: the
    architecture is the registry's, traced afresh, and the sites' specs and the weights must fit it."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BenchbedError(f"{source} is not a benchbed checkpoint ({FORMAT}); save models with benchbed")
    try:
        return _rebuild(payload, source, models, expect_model, expect_classes, expect_input_shape, expect_mean,
                        expect_std)
    except BenchbedError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
        raise BenchbedError(f"checkpoint {source} is malformed ({type(exc).__name__}: {first_line(exc)}); "
                            "re-create it with benchbed") from None


def _rebuild(payload: dict, source: str, models: ModelRegistry, expect_model, expect_classes, expect_input_shape,
             expect_mean, expect_std) -> nn.Module:
    if expect_model and payload["model"] != expect_model:
        raise BenchbedError(f"checkpoint {source} holds a {payload['model']}, the suite wants {expect_model}")
    if expect_classes and payload["num_classes"] != expect_classes:
        raise BenchbedError(f"checkpoint {source} has {payload['num_classes']} classes, the dataset {expect_classes}")
    if expect_input_shape and tuple(payload["input_shape"]) != tuple(expect_input_shape):
        raise BenchbedError(f"checkpoint {source} was made for inputs of shape {tuple(payload['input_shape'])}, "
                            f"the dataset has {tuple(expect_input_shape)}; train a teacher on this dataset")
    for what, want in (("mean", expect_mean), ("std", expect_std)):
        if want is not None and not torch.allclose(torch.tensor(payload[what], dtype=torch.float64),
                                                   torch.tensor(want, dtype=torch.float64), atol=1e-4):
            raise BenchbedError(f"checkpoint {source} normalises inputs with another {what} than the dataset "
                                f"({payload[what]} vs {list(want)}); it was trained on other data")
    broken = [k for k, v in payload["state_dict"].items()
              if not isinstance(v, torch.Tensor) or (v.is_floating_point() and not torch.isfinite(v).all())]
    if broken:
        raise BenchbedError(f"checkpoint {source} has NaN, infinite or non-tensor weights ({', '.join(broken[:3])})")
    model = models.build(payload["model"], num_classes=payload["num_classes"], input_shape=payload["input_shape"],
                         mean=payload["mean"], std=payload["std"], **payload.get("build", {}))
    unknown = set(payload.get("transforms", [])) - {"dual_bn"}
    if unknown:
        raise BenchbedError(f"checkpoint {source} needs model transforms this benchbed lacks: {sorted(unknown)}")
    if "dual_bn" in payload.get("transforms", []):
        convert_dual_bn(model)
    try:
        apply_site_specs(model, payload["sites"])
    except BenchbedError as exc:
        raise BenchbedError(f"checkpoint {source} does not fit its model: {exc}") from None
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    missing = [k for k in missing if not _legacy_patch_coeffs(k, payload["sites"])]
    if missing or unexpected:
        listed = lambda keys: ", ".join(keys[:40]) + (f" and {len(keys) - 40} more" if len(keys) > 40 else "")  # noqa: E731
        raise BenchbedError(f"checkpoint {source} does not match its model: "
                            + "; ".join(f"{what} {len(keys)} keys ({listed(keys)})" for what, keys in
                                        (("it lacks", missing), ("it has unexpected", unexpected)) if keys)
                            + f". Build the model with benchbed.api.build_model({payload['model']!r}, ...), load your "
                            "weights into it and save its state_dict(): its keys are the ones expected")
    # the kernels compute what their specs say; a state dict that rewrote a kernel's counted state (a patch
    # site's sizes, a mask) after the spec built it would make the site count one thing and compute another
    stated, loaded = payload["sites"], site_specs(model)
    changed = [name for name in stated if not _same_spec(stated[name], loaded[name])]
    if changed:
        raise BenchbedError(f"checkpoint {source}: the state of site {changed[0]} disagrees with its spec"
                            + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")
                            + "; save the model with benchbed, whose spec and state come from one kernel")
    return model


def _same_spec(stated: dict, rebuilt: dict) -> bool:
    """Whether every field a site's spec states is what the rebuilt kernel holds (a field an older spec
    lacks, the rebuilt kernel's default, is not compared)."""
    for key, value in stated.items():
        if key not in rebuilt:
            return False
        other = rebuilt[key]
        if isinstance(value, torch.Tensor) or isinstance(other, torch.Tensor):
            x, y = torch.as_tensor(value), torch.as_tensor(other)
            if x.shape != y.shape or not torch.equal(x.to(y.dtype), y):
                return False
        elif value != other:
            return False
    return True
