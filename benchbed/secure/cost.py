"""Secure prices of one inference: per layer and in total, DReLUs, secure multiplications, bytes,
rounds and latency on each network of the suite.

A protocol is a ``CostProfile``; plugins contribute profiles through the ``cost_profiles`` hook. The
pricing mirrors how ``benchbed.jax_export`` runs a model in SPU: the client normalises its input in
the clear; BatchNorm after a convolution is folded into it; the global average pool is folded into
the classifier; residual additions are local; kept ReLU pixels are gathered and compared, fixed
identity pixels pass for free and every other replaced pixel computes its channel's quadratic with
SECRET coefficients (trained polynomials are weights); a patch site compares one sum per patch,
selects the gated pixels, and prices its linearized channels as replaced pixels. Layers run one after
another, so rounds add up. A 2PC profile also prices the one-time setup and the Beaver triples its
secret products draw, in the batches SPU draws them.

Two byte conventions: ``comm_mb`` is what all parties send together (the figure papers report);
``busiest_party_mb`` is what the busiest party sends. Parties send in parallel on their own links,
so the bandwidth term of the latency is the busiest party's bytes:
latency = local compute + busiest-party bytes / bandwidth + rounds · RTT.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from benchbed.config import SecureCostSettings
from benchbed.errors import BenchbedError
from benchbed.model.dual_bn import DualBatchNorm2d
from benchbed.model.passes import probe_forward
from benchbed.model.sites import IDENTITY, ZERO, MaskedKernel, PatchKernel, ReLUKernel, ReLUSite, sites
from benchbed.secure.lowering import folded_batchnorms, secret_polynomial_channels

PRIMITIVES = ("relu", "compare", "select", "poly", "affine", "linear", "constant")


@dataclass(frozen=True)
class CostProfile:
    """Bytes (all parties together) and rounds of each primitive, per element unless said otherwise.

    ``poly`` is one pixel of a quadratic with secret coefficients (two secret products and their
    truncations); ``linear`` a conv or dense layer with secret weights, truncation included.
    ``busiest_share[primitive]`` is the share of that primitive's bytes its busiest party sends
    (an even split where a profile does not say). ``linear_measured`` holds layer prices measured
    per layer shape (``linear_key``), used before the per-element formula; ``mult_setup_*`` is paid
    once by a model with any secret elementwise product (a polynomial or an unfolded BatchNorm)."""

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
    affine_bytes: float
    affine_rounds: int
    linear_bytes_per_output: float
    linear_rounds: int
    linear_bytes_per_input: float = 0.0
    linear_bytes_per_weight: float = 0.0
    linear_bytes_per_layer: float = 0.0
    constant_bytes: float = 0.0  # once per inference (a public constant made secret; 2PC key and OT setup)
    constant_rounds: int = 0
    mult_setup_bytes: float = 0.0  # once, at the first secret elementwise product (2PC: its HE keys)
    mult_setup_rounds: int = 0
    # 2PC triples: SPU's Cheetah draws Beaver triples for a secret product from a cache that it refills,
    # when short of the product's n, with ceil(n / T) batches of T triples (an HE-based OLE batch each)
    beaver_batch_triples: int = 0  # T; 0: the protocol makes no triples on demand
    beaver_batch_bytes: float = 0.0
    beaver_batch_rounds: int = 0
    beaver_direct_min: int = 0  # products of at least this many elements skip the triples (not priced apart)
    parties: int = 3
    busiest_share: dict = field(default_factory=dict)
    linear_measured: dict = field(default_factory=dict)  # linear_key -> {"bytes", "rounds", "busiest_bytes"}
    seconds_per_comparison: float = 0.0
    seconds_per_mult: float = 0.0
    seconds_per_mac: float = 0.0
    offline_share: float = 0.0  # share of the bytes a preprocessing phase moves ahead of the input
    source: dict = field(default_factory=dict)

    def share(self, primitive: str) -> float:
        return float(self.busiest_share.get(primitive, 1.0 / self.parties))


SECURENN_LOG_P = 8


def securenn_profile() -> CostProfile:
    """SecureNN 3PC over Z_2^64 as the knapsack paper's authors price it (yg320/secure_inference,
    ``research/distortion``: ``get_brelu_bandwidth``, ``get_relu_cost``, ``get_conv_cost``; 8-byte
    ring elements, PRF-shared randomness). A DReLU sends 8·log_p + 24 − 5 = 83 elements with its
    digits as 8-bit values (log_p = 8); a ReLU adds a general secure multiplication of 5 elements; a
    patch ReLU gates its pixels with a scalar-vector product of 3 elements per pixel and 2 per DReLU;
    a convolution sends 2 elements per input, 2 per weight and the crypto provider's correction share,
    1 per output. Rounds are SecureNN's (DReLU 8, ReLU 10, multiplication 2, Beaver opening 1)."""
    ring = 8
    drelu = 8 * SECURENN_LOG_P + 24 - 5
    mult = 5
    return CostProfile(
        "securenn", "SecureNN 3PC as the knapsack paper's authors price it, Z_2^64",
        relu_bytes=ring * (drelu + mult), relu_rounds=10, compare_bytes=ring * (drelu + 2), compare_rounds=8,
        select_bytes=ring * 3, select_rounds=2, poly_bytes=ring * 2 * mult, poly_rounds=4,
        affine_bytes=ring * mult, affine_rounds=2, linear_bytes_per_output=ring * 1, linear_bytes_per_input=ring * 2,
        linear_bytes_per_weight=ring * 2, linear_rounds=1,
        source={"formulas": "yg320/secure_inference research/distortion (get_brelu_bandwidth, get_conv_cost), "
                            "arXiv:2304.10442, SecureNN"})


