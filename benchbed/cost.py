"""Analytic 3PC prices of a model's sites (the non-linear layers: where ReLU linearization acts).

Profile ``securenn`` (semi-honest 3PC over Z_2^64, as in the knapsack paper): a DReLU costs
8·⌈log2 p⌉ + 19 ring elements with p = 67 and 8 rounds; gating x by a DReLU bit is a secure
multiplication of 3 ring elements per gated pixel plus 2 per DReLU, 2 rounds; a polynomial's
square is one more multiplication. Sites run one after another, so rounds add up along the model.
Linear layers are not priced here."""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from benchbed.config import SecureCostSettings
from benchbed.sites import sites


@dataclass(frozen=True)
class Profile:
    name: str
    ring_bytes: int
    drelu_elements: int
    drelu_rounds: int
    mult_elements_per_pixel: int
    mult_elements_per_drelu: int
    mult_rounds: int


PROFILES = {
    "securenn": Profile("securenn", ring_bytes=8, drelu_elements=8 * math.ceil(math.log2(67)) + 19, drelu_rounds=8,
                        mult_elements_per_pixel=3, mult_elements_per_drelu=2, mult_rounds=2),
}


def price(model: nn.Module, settings: SecureCostSettings) -> dict:
    profile = PROFILES[settings.profile]
    per_site, total_bytes, total_rounds = [], 0, 0
    for name, site in sites(model).items():
        drelus, gated, squares = site.drelus, site.relus, site.poly_pixels
        elements = (drelus * (profile.drelu_elements + profile.mult_elements_per_drelu)
                    + (gated + squares) * profile.mult_elements_per_pixel)
        rounds = max(profile.drelu_rounds + profile.mult_rounds if drelus else 0,
                     profile.mult_rounds if squares else 0)
        per_site.append({"site": name, "drelus": drelus, "secure_mults": gated + squares,
                         "bytes": elements * profile.ring_bytes, "rounds": rounds})
        total_bytes += elements * profile.ring_bytes
        total_rounds += rounds
    latency = {net: total_bytes * 8 / (n.bandwidth_mbps * 1e6) + total_rounds * n.rtt_ms / 1e3
               for net, n in settings.networks.items()}
    return {"profile": profile.name, "scope": "non-linear layers",
            "drelus": sum(s["drelus"] for s in per_site), "secure_mults": sum(s["secure_mults"] for s in per_site),
            "comm_mb": total_bytes / 1e6, "rounds": total_rounds,
            "latency_s": latency, "per_site": per_site}
