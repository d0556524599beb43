"""The protocol profiles the core contributes (through the ``cost_profiles`` hook, like any plugin's):
the calibrated and published ones read from the JSON files beside this module, SecureNN's from its
authors' formulas. The pricing engine that reads a profile is ``benchbed.secure.cost``."""
from __future__ import annotations

import json
from pathlib import Path

from benchbed.errors import BenchbedError
from benchbed.secure.cost import CostProfile, Linear, Op

PROFILES_DIR = Path(__file__).parent
PROFILE_FILES = {name: PROFILES_DIR / f"{name}.json" for name in ("aby3", "cheetah", "delphi")}


def profile_from_file(name: str) -> CostProfile:
    """A profile measured by ``benchbed calibrate --protocol NAME``, or written from published figures."""
    path = PROFILE_FILES[name]
    if not path.exists():
        raise BenchbedError(f"no {name} profile at {path}; run `benchbed calibrate --protocol {name}`")
    return CostProfile.from_dict(json.loads(path.read_text()), name=name)


def aby3_profile() -> CostProfile:
    return profile_from_file("aby3")


def cheetah_profile() -> CostProfile:
    return profile_from_file("cheetah")


def delphi_profile() -> CostProfile:
    return profile_from_file("delphi")


SECURENN_LOG_P = 8


def securenn_profile() -> CostProfile:
    """SecureNN 3PC over Z_2^64 as the knapsack paper's authors price it (yg320/secure_inference,
    ``research/distortion``: ``get_brelu_bandwidth``, ``get_relu_cost``, ``get_conv_cost``; 8-byte
    ring elements, PRF-shared randomness). A DReLU sends 8·log_p + 24 − 5 = 83 elements with its
    digits as 8-bit values (log_p = 8); a ReLU adds a general secure multiplication of 5 elements; a
    patch ReLU gates its pixels with a scalar-vector product of 3 elements per pixel and 2 per DReLU;
    a convolution sends 2 elements per input, 2 per weight and the crypto provider's correction share,
    1 per output. Rounds are SecureNN's (DReLU 8, ReLU 10, multiplication 2, Beaver opening 1); all
    online: SecureNN's third party deals its correlated randomness during the inference. A polynomial
    pixel is two multiplications with secret coefficients, one with public ones."""
    ring = 8
    drelu = 8 * SECURENN_LOG_P + 24 - 5
    mult = 5
    return CostProfile(
        "securenn", "SecureNN 3PC as the knapsack paper's authors price it, Z_2^64", parties=3,
        relu=Op(ring * (drelu + mult), 10), compare=Op(ring * (drelu + 2), 8), select=Op(ring * 3, 2),
        poly=Op(ring * 2 * mult, 4), poly_public=Op(ring * mult, 2), affine=Op(ring * mult, 2),
        linear=Linear(per_output=Op(ring * 1), per_input=Op(ring * 2), per_weight=Op(ring * 2), per_layer=Op(0, 1)),
        source={"formulas": "yg320/secure_inference research/distortion (get_brelu_bandwidth, get_conv_cost), "
                            "arXiv:2304.10442, SecureNN"})
