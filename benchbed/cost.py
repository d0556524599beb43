"""3PC prices of one inference: per layer and in total, DReLUs, secure multiplications, bytes, rounds
and latency (local compute + bytes / bandwidth + rounds · RTT) on each network of the suite.

A protocol is a ``CostProfile``; plugins contribute profiles through the ``cost_profiles`` hook. The
pricing mirrors how ``benchbed.mpc`` runs a model in SPU: the client normalises its input in the
clear; BatchNorm after a convolution is folded into it; the global average pool is folded into the
classifier; residual additions are local; kept ReLU pixels are gathered and compared, the others go
through their channel's polynomial (free when it is the identity); a patch site compares one sum per
patch and selects the gated pixels. Layers run one after another, so rounds add up.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from benchbed.config import SecureCostSettings
from benchbed.dual_bn import DualBatchNorm2d
from benchbed.sites import IDENTITY, ZERO, MaskedKernel, PatchKernel, ReLUKernel, ReLUSite, sites


@dataclass(frozen=True)
class CostProfile:
    """Bytes (all parties together) and rounds of each primitive, per element unless said otherwise."""

    name: str
    description: str
    relu_bytes: float
    relu_rounds: int
    compare_bytes: float
    compare_rounds: int
    select_bytes: float
    select_rounds: int
    poly_bytes: float
    poly_rounds: int
    trunc_bytes: float
    trunc_rounds: int
    affine_bytes: float
    affine_rounds: int
    linear_bytes_per_output: float
    linear_bytes_per_input: float
    linear_bytes_per_weight: float
    linear_rounds: int
    constant_bytes: float = 0.0  # once per inference: a public constant (e.g. conv padding) made secret
    constant_rounds: int = 0
    seconds_per_comparison: float = 0.0
    seconds_per_mult: float = 0.0
    seconds_per_mac: float = 0.0
    offline_share: float = 0.0  # share of the bytes a preprocessing phase moves ahead of the input
    source: dict = field(default_factory=dict)


def securenn_profile() -> CostProfile:
    """SecureNN as the knapsack paper prices it (Z_2^64, p = 67): a DReLU is 8·⌈log2 p⌉ + 19 ring elements
    in 8 rounds; gating x by it is a multiplication of 3 elements per pixel plus 2 per DReLU in 2 rounds;
    a Beaver matrix product opens its masked input and weights (2 elements each) in 1 round."""
    ring = 8
    drelu = 8 * math.ceil(math.log2(67)) + 19
    return CostProfile(
        "securenn", "SecureNN 3PC (knapsack paper's analytic formulas), Z_2^64",
        relu_bytes=ring * (drelu + 2 + 3), relu_rounds=10, compare_bytes=ring * (drelu + 2), compare_rounds=8,
        select_bytes=ring * 3, select_rounds=2, poly_bytes=ring * 3, poly_rounds=2, trunc_bytes=0, trunc_rounds=0,
        affine_bytes=ring * 3, affine_rounds=2, linear_bytes_per_output=0, linear_bytes_per_input=2 * ring,
        linear_bytes_per_weight=2 * ring, linear_rounds=1, source={"formulas": "arXiv:2304.10442, SecureNN"})


ABY3_FILE = Path(__file__).with_name("aby3_profile.json")


def aby3_profile() -> CostProfile:
    """Replicated 3-party sharing over Z_2^64 with constants measured in SPU (``python -m benchbed.calibrate``)."""
    data = json.loads(ABY3_FILE.read_text())
    fields = {k: data[k] for k in CostProfile.__dataclass_fields__ if k in data and k not in ("name", "description")}
    fields.setdefault("linear_bytes_per_input", 0.0)
    fields.setdefault("linear_bytes_per_weight", 0.0)
    return CostProfile("aby3", "ABY3 replicated sharing, Z_2^64, 18 fractional bits, calibrated on SPU",
                       source=data.get("measured_with", {}), **fields)


@dataclass
class LayerCost:
    layer: str
    kind: str
    drelus: int = 0
    secure_mults: int = 0
    macs: int = 0
    bytes: float = 0.0
    rounds: int = 0

    def add(self, bytes_: float, rounds: int) -> None:
        if bytes_:
            self.bytes += bytes_
            self.rounds += rounds


def _site_cost(name: str, site: ReLUSite, p: CostProfile) -> LayerCost:
    cost = LayerCost(name, site.kernel.kind)
    shape = site.shape
    kernel = site.kernel
    if isinstance(kernel, ReLUKernel):
        cost.drelus = site.numel
        cost.secure_mults = site.numel
        cost.add(p.relu_bytes * site.numel, p.relu_rounds)
    elif isinstance(kernel, MaskedKernel):
        kept = site.drelus
        cost.drelus, cost.secure_mults = kept, kept
        cost.add(p.relu_bytes * kept, p.relu_rounds)
        replaced = (1 - kernel.mask).expand(shape)
        c2, c1 = kernel.coeffs[:, 0].view(-1, 1, 1), kernel.coeffs[:, 1].view(-1, 1, 1)
        square = int((replaced * (c2 != 0)).sum())
        # c1·x + c0 needs a truncation unless c1 is 1 (a shift) or 0 (a constant), which are local
        scaled = int((replaced * ((c2 == 0) & (c1 != 1) & (c1 != 0))).sum())
        cost.secure_mults += square
        # the scaled pixels share the quadratics' first truncation, so their rounds overlap
        cost.add(p.poly_bytes * square + p.trunc_bytes * scaled, p.poly_rounds if square else p.trunc_rounds)
    elif isinstance(kernel, PatchKernel):
        _, height, width = shape
        gated = sum(height * width for hw in kernel.sizes.tolist() if tuple(hw) not in (IDENTITY, ZERO))
        cost.drelus = site.drelus
        cost.secure_mults = gated
        if cost.drelus:
            cost.add(p.compare_bytes * cost.drelus + p.select_bytes * gated, p.compare_rounds + p.select_rounds)
    else:
        raise ValueError(f"site {name} has a {type(kernel).__name__}, which has no price")
    return cost


def _linear_layers(model: nn.Module, input_shape: tuple[int, int, int]) -> list[tuple[str, nn.Module, int, int, bool]]:
    """(name, module, inputs, outputs, folded) for every conv, linear and BatchNorm in forward order;
    a BatchNorm whose input is a convolution's output is folded into it."""
    names = {m: n for n, m in model.named_modules()}
    order: list[tuple[str, nn.Module, int, int, bool]] = []
    conv_outputs: dict[int, torch.Tensor] = {}  # holding the tensors keeps their ids from being reused

    def hook(module, inputs, output):
        folded = False
        if isinstance(module, nn.Conv2d):
            conv_outputs[id(output)] = output
        elif id(inputs[0]) in conv_outputs:
            folded = True
        order.append((names[module], module, inputs[0][0].numel(), output[0].numel(), folded))

    watched = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))
               and not isinstance(m, DualBatchNorm2d)]
    handles = [m.register_forward_hook(hook) for m in watched]
    param = next(model.parameters())
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            model(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return order


def price(model: nn.Module, input_shape: tuple[int, int, int], settings: SecureCostSettings,
          profile: CostProfile) -> dict:
    """The 3PC price of one inference of ``model`` under ``profile``."""
    p = profile
    layers: list[LayerCost] = []
    for name, module, inputs, outputs, folded in _linear_layers(model, input_shape):
        if isinstance(module, nn.BatchNorm2d):
            if not folded:
                cost = LayerCost(name, "affine", secure_mults=outputs)
                cost.add(p.affine_bytes * outputs, p.affine_rounds)
                layers.append(cost)
            continue
        weights = module.weight.numel()
        macs = weights * (outputs // module.weight.shape[0])
        cost = LayerCost(name, "conv" if isinstance(module, nn.Conv2d) else "linear", macs=macs)
        cost.add(p.linear_bytes_per_output * outputs + p.linear_bytes_per_input * inputs
                 + p.linear_bytes_per_weight * weights, p.linear_rounds)
        layers.append(cost)
    site_layers = [_site_cost(name, site, p) for name, site in sites(model).items()]
    layers += site_layers
    total_bytes = sum(c.bytes for c in layers) + p.constant_bytes
    rounds = sum(c.rounds for c in layers) + p.constant_rounds
    drelus = sum(c.drelus for c in layers)
    mults = sum(c.secure_mults for c in layers)
    macs = sum(c.macs for c in layers)
    compute = drelus * p.seconds_per_comparison + mults * p.seconds_per_mult + macs * p.seconds_per_mac
    latency = {net: compute + total_bytes * 8 / (n.bandwidth_mbps * 1e6) + rounds * n.rtt_ms / 1e3
               for net, n in settings.networks.items()}
    offline = total_bytes * p.offline_share
    return {"profile": p.name, "drelus": drelus, "secure_mults": mults, "macs": macs,
            "comm_mb": total_bytes / 1e6, "online_mb": (total_bytes - offline) / 1e6, "offline_mb": offline / 1e6,
            "rounds": rounds, "compute_s": compute, "latency_s": latency,
            "per_layer": [vars(c) for c in layers],
            "nonlinear_mb": sum(c.bytes for c in site_layers) / 1e6}
