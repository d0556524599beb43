"""An entry's real model exported to the plain format, and to JAX, run on one test image against the
torch model: what a dry run checks before a day of GPU time is spent. It runs in the measuring
process (``benchbed.run.measurer``): JAX starts threads, which a process that forks entries must
never hold."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchbed.data.bundle import DataBundle, to_float
from benchbed.errors import first_line
from benchbed.model.plain import write_plain
from benchbed.secure.export import export


def exported(model: nn.Module, payload: dict, data: DataBundle, folder: Path) -> dict:
    """The export's agreement with ``model`` (its largest logit error, whether the classes agree), or its error."""
    out: dict = {}
    try:
        write_plain(payload, folder)
        model = model.cpu().eval()
        fn, weights = export(model, data.input_shape)
        x = to_float(data.test_x[:1].cpu())
        ours = np.asarray(fn(fn.preprocess(x.numpy()), *weights))
        with torch.no_grad():
            theirs = model(x).numpy()
        out["export_max_logit_error"] = float(np.abs(ours - theirs).max())
        out["export_agrees"] = bool(ours.argmax(1) == theirs.argmax(1)) and math.isfinite(out["export_max_logit_error"])
    except Exception as exc:  # an export failure is this entry's finding, not the dry run's end
        out["export_error"] = f"{type(exc).__name__}: {first_line(exc)}"
    return out