PROFILE_FILES = {name: Path(__file__).with_name("profiles") / f"{name}.json" for name in ("aby3", "cheetah")}
DESCRIPTIONS = {"aby3": "ABY3 replicated sharing, 3 parties, Z_2^64, 18 fractional bits, calibrated on SPU",
                "cheetah": "Cheetah 2PC (HE linear layers, silent-OT non-linear ones), Z_2^64, 18 fractional bits, "
                           "calibrated on SPU"}


def calibrated_profile(name: str) -> CostProfile:
    """A profile measured in SPU by ``benchbed calibrate --protocol NAME``."""
    path = PROFILE_FILES[name]
    if not path.exists():
        raise BenchbedError(f"no calibrated {name} profile at {path}; run `benchbed calibrate --protocol {name}`")
    data = json.loads(path.read_text())
    fields = {k: data[k] for k in CostProfile.__dataclass_fields__ if k in data and k not in ("name", "description")}
    return CostProfile(name, DESCRIPTIONS[name], source=data.get("measured_with", {}), **fields)


def aby3_profile() -> CostProfile:
    return calibrated_profile("aby3")


def cheetah_profile() -> CostProfile:
    return calibrated_profile("cheetah")


def linear_key(module: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The shape of a conv or dense layer, as ``linear_measured`` keys it."""
    if isinstance(module, nn.Conv2d):
        c, h, w = input_shape
        return (f"conv {c}x{h}x{w} -> {module.out_channels} k{module.kernel_size[0]}x{module.kernel_size[1]} "
                f"s{module.stride[0]} p{module.padding[0]}")
    return f"dense {module.in_features} -> {module.out_features}"


@dataclass
class LayerCost:
    layer: str
    kind: str
    drelus: int = 0
    secure_mults: int = 0
    poly_pixels: int = 0  # pixels of a quadratic with secret coefficients
    macs: int = 0
    bytes: float = 0.0
    busiest_bytes: float = 0.0
    rounds: int = 0

    def add(self, bytes_: float, rounds: int, share: float) -> None:
        if bytes_:
            self.bytes += bytes_
            self.busiest_bytes += bytes_ * share
            self.rounds += rounds


def _site_cost(name: str, site: ReLUSite, p: CostProfile) -> LayerCost:
    cost = LayerCost(name, site.kernel.kind)
    shape = site.shape
    kernel = site.kernel
    if isinstance(kernel, ReLUKernel):
        cost.drelus = site.numel
        cost.secure_mults = site.numel
        cost.add(p.relu_bytes * site.numel, p.relu_rounds, p.share("relu"))
    elif isinstance(kernel, MaskedKernel):
        kept = site.drelus
        cost.drelus, cost.secure_mults = kept, kept
        cost.add(p.relu_bytes * kept, p.relu_rounds, p.share("relu"))
        secret = torch.from_numpy(secret_polynomial_channels(kernel)).float().view(-1, 1, 1)
        poly = cost.poly_pixels = int(((1 - kernel.mask) * secret).expand(shape).sum())
        cost.secure_mults += 2 * poly
        cost.add(p.poly_bytes * poly, p.poly_rounds, p.share("poly"))
    elif isinstance(kernel, PatchKernel):
        _, height, width = shape
        gated = sum(height * width for hw in kernel.sizes.tolist() if tuple(hw) not in (IDENTITY, ZERO))
        poly = cost.poly_pixels = height * width * int(
            (kernel.linearized().cpu() & torch.from_numpy(secret_polynomial_channels(kernel))).sum())
        cost.drelus = site.drelus
        cost.secure_mults = gated + 2 * poly
        if cost.drelus:
            cost.add(p.compare_bytes * cost.drelus, p.compare_rounds, p.share("compare"))
            cost.add(p.select_bytes * gated, p.select_rounds, p.share("select"))
        cost.add(p.poly_bytes * poly, p.poly_rounds, p.share("poly"))
    else:
        raise ValueError(f"site {name} has a {type(kernel).__name__}, which has no price")
    return cost


def linear_layers(model: nn.Module, input_shape: tuple[int, int, int]
                  ) -> list[tuple[str, nn.Module, tuple[int, ...], int, bool]]:
    """(name, module, input shape, outputs, folded) for every conv, linear and BatchNorm in forward
    order; a BatchNorm is folded when the export folds it: into a conv whose only user it is."""
    folded = folded_batchnorms(model, input_shape)
    names = {m: n for n, m in model.named_modules()}
    order: list[tuple[str, nn.Module, tuple[int, ...], int, bool]] = []

    def hook(module, inputs, output):
        name = names[module]
        # a DualBatchNorm2d runs one of its inner BatchNorms; the export folds the pair by its own name
        is_folded = name in folded or name.rpartition(".")[0] in folded
        order.append((name, module, tuple(inputs[0][0].shape), output[0].numel(), is_folded))

    probe_forward(model, input_shape, {m: hook for m in model.modules()
                                       if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))
                                       and not isinstance(m, DualBatchNorm2d)})
    return order


def _linear_cost(name: str, module: nn.Module, shape_in: tuple[int, ...], outputs: int, p: CostProfile) -> LayerCost:
    weights = module.weight.numel()
    cost = LayerCost(name, "conv" if isinstance(module, nn.Conv2d) else "linear",
                     macs=weights * (outputs // module.weight.shape[0]))
    measured = p.linear_measured.get(linear_key(module, shape_in))
    if measured is not None:
        cost.bytes, cost.busiest_bytes, cost.rounds = measured["bytes"], measured["busiest_bytes"], measured["rounds"]
        return cost
    inputs = 1
    for d in shape_in:
        inputs *= d
    cost.add(p.linear_bytes_per_layer + p.linear_bytes_per_output * outputs + p.linear_bytes_per_input * inputs
             + p.linear_bytes_per_weight * weights, p.linear_rounds, p.share("linear"))
    return cost


def _product_calls(model: nn.Module, input_shape: tuple[int, int, int], layers: list[LayerCost]) -> list[int]:
    """Sizes of the secret elementwise products of one inference in the order the export runs them:
    a site's quadratic is two products over its replaced pixels (c2·x, then x·(c2·x + c1)), an
    unfolded BatchNorm one over its outputs."""
    products = {c.layer: [c.poly_pixels] * 2 if c.poly_pixels else [c.secure_mults]
                for c in layers if c.kind == "affine" or c.poly_pixels}
    if not products:
        return []
    order: list[str] = []
    probe_forward(model, input_shape, {m: lambda m, i, o, name=name: order.append(name)
                                       for name, m in model.named_modules() if name in products})
    return [n for name in order for n in products[name]]


def beaver_batches(products: list[int], p: CostProfile) -> int:
    """Triple batches a 2PC protocol draws for secret products of these sizes, in this order. As
    SPU's Cheetah does it (``CheetahMulState::TakeCachedBeaver``): a product of n takes n triples
    from the cache; when the cache holds fewer, ceil(n / T) batches of T are added first."""
    if not p.beaver_batch_triples:
        return 0
    cached = batches = 0
    for n in products:
        if p.beaver_direct_min and n >= p.beaver_direct_min:
            continue
        if cached < n:
            drawn = -(-n // p.beaver_batch_triples)
            batches += drawn
            cached += drawn * p.beaver_batch_triples
        cached -= n
    return batches


def price(model: nn.Module, input_shape: tuple[int, int, int], settings: SecureCostSettings,
          profile: CostProfile) -> dict:
    """The secure price of one inference of ``model`` under ``profile``."""
    p = profile
    layers: list[LayerCost] = []
    for name, module, shape_in, outputs, folded in linear_layers(model, input_shape):
        if isinstance(module, nn.BatchNorm2d):
            if not folded:
                cost = LayerCost(name, "affine", secure_mults=outputs)
                cost.add(p.affine_bytes * outputs, p.affine_rounds, p.share("affine"))
                layers.append(cost)
            continue
        layers.append(_linear_cost(name, module, shape_in, outputs, p))
    site_layers = [_site_cost(name, site, p) for name, site in sites(model).items()]
    layers += site_layers
    setup = LayerCost("setup", "setup")
    setup.add(p.constant_bytes, p.constant_rounds, p.share("constant"))
    products = _product_calls(model, input_shape, layers)
    if products:
        setup.add(p.mult_setup_bytes, p.mult_setup_rounds, p.share("constant"))
        batches = beaver_batches(products, p)
        setup.add(p.beaver_batch_bytes * batches, p.beaver_batch_rounds * batches, p.share("constant"))
    if setup.bytes:
        layers.append(setup)
    total_bytes = sum(c.bytes for c in layers)
    busiest = sum(c.busiest_bytes for c in layers)
    rounds = sum(c.rounds for c in layers)
    drelus = sum(c.drelus for c in layers)
    mults = sum(c.secure_mults for c in layers)
    macs = sum(c.macs for c in layers)
    compute = drelus * p.seconds_per_comparison + mults * p.seconds_per_mult + macs * p.seconds_per_mac
    latency = {net: compute + busiest * 8 / (n.bandwidth_mbps * 1e6) + rounds * n.rtt_ms / 1e3
               for net, n in settings.networks.items()}
    offline = total_bytes * p.offline_share
    return {"profile": p.name, "parties": p.parties, "drelus": drelus, "secure_mults": mults, "macs": macs,
            "comm_mb": total_bytes / 1e6, "busiest_party_mb": busiest / 1e6,
            "online_mb": (total_bytes - offline) / 1e6, "offline_mb": offline / 1e6,
            "rounds": rounds, "compute_s": compute, "latency_s": latency,
            "per_layer": [vars(c) for c in layers],
            "nonlinear_mb": sum(c.bytes for c in site_layers) / 1e6}


def recorded_prices(record: dict) -> dict[str, dict]:
    """An entry record's prices by profile name (a record from a suite with one profile holds one
    price, not keyed)."""
    prices = record.get("secure_cost") or {}
    return {prices["profile"]: prices} if "profile" in prices else prices
