"""Secure prices of one inference: per layer and in total, per phase of the protocol — DReLUs, secure
multiplications, bytes, rounds, latency on each network of the suite and the client's storage.

A protocol is a ``CostProfile``; plugins contribute profiles through the ``cost_profiles`` hook (the
core's, and the JSON files they are read from, are in ``benchbed.secure.profiles``). The
pricing mirrors how ``benchbed.secure.export`` runs a model in SPU: the client normalises its input
in the clear; BatchNorm after a convolution is folded into it; the global average pool is folded
into the classifier; residual additions are local; kept ReLU pixels are gathered and compared, fixed
identity pixels pass for free and every other replaced pixel computes its channel's quadratic with
SECRET coefficients (trained polynomials are weights); a patch site compares one sum per patch,
selects the gated pixels, and prices its linearized channels as replaced pixels. A polynomial's
coefficients are priced SECRET or PUBLIC as the profile (or the suite) says: Delphi shows its own
quadratic's to both parties; trained polynomials are model weights a server would keep secret.

A site's ReLU (or compare-and-select) pixels and its polynomial pixels are independent branches:
their bytes add up, but a protocol sends each round's messages of both in one message, so the site
takes the longer branch's rounds. SPU runs them one after another; ``rounds_spu`` keeps that figure,
which ``benchbed secure-infer`` checks against SPU's measurement.

Three phases, as the field's systems report them:

- **setup**, once per client session (keys, base OTs): its own column on a board, never added to
  an inference's latency;
- **offline**, input-independent work per inference (Beaver triples, garbled circuits, HE
  preprocessing). Its layers do not wait for each other, so its rounds are its longest call's;
- **online**, after the input arrives. Layers run one after another, so its rounds add up.

The latency of an inference is offline + online. Rounds are one-way message latencies on the
critical path (as ``benchbed.secure.spu_runtime`` measures them), so each costs half a round trip:
``network_latency_s`` = busiest-party bytes / bandwidth + rounds · RTT / 2, on every network. Local
compute is apart (``compute_s``, with ``compute_kind``): a profile whose per-operation seconds come
from a real deployment (Delphi's, from its own code) adds them into ``latency_s``; SPU's are its
simulator's, parties as threads of one process on this machine, so ``latency_s`` holds only the
network terms for them. ``comm_mb`` is what all parties send together (the figure papers report);
``busiest_party_mb`` the expected bytes of the party that sends most, over runs: each primitive's
bytes split between the parties as calibrated (the mean share per rank over repeated calls), then
the largest party's sum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import nn

from benchbed.config import SecureCostSettings
from benchbed.errors import BenchbedError
from benchbed.model.dual_bn import DualBatchNorm2d
from benchbed.model.passes import probe_forward
from benchbed.model.sites import IDENTITY, ZERO, MaskedKernel, PatchKernel, ReLUKernel, ReLUSite, sites
from benchbed.secure.lowering import folded_batchnorms, secret_polynomial_channels

PHASES = ("setup", "offline", "online")
COEFFICIENTS = ("secret", "public")
COMPUTE_KINDS = ("simulator", "deployment")


@dataclass(frozen=True)
class Op:
    """What one unit of a primitive costs (an element, a layer or a call, as its field says), per phase.

    ``shares`` are each party's share of the primitive's bytes, by rank, as measured (an even split
    where a profile gives none); ``storage_bytes`` is what the client keeps from the offline phase
    for the online one."""

    bytes: float = 0.0           # online, all parties together
    rounds: float = 0.0          # online, per call
    offline_bytes: float = 0.0
    offline_rounds: float = 0.0
    storage_bytes: float = 0.0
    seconds: float = 0.0         # online local compute
    offline_seconds: float = 0.0
    shares: tuple[float, ...] = ()
    offline_shares: tuple[float, ...] = ()  # the offline bytes' split, where it differs
    # (from_call, price): where a protocol prices a call of at least that many elements otherwise
    by_call: tuple[tuple[int, "Op"], ...] = ()

    def at(self, call: int) -> "Op":
        """The price per unit in a call of ``call`` elements: the largest size step it reaches, else this."""
        steps = [(start, op) for start, op in self.by_call if call >= start]
        return max(steps, key=lambda s: s[0])[1] if steps else self

    @classmethod
    def of(cls, data: dict | None) -> "Op":
        data = dict(data or {})
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise BenchbedError(f"a cost profile's primitive has unknown fields {sorted(unknown)}")
        for key in ("shares", "offline_shares"):
            if key in data:
                data[key] = tuple(float(s) for s in data[key])
        if "by_call" in data:
            steps = [dict(step) for step in data["by_call"]]
            data["by_call"] = tuple(sorted(((int(step.pop("from_call")), cls.of(step)) for step in steps),
                                           key=lambda s: s[0]))
        return cls(**data)


@dataclass(frozen=True)
class Linear:
    """A conv or dense layer with secret weights. ``measured`` holds layers measured as they are,
    by ``linear_key``, used before the formula; ``he_slots``/``ciphertext`` price HE preprocessing
    by ciphertexts: the client sends kernel-area ciphertexts per block of ``he_slots`` inputs, the
    server one back per block of outputs (Delphi's layout)."""

    per_output: Op = Op()
    per_input: Op = Op()
    per_weight: Op = Op()
    per_layer: Op = Op()
    per_mac: Op = Op()
    he_slots: int = 0
    ciphertext: Op = Op()
    measured: dict = field(default_factory=dict)  # linear_key -> {"bytes", "rounds", "shares", "seconds"}


@dataclass(frozen=True)
class SetupStep:
    """The setup a session pays when its largest comparison call has at least ``from_call`` elements
    (SPU's Cheetah opens one more silent-OT instance, each with its own setup, for larger calls)."""

    from_call: int
    cost: Op


@dataclass(frozen=True)
class Beaver:
    """Triples a 2PC protocol makes for secret products: ``batch`` (offline) per ``triples``;
    products of at least ``direct_min`` elements take none (their price is measured with them)."""

    triples: int
    batch: Op
    direct_min: int = 0


@dataclass(frozen=True)
class CostProfile:
    """A protocol's price per primitive: ``relu`` a kept ReLU (comparison and select), ``compare`` a
    patch's comparison, ``select`` a gated pixel, ``poly`` a pixel of a quadratic with secret
    coefficients (two secret products and their truncations), ``poly_public`` one with coefficients
    both parties know (one secret product), ``affine`` an output of a BatchNorm that could not be
    folded, ``input`` an element of the client's image, ``constant`` once per inference; ``setup`` by
    largest comparison call and ``mult_setup`` (keys of the first secret elementwise product) once per
    session. ``coefficients`` is how the protocol itself treats a polynomial's coefficients (a suite
    may price the other way); ``compute_kind`` where the per-operation seconds come from: a real
    ``deployment`` (added into latency) or a ``simulator`` (shown apart, never in latency)."""

    name: str
    description: str
    parties: int = 3
    relu: Op = Op()
    compare: Op = Op()
    select: Op = Op()
    poly: Op = Op()
    poly_public: Op = Op()
    affine: Op = Op()
    linear: Linear = Linear()
    input: Op = Op()
    constant: Op = Op()
    setup: tuple[SetupStep, ...] = ()
    mult_setup: Op = Op()
    beaver: Beaver | None = None
    coefficients: str = "secret"
    compute_kind: str = "simulator"
    source: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.coefficients not in COEFFICIENTS:
            raise BenchbedError(f"profile {self.name}: coefficients must be one of {COEFFICIENTS}, "
                                f"not {self.coefficients!r}")
        if self.compute_kind not in COMPUTE_KINDS:
            raise BenchbedError(f"profile {self.name}: compute_kind must be one of {COMPUTE_KINDS}, "
                                f"not {self.compute_kind!r}")

    def poly_op(self, coefficients: str) -> Op:
        """A polynomial pixel's price with its coefficients ``public`` or ``secret``."""
        return self.poly_public if coefficients == "public" else self.poly

    def setup_for(self, largest_call: int) -> Op:
        steps = [s for s in self.setup if largest_call >= s.from_call]
        return max(steps, key=lambda s: s.from_call).cost if steps else Op()

    @classmethod
    def from_dict(cls, data: dict, *, name: str | None = None) -> "CostProfile":
        """A profile from its JSON form (``benchbed/secure/profiles/*.json``)."""
        linear = dict(data.get("linear") or {})
        ops = {k: Op.of(linear.pop(k)) for k in ("per_output", "per_input", "per_weight", "per_layer", "per_mac",
                                                 "ciphertext") if k in linear}
        beaver = data.get("beaver")
        return cls(
            name=name or data["name"], description=data.get("description", ""), parties=int(data.get("parties", 3)),
            **{k: Op.of(data.get(k)) for k in ("relu", "compare", "select", "poly", "poly_public", "affine",
                                               "input", "constant", "mult_setup")},
            coefficients=data.get("coefficients", "secret"), compute_kind=data.get("compute_kind", "simulator"),
            linear=Linear(**ops, he_slots=int(linear.pop("he_slots", 0)), measured=linear.pop("measured", {})),
            setup=tuple(SetupStep(int(s["from_call"]), Op.of(s["cost"])) for s in data.get("setup", [])),
            beaver=Beaver(int(beaver["triples"]), Op.of(beaver["batch"]), int(beaver.get("direct_min", 0)))
            if beaver else None,
            source=data.get("source") or data.get("measured_with") or {}, notes=data.get("notes") or {})


def linear_key(module: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The shape of a conv or dense layer, as ``Linear.measured`` keys it."""
    if isinstance(module, nn.Conv2d):
        c, h, w = input_shape
        return (f"conv {c}x{h}x{w} -> {module.out_channels} k{module.kernel_size[0]}x{module.kernel_size[1]} "
                f"s{module.stride[0]} p{module.padding[0]}")
    return f"dense {module.in_features} -> {module.out_features}"


@dataclass
class LayerCost:
    """One layer's price: per phase its bytes, each party's bytes, rounds (as the protocol runs and as
    SPU runs it) and local compute."""

    layer: str
    kind: str
    parties: int
    drelus: int = 0
    secure_mults: int = 0
    poly_pixels: int = 0  # pixels of a quadratic with trained or fixed coefficients
    macs: int = 0
    largest_call: int = 0  # elements of its largest comparison
    products: list = field(default_factory=list)  # sizes of its secret elementwise products
    bytes: dict = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    party_bytes: dict = field(default_factory=dict)
    rounds: dict = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    rounds_spu: dict = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))  # its ops one after another
    seconds: dict = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    storage_bytes: float = 0.0

    def _bytes(self, phase: str, amount: float, shares: tuple[float, ...]) -> None:
        if not amount:
            return
        split = np.asarray(shares if len(shares) == self.parties else [1 / self.parties] * self.parties, float)
        self.bytes[phase] += amount
        self.party_bytes[phase] = self.party_bytes.get(phase, np.zeros(self.parties)) + amount * split / split.sum()

    def _charge(self, op: Op, units: float) -> None:
        """``units`` of ``op``: everything but their online rounds."""
        self._bytes("online", op.bytes * units, op.shares)
        self._bytes("offline", op.offline_bytes * units, op.offline_shares or op.shares)
        for rounds in (self.rounds, self.rounds_spu):  # offline work is input-independent: nothing waits
            rounds["offline"] = max(rounds["offline"], op.offline_rounds)
        self.seconds["online"] += op.seconds * units
        self.seconds["offline"] += op.offline_seconds * units
        self.storage_bytes += op.storage_bytes * units

    def add(self, op: Op, units: float, calls: int = 1) -> None:
        """``units`` of ``op`` in ``calls`` sequential calls (nothing when there are no units)."""
        if not units:
            return
        self._charge(op, units)
        self.rounds["online"] += op.rounds * calls
        self.rounds_spu["online"] += op.rounds * calls

    def add_branches(self, *branches: list[tuple[Op, float]]) -> None:
        """Independent branches of one site, each a chain of (op, units) calls on its own pixels: their
        bytes add up; a protocol sends each round's messages of every branch in one message, so the
        online rounds are the longest branch's, while SPU runs the calls one after another."""
        longest = 0.0
        for branch in branches:
            chain = [(op, units) for op, units in branch if units]
            for op, units in chain:
                self._charge(op, units)
                self.rounds_spu["online"] += op.rounds
            longest = max(longest, sum(op.rounds for op, _ in chain))
        self.rounds["online"] += longest

    def add_setup(self, op: Op) -> None:
        """A one-time cost: ``op``'s bytes, rounds and seconds are the session's setup."""
        self._bytes("setup", op.bytes, op.shares)
        self.rounds["setup"] += op.rounds
        self.rounds_spu["setup"] += op.rounds
        self.seconds["setup"] += op.seconds

    def record(self) -> dict:
        """Its figures per inference (``bytes``, offline + online; ``rounds``, its online rounds and its
        offline ones), and per phase where it has any."""
        out = {k: getattr(self, k) for k in ("layer", "kind", "drelus", "secure_mults", "poly_pixels", "macs")}
        out["bytes"] = self.bytes["offline"] + self.bytes["online"]
        out["rounds"] = self.rounds["offline"] + self.rounds["online"]
        spu = self.rounds_spu["offline"] + self.rounds_spu["online"]
        if spu != out["rounds"]:
            out["rounds_spu"] = spu
        for phase in PHASES:
            if self.bytes[phase] or self.rounds[phase]:
                out[phase] = {"bytes": self.bytes[phase], "rounds": self.rounds[phase]}
        return out


def _site_cost(name: str, site: ReLUSite, p: CostProfile, coefficients: str) -> LayerCost:
    """A site's price. Its comparisons and its polynomial work on disjoint pixels: two branches. A
    polynomial pixel is two secret products with secret coefficients (c2·x, then x·(c2·x + c1)), one
    with public ones (c2·x is local); its price per pixel is the one for a call of its size."""
    cost = LayerCost(name, site.kernel.kind, p.parties)
    shape = site.shape
    kernel = site.kernel
    if isinstance(kernel, ReLUKernel):
        cost.drelus = cost.secure_mults = cost.largest_call = site.numel
        cost.add(p.relu, site.numel)
        return cost
    if isinstance(kernel, MaskedKernel):
        secret = torch.from_numpy(secret_polynomial_channels(kernel)).float().view(-1, 1, 1)
        poly = int(((1 - kernel.mask) * secret).expand(shape).sum())
        cost.drelus = cost.secure_mults = cost.largest_call = site.drelus
        comparisons = [(p.relu, site.drelus)]
    elif isinstance(kernel, PatchKernel):
        _, height, width = shape
        gated = sum(height * width for hw in kernel.sizes.tolist() if tuple(hw) not in (IDENTITY, ZERO))
        poly = height * width * int(
            (kernel.linearized().cpu() & torch.from_numpy(secret_polynomial_channels(kernel))).sum())
        cost.drelus = cost.largest_call = site.drelus
        cost.secure_mults = gated
        comparisons = [(p.compare, site.drelus), (p.select, gated if site.drelus else 0)]
    else:
        raise ValueError(f"site {name} has a {type(kernel).__name__}, which has no price")
    products = 2 if coefficients == "secret" else 1
    cost.poly_pixels = poly
    cost.secure_mults += products * poly
    cost.products = [poly] * products if poly else []
    cost.add_branches(comparisons, [(p.poly_op(coefficients).at(poly), poly)])
    return cost


def linear_layers(model: nn.Module, input_shape: tuple[int, int, int]
                  ) -> list[tuple[str, nn.Module, tuple[int, ...], int, bool]]:
    """(name, module, input shape, outputs, folded) for every conv, linear, BatchNorm and max-pool in
    forward order; a BatchNorm is folded when the export folds it: into a conv whose only user it is."""
    folded = folded_batchnorms(model, input_shape)
    names = {m: n for n, m in model.named_modules()}
    order: list[tuple[str, nn.Module, tuple[int, ...], int, bool]] = []

    def hook(module, inputs, output):
        name = names[module]
        # a DualBatchNorm2d runs one of its inner BatchNorms; the export folds the pair by its own name
        is_folded = name in folded or name.rpartition(".")[0] in folded
        order.append((name, module, tuple(inputs[0][0].shape), output[0].numel(), is_folded))

    probe_forward(model, input_shape, {m: hook for m in model.modules()
                                       if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.MaxPool2d))
                                       and not isinstance(m, DualBatchNorm2d)})
    return order


