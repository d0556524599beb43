"""benchbed's prices beside the figures the private-inference systems published, at their scale:
``benchbed prices --published`` prints the table docs/measurements.md carries.

Each published figure names its source and setting. A row prices the model the source measured
under the matching profile, on the source's network, in the source's terms: an end-to-end run of
one image pays its session's setup too, so those rows add it; a per-phase figure is set beside the
same phase. Rows with no published figure (the linearized ResNet-18s, which the papers report as
ReLU counts and accuracy only) show benchbed's price under every profile.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from benchbed.config import NetworkSettings, SecureCostSettings
from benchbed.model.architectures import builtin_models
from benchbed.model.sites import sites
from benchbed.secure.cost import CostProfile, price

CRYPTONITE = ("Garimella et al., ASPLOS 2023 (CryptoNite), artifact kvgarimella/cryptonite, "
              "simulator/experiments/utils/cifar10_server_garbler_utils_r18.py: Delphi's code, server garbler")
CHEETAH = "Huang et al., Cheetah, USENIX Security 2022 (eprint 2022/207), abstract"
# OpenCheetah's scripts/throttle.sh (its README: WAN about 400 Mbps, 40 ms)
CHEETAH_WAN = NetworkSettings(bandwidth_mbps=400, rtt_ms=40)


@dataclass(frozen=True)
class Model:
    """A model a source priced: a built-in at an input, with ``kept`` ReLUs (None: all of them)."""

    name: str
    input_shape: tuple[int, int, int]
    classes: int
    stem_relu: bool = True
    kept: int | None = None

    def build(self) -> torch.nn.Module:
        torch.manual_seed(0)
        model = builtin_models().build(self.name, num_classes=self.classes, input_shape=self.input_shape,
                                       stem_relu=self.stem_relu)
        if self.kept is not None:
            keep_fraction(model, self.kept)
        return model.eval()

    def title(self) -> str:
        kept = "all ReLUs" if self.kept is None else f"{self.kept / 1000:.1f}K ReLUs kept"
        return f"{self.name} {'x'.join(map(str, self.input_shape))}, {self.classes} classes, {kept}"


def keep_fraction(model: torch.nn.Module, kept: int) -> None:
    """An SNL-style pixel mask keeping ``kept`` ReLUs over the model, each site the same fraction of its
    pixels (the rest identity): what a mask's price depends on is how many it keeps and where."""
    named = sites(model)
    total = sum(site.numel for site in named.values())
    generator = torch.Generator().manual_seed(0)
    left = kept
    for index, site in enumerate(named.values()):
        count = left if index == len(named) - 1 else min(left, round(kept * site.numel / total))
        order = torch.randperm(site.numel, generator=generator)
        mask = torch.zeros(site.numel)
        mask[order[:count]] = 1
        site.set_mask(mask.view(site.shape))
        left -= count


@dataclass(frozen=True)
class Figure:
    """One published figure: ``read`` takes it from a price (in the figure's unit)."""

    system: str
    model: Model
    profile: str
    quantity: str
    value: float | None  # None: benchbed's figure alone, beside a published one of the same row group
    unit: str
    read: Callable[[dict, str], float]
    network: str
    source: str
    why: str


def _total_mb(cost: dict, net: str) -> float:
    return cost["phases"]["setup"]["mb"] + cost["comm_mb"]


def _total_s(cost: dict, net: str) -> float:
    return cost["phases"]["setup"]["latency_s"][net] + cost["latency_s"][net]


def _compute_s(cost: dict, net: str) -> float:
    """Setup + one image's local compute, as the profile's seconds give it."""
    return sum(cost["phases"][p]["compute_s"] for p in ("setup", "offline", "online"))


def _offline_and_key_mb(cost: dict, net: str) -> float:
    return cost["phases"]["setup"]["mb"] + cost["phases"]["offline"]["mb"]


def _online_mb(cost: dict, net: str) -> float:
    return cost["phases"]["online"]["mb"]


R18_C10 = Model("resnet18_cifar", (3, 32, 32), 10)
R50 = Model("resnet50_imagenet", (3, 224, 224), 1000)
SNL_R18 = [Model("resnet18_cifar", (3, 32, 32), 100, stem_relu=False, kept=k) for k in (None, 12_900, 49_400)]

SPU_FM64 = ("SPU's Cheetah runs a 64-bit ring (FM64, 18 fractional bits); Cheetah's paper a 37-bit ring with "
            "scale 12: every OT-based comparison and truncation moves ~64/37 of the paper's bits")

