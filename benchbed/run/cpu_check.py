"""An entry's metered compute read against the CPU time its process used, as the kernel counted it
for the parent (``benchbed.run.isolation.cpu_seconds``): what no code in the entry's process can
rewrite. A method that computes beyond the meter — layers called around its hooks, a copy of the
model with its hooks cleared, a thread of its own, the meter's tally rewritten — spends CPU time its
metered compute does not need, and its record is flagged.

What the metered compute needs is its training images times what one costs on this machine, measured
by the measuring process on the suite's model (``benchbed.run.measurer.training_cost``). A method
also computes what the meter does not count and the protocol does not charge (augmentation, masks
and element-wise kernels, a knapsack's dynamic programme, its own evaluation on validation), so the
rule allows ``FACTOR`` times the need plus ``SLACK_S``. Where no CPU time can be read (a Ray worker,
a GPU run, off Linux) the record says so by having no ``cpu`` field."""
from __future__ import annotations

import torch

FACTOR = 4.0
SLACK_S = 3.0


def read(compute: dict, cpu_seconds: float | None, cost_per_image: float | None, train_size: int,
         device: torch.device) -> dict | None:
    """``{"seconds", "metered_seconds", "allowed_seconds", "flagged"}`` for an entry whose process used
    ``cpu_seconds``, or None where there is nothing to read."""
    if cpu_seconds is None or cost_per_image is None or device.type != "cpu" or not train_size:
        return None
    images = float((compute.get("used") or {}).get("epochs") or 0.0) * train_size
    needed = images * cost_per_image
    allowed = FACTOR * needed + SLACK_S
    return {"seconds": round(cpu_seconds, 2), "metered_seconds": round(needed, 2), "allowed_seconds": round(allowed, 2),
            "flagged": cpu_seconds > allowed}