def _linear_cost(name: str, module: nn.Module, shape_in: tuple[int, ...], outputs: int, p: CostProfile) -> LayerCost:
    weights = module.weight.numel()
    cost = LayerCost(name, "conv" if isinstance(module, nn.Conv2d) else "linear", p.parties,
                     macs=weights * (outputs // module.weight.shape[0]))
    inputs = math.prod(shape_in)
    lin = p.linear
    measured = lin.measured.get(linear_key(module, shape_in))
    if measured is not None:  # its bytes, rounds and local compute as measured
        cost.add(Op(measured["bytes"], measured["rounds"], seconds=measured.get("seconds", 0.0),
                    shares=tuple(measured.get("shares", ()))), 1)
    else:
        cost.add(lin.per_layer, 1)
        cost.add(lin.per_output, outputs, calls=0)
        cost.add(lin.per_input, inputs, calls=0)
        cost.add(lin.per_weight, weights, calls=0)
        cost.add(lin.per_mac, cost.macs, calls=0)
    if lin.he_slots:
        area = module.kernel_size[0] * module.kernel_size[1] if isinstance(module, nn.Conv2d) else 1
        cost.add(lin.ciphertext, area * -(-inputs // lin.he_slots) + -(-outputs // lin.he_slots), calls=0)
    return cost


def _maxpool_cost(name: str, module: nn.MaxPool2d, outputs: int, p: CostProfile) -> LayerCost:
    """max(a, b) = b + ReLU(a − b): a window of w values takes w − 1 ReLUs, in a tree of ceil(log2 w)
    sequential calls (how CrypTFlow2 and Cheetah compute a max-pool)."""
    kh, kw = (module.kernel_size, module.kernel_size) if isinstance(module.kernel_size, int) else module.kernel_size
    window = kh * kw
    cost = LayerCost(name, "maxpool", p.parties)
    cost.drelus = cost.secure_mults = outputs * (window - 1)
    cost.largest_call = outputs * (window // 2)
    cost.add(p.relu, cost.drelus, calls=math.ceil(math.log2(window)))
    return cost


def triples_drawn(products: list[int], beaver: Beaver | None) -> int:
    """Triples one inference uses up: every product below ``direct_min`` takes one per element. A
    session draws them in batches of ``triples`` and keeps the rest for the next inference, so an
    inference pays its share of the batches in proportion."""
    if beaver is None:
        return 0
    return sum(n for n in products if not (beaver.direct_min and n >= beaver.direct_min))


def expected_busiest_party(bytes_by_rank: list) -> float:
    """The busiest party's bytes, as benchbed defines them everywhere: each party's EXPECTED bytes (its
    mean over runs — or, in a price, the sum of each primitive's calibrated mean split), then the
    largest. Not the mean of each run's largest: a protocol that draws a helper party per call (SPU's
    ABY3 truncation) makes one run's busiest party a sample, up to ~6% off what a link carries over
    many inferences."""
    return float(np.max(np.mean(np.atleast_2d(np.asarray(bytes_by_rank, float)), axis=0)))


def _phase(layers: list[LayerCost], phase: str, parties: int, settings: SecureCostSettings, deployment: bool) -> dict:
    total = sum(c.bytes[phase] for c in layers)
    per_party = sum((c.party_bytes.get(phase, np.zeros(parties)) for c in layers), np.zeros(parties))
    def rounds_of(kind: str) -> float:
        per_layer = [getattr(c, kind)[phase] for c in layers]
        return max(per_layer, default=0.0) if phase == "offline" else sum(per_layer)

    rounds = rounds_of("rounds")
    seconds = sum(c.seconds[phase] for c in layers)
    busiest = expected_busiest_party(per_party)
    network = network_latency(busiest, rounds, settings)
    return {"mb": total / 1e6, "busiest_party_mb": busiest / 1e6,
            "party_mb": [float(b) / 1e6 for b in per_party], "rounds": float(rounds),
            "rounds_spu": float(rounds_of("rounds_spu")), "compute_s": seconds, "network_latency_s": network,
            "latency_s": {net: s + (seconds if deployment else 0.0) for net, s in network.items()}}


def network_latency(busiest_bytes: float, rounds: float, settings: SecureCostSettings) -> dict[str, float]:
    """Seconds on each network: the busiest party's bytes / bandwidth + one-way latencies."""
    return {net: busiest_bytes * 8 / (n.bandwidth_mbps * 1e6) + rounds * n.rtt_ms / 2e3
            for net, n in settings.networks.items()}


def coefficients_of(profile: CostProfile, settings: SecureCostSettings) -> str:
    """How polynomial coefficients are priced under ``profile``: the suite's choice, else the protocol's."""
    return settings.polynomial_coefficients.get(profile.name, profile.coefficients)


def price(model: nn.Module, input_shape: tuple[int, int, int], settings: SecureCostSettings,
          profile: CostProfile) -> dict:
    """The secure price of one inference of ``model`` under ``profile``: per phase and per inference
    (offline + online); the setup once, apart."""
    p = profile
    coefficients = coefficients_of(p, settings)
    layers: list[LayerCost] = []
    for name, module, shape_in, outputs, folded in linear_layers(model, input_shape):
        if isinstance(module, nn.MaxPool2d):
            layers.append(_maxpool_cost(name, module, outputs, p))
            continue
        if isinstance(module, nn.BatchNorm2d):
            if not folded:
                cost = LayerCost(name, "affine", p.parties, secure_mults=outputs, products=[outputs])
                cost.add(p.affine.at(outputs), outputs)  # a product of ``outputs`` elements, priced at its size
                layers.append(cost)
            continue
        layers.append(_linear_cost(name, module, shape_in, outputs, p))
    site_layers = [_site_cost(name, site, p, coefficients) for name, site in sites(model).items()]
    layers += site_layers
    nonlinear = site_layers + [c for c in layers if c.kind == "maxpool"]
    once = LayerCost("inference constants", "constant", p.parties)
    once.add(p.constant, 1)
    once.add(p.input, math.prod(input_shape), calls=1 if p.input.rounds else 0)
    session = LayerCost("session setup", "setup", p.parties)
    session.add_setup(p.setup_for(max((c.largest_call for c in nonlinear), default=0)))
    products = [n for c in layers for n in c.products]
    if products:
        session.add_setup(p.mult_setup)
        if p.beaver is not None:
            once.add(p.beaver.batch, triples_drawn(products, p.beaver) / p.beaver.triples)
    layers += [once, session]
    deployment = p.compute_kind == "deployment"
    phases = {phase: _phase(layers, phase, p.parties, settings, deployment) for phase in PHASES}
    offline, online = phases["offline"], phases["online"]
    per_party = np.asarray(offline["party_mb"]) + np.asarray(online["party_mb"])
    both = lambda key: {net: offline[key][net] + online[key][net] for net in settings.networks}  # noqa: E731
    return {"profile": p.name, "parties": p.parties, "coefficients": coefficients, "compute_kind": p.compute_kind,
            "drelus": sum(c.drelus for c in layers), "secure_mults": sum(c.secure_mults for c in layers),
            "macs": sum(c.macs for c in layers),
            "comm_mb": offline["mb"] + online["mb"], "busiest_party_mb": expected_busiest_party(per_party),
            "rounds": offline["rounds"] + online["rounds"], "rounds_spu": offline["rounds_spu"] + online["rounds_spu"],
            "compute_s": offline["compute_s"] + online["compute_s"],
            "network_latency_s": both("network_latency_s"), "latency_s": both("latency_s"),
            "phases": phases, "client_storage_mb": sum(c.storage_bytes for c in layers) / 1e6,
            "nonlinear_mb": sum(c.bytes["offline"] + c.bytes["online"] for c in nonlinear) / 1e6,
            "per_layer": [c.record() for c in layers]}


def recorded_prices(record: dict) -> dict[str, dict]:
    """An entry record's prices by profile name (a record from a suite with one profile holds one
    price, not keyed)."""
    prices = record.get("secure_cost") or {}
    return {prices["profile"]: prices} if "profile" in prices else prices