FIGURES: list[Figure] = [
    Figure("Delphi", R18_C10, "delphi", "offline communication incl. the key upload", 11_035.4, "MB",
           _offline_and_key_mb, "WAN", CRYPTONITE + " (off_* writes: garbled circuits 9,510 MB, OT 1,123 MB, HE "
           "369 MB, key 33.2 MB)",
           "the profile's per-ReLU and per-ciphertext constants are this artifact's, so this checks the lowering "
           "(557,056 ReLUs, ciphertexts per layer), not the constants"),
    Figure("Delphi", R18_C10, "delphi", "online communication", 664.5, "MB", _online_mb, "WAN", CRYPTONITE,
           "as above; online ReLU labels 1,184 B and shares 9 B per element"),
    Figure("Cheetah", R50, "cheetah", "end-to-end communication (setup + one image)", 2_300, "MB", _total_mb, "WAN",
           CHEETAH, SPU_FM64 + "; HE conv layers of ResNet-50's shapes priced by the formula fitted on the "
           "calibrated CIFAR shapes; the max-pool as a tree of ReLUs"),
    Figure("Cheetah", R50, "cheetah", "end-to-end WAN latency (setup + one image): network terms", 150, "s",
           _total_s, "Cheetah WAN", CHEETAH + " ('less than 2.5 minutes'); network: OpenCheetah scripts/throttle.sh, "
           "400 Mbit/s, 40 ms, 4 threads",
           "benchbed's latency is the network terms alone (busiest party's bytes / bandwidth + rounds · RTT / 2): "
           "the rest of the paper's 150 s is Cheetah's own local compute (HE linear layers, OT; 4 threads, AVX512 "
           "HEXL), for which no per-operation figure of a deployment is published; " + SPU_FM64),
    Figure("Cheetah", R50, "cheetah", "local compute in SPU's simulator (never in latency)", None, "s", _compute_s,
           "Cheetah WAN", CHEETAH, "SPU's simulator on this machine, parties as threads of one process, no HEXL: "
           "machine-dependent and not a deployment's, so shown apart and never added into a latency"),
    Figure("CrypTFlow2", R50, "cheetah", "end-to-end communication", 2_300 * 12.9, "MB", _total_mb, "WAN",
           "derived from " + CHEETAH + ": 12.9x Cheetah's 2.3 GB",
           "no CrypTFlow2 profile: the row prices SPU's Cheetah, which replaces CrypTFlow2's IKNP-OT comparisons "
           "and HE linear layers; the ratio is Cheetah's saving as benchbed prices it"),
    Figure("CrypTFlow2", R50, "cheetah", "end-to-end WAN latency", 150 * 5.6, "s", _total_s, "Cheetah WAN",
           "derived from " + CHEETAH + ": 5.6x Cheetah's 2.5 min", "as above; benchbed's figure is the network "
           "terms of SPU's Cheetah alone"),
]


def comparison(profiles: dict[str, CostProfile], settings: SecureCostSettings | None = None) -> list[dict]:
    """Every figure beside benchbed's price of the same model under the same profile and network."""
    networks = dict((settings or SecureCostSettings()).networks)
    networks["Cheetah WAN"] = CHEETAH_WAN
    settings = SecureCostSettings(networks=networks)
    built: dict[Model, torch.nn.Module] = {}
    priced: dict[tuple[Model, str], dict] = {}
    rows = []
    for figure in FIGURES:
        if figure.profile not in profiles:
            continue
        if figure.model not in built:
            built[figure.model] = figure.model.build()
        key = (figure.model, figure.profile)
        if key not in priced:
            priced[key] = price(built[figure.model], figure.model.input_shape, settings, profiles[figure.profile])
        cost = priced[key]
        ours = figure.read(cost, figure.network)
        rows.append({"system": figure.system, "model": figure.model.title(), "profile": figure.profile,
                     "quantity": figure.quantity, "network": figure.network, "unit": figure.unit,
                     "published": figure.value, "ours": ours, "drelus": cost["drelus"],
                     "ratio": ours / figure.value if figure.value else None,
                     "wan_latency_s": cost["latency_s"]["WAN"], "setup_mb": cost["phases"]["setup"]["mb"],
                     "source": figure.source, "why": figure.why})
    return rows


def linearized(profiles: dict[str, CostProfile], settings: SecureCostSettings | None = None) -> list[dict]:
    """ResNet-18 on CIFAR-100 as SNL prices it (no stem ReLU, 491,520 ReLUs), all-ReLU and at SNL's
    12.9K and 49.4K budgets (66.53% and 73.75% in its paper, which reports no communication or
    latency for them), under every profile: per inference and the session's setup."""
    settings = settings or SecureCostSettings()
    rows = []
    for model in SNL_R18:
        net = model.build()
        for name, profile in profiles.items():
            cost = price(net, model.input_shape, settings, profile)
            rows.append({"model": model.title(), "profile": name, "drelus": cost["drelus"], "mb": cost["comm_mb"],
                         "online_mb": cost["phases"]["online"]["mb"], "rounds": cost["rounds"],
                         "latency_s": cost["latency_s"], "setup_mb": cost["phases"]["setup"]["mb"],
                         "storage_mb": cost["client_storage_mb"]})
    return rows


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}" if value < 1e4 else f"{value:,.0f}"


def markdown(rows: list[dict], linear: list[dict]) -> str:
    """The tables of docs/measurements.md: ours vs published with the ratio and why they differ; the linearized
    ResNet-18s under every profile."""
    from tabulate import tabulate

    body = [[r["system"], r["model"], f"`{r['profile']}`", r["quantity"], r["unit"], _number(r["published"]),
             _number(r["ours"]), "—" if r["ratio"] is None else f"{r['ratio']:.2f}", r["why"]] for r in rows]
    first = tabulate(body, headers=["system", "model", "profile", "figure", "unit", "published", "benchbed",
                                    "benchbed / published", "why they differ"], tablefmt="github",
                     disable_numparse=True)
    networks = list(linear[0]["latency_s"]) if linear else []
    body = [[r["model"], f"`{r['profile']}`", f"{r['drelus']:,}", _number(r["mb"]), _number(r["online_mb"]),
             f"{r['rounds']:,.0f}"] + [_number(r["latency_s"][n]) for n in networks]
            + [_number(r["setup_mb"]), _number(r["storage_mb"]) if r["storage_mb"] else "—"] for r in linear]
    second = tabulate(body, headers=["model", "profile", "DReLUs", "MB per image", "online MB", "rounds"]
                      + [f"{n} s" for n in networks] + ["setup MB (once)", "client storage MB"],
                      tablefmt="github", disable_numparse=True)
    sources = sorted({r["source"] for r in rows})
    return (first + "\n\nSources:\n" + "\n".join(f"- {s}" for s in sources) + "\n\n" + second + "\n")
