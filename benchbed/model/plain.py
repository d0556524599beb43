"""The plain format of a linearized model, for engines and people that do not run benchbed: a folder
with ``manifest.json`` (the architecture by name, its input and normalisation, every site's kind and
shape) and ``arrays.npz`` (every tensor: the state dict and the sites' masks, patch sizes and
polynomial coefficients), read with ``allow_pickle=False``, so loading it runs no code.

A site's spec in the manifest is ``{"kind": "relu"}``; ``{"kind": "masked", "mask": A, "coeffs": A,
"trainable": bool}`` with the mask (C,H,W) or (C,1,1) of 0/1 (1: the pixel keeps its ReLU) and the
coefficients (C,3) of ``c2·x² + c1·x + c0`` that its other pixels compute; or ``{"kind": "patch",
"sizes": A, "coeffs": A, "trainable": bool}`` with one (h, w) patch per channel, (0, 0) for no ReLU
(the channel's polynomial) and (-1, -1) for a zeroed channel. ``A`` is ``{"array": KEY}``, a key of
``arrays.npz``. Every site has ``shape`` (C,H,W) and ``counted``. The format is the checkpoint's
payload (``benchbed.model.checkpoint``) with its tensors moved into the archive.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from benchbed.errors import BenchbedError, first_line
from benchbed.files import atomic_write, write_json

PLAIN_FORMAT = "benchbed-plain/1"
MANIFEST, ARRAYS = "manifest.json", "arrays.npz"


def _detach(value, path: str, arrays: dict[str, np.ndarray]):
    if isinstance(value, torch.Tensor):
        arrays[path] = value.detach().cpu().numpy()
        return {"array": path}
    if isinstance(value, dict):
        return {key: _detach(item, f"{path}/{key}" if path else str(key), arrays) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_detach(item, f"{path}/{i}", arrays) for i, item in enumerate(value)]
    return value


def _attach(value, arrays: dict[str, np.ndarray]):
    if isinstance(value, dict) and set(value) == {"array"}:
        key = value["array"]
        if key not in arrays:
            raise BenchbedError(f"the manifest names an array {key!r} that {ARRAYS} lacks")
        return torch.from_numpy(np.array(arrays[key]))
    if isinstance(value, dict):
        return {key: _attach(item, arrays) for key, item in value.items()}
    if isinstance(value, list):
        return [_attach(item, arrays) for item in value]
    return value


def write_plain(payload: dict, folder: Path) -> Path:
    """Write a checkpoint payload to ``folder`` in the plain format; returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    manifest = {**_detach({k: v for k, v in payload.items() if k != "format"}, "", arrays), "format": PLAIN_FORMAT}
    atomic_write(folder / ARRAYS, lambda f: np.savez(f, **arrays))
    write_json(folder / MANIFEST, manifest)
    return folder / MANIFEST


def read_plain(folder: Path, checkpoint_format: str) -> dict:
    """The checkpoint payload a plain folder holds (``checkpoint_format`` is the payload's format tag).
    Nothing in it is unpickled: an archive that holds objects is refused."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise BenchbedError(f"no {MANIFEST} in {folder}; write one with `benchbed export ENTRY --format plain`") from None
    except (OSError, ValueError) as exc:
        raise BenchbedError(f"{folder / MANIFEST} is unreadable ({first_line(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PLAIN_FORMAT:
        raise BenchbedError(f"{folder / MANIFEST} is not a {PLAIN_FORMAT} manifest")
    try:
        with np.load(folder / ARRAYS, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise BenchbedError(f"no {ARRAYS} in {folder}") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:  # ValueError: an object array (a pickle)
        raise BenchbedError(f"{folder / ARRAYS} is unreadable or holds objects ({first_line(exc)}); "
                            "only numeric arrays are accepted") from None
    except MemoryError:  # a header that declares an array far larger than its bytes
        raise BenchbedError(f"{folder / ARRAYS} declares an array too large to hold in memory; write the "
                            "model's own arrays with numpy.savez") from None
    return {**_attach({k: v for k, v in manifest.items() if k != "format"}, arrays), "format": checkpoint_format}
