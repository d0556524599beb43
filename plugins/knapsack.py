"""Knapsack patch-ReLU (Gorski & Avidan, arXiv 2304.10442).

Every channel of every counted site picks one option: a patch size (h, w) — the sign of each
patch's mean, one DReLU per patch, gates the whole patch — or identity (no ReLU), or zero when
``include_zero`` (the authors' search does not offer it). The patch sizes are by default the
authors' catalogue for the map size (``AUTHORS_PATCHES``, every size they list: 1 to 512 px); a map
size it lacks gets the generated catalogue, and the record says which one each map size used. The
price of an option is its DReLUs; its distortion is the mean squared change of the logits when only
that channel is switched to it, measured on training images. An exact multiple-choice knapsack
then picks one option per channel, minimising total distortion under the DReLU budget.

Distortion probes are batched with ``torch.func.vmap``: the probe's change is injected at the site
by a forward hook, so everything before the site does not depend on the vmapped input and runs once
per batch of probes. Probing is forward-only work and the core's meter charges what it computes: the
network after the probed site, its share of a forward (a whole forward counts a third of a training
image). Each probe averages over ``distortion_images`` images
(the paper's 2,048) when the budget affords them within ``extraction_share``; otherwise over as many
as that share affords, raised to ``min_distortion_images`` when the whole budget can pay for the
minimum; every shortfall is recorded as a cut. The entry reports (``report_setup``) the mean images
per probe it ran (``probe_images``) and the stated minimum (``probe_images_min``).
"""
from __future__ import annotations

import math
import time
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.func import vmap

from benchbed.api import (FORWARD_SHARE, IDENTITY, ZERO, BenchbedError, Claim, ClaimSide, Condition, EntryContext, FinetuneResult,
                          MaskResult, MethodInfo, Strict, TrainRecipe, counted_sites, cross_entropy, distillation, fit,
                          forward_hooks, forward_share_after, hookimpl, patch_drelus, patch_gate)
from benchbed_plugins._mckp import solve_mckp
from benchbed_plugins._patch_catalogue import AUTHORS_PATCHES

__all__ = ["solve_mckp", "catalogue", "extract_distortions", "AUTHORS_PATCHES", "site_catalogue"]


class Options(Strict):
    patch_catalogue: Literal["authors", "generated"] = Field(
        "authors", description="authors: their patch shapes per map size (generated where they list none); "
                               "generated: every pair of `patch_dims` within `max_aspect`, and the full map")
    patch_dims: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 32],
                                  description="generated catalogue: patch heights and widths to combine")
    max_aspect: float = Field(4.0, ge=1, description="generated catalogue: largest ratio of a patch's long side to "
                                                     "its short side")
    include_zero: bool = Field(False, description="offer zeroing a channel as an option (the authors' search "
                                                  "does not)")
    distortion_images: int = Field(2048, ge=1, description="training images per distortion probe (paper: 2,048)")
    min_distortion_images: int = Field(128, ge=1, description="fewest images per probe: taken beyond "
                                                              "`extraction_share` when the whole budget pays for "
                                                              "them; otherwise the share's count, recorded as a cut")
    extraction_share: float = Field(0.5, gt=0, le=1, description="share of the compute for distortion probes "
                                                                 "when it affords `min_distortion_images`")
    probe_batch: int = Field(32, ge=1, description="probes evaluated together in one vmapped forward")
    image_batch: int = Field(128, ge=1, description="images per probe forward")
    loss: Literal["ce", "kd"] = Field("ce", description="finetune loss: plain CE (paper) or CE + KD")
    kd_temperature: float = Field(4.0, gt=0)
    finetune: TrainRecipe = Field(
        default_factory=lambda: TrainRecipe(epochs=120, optimizer="sgd", lr=0.005, momentum=0.9, nesterov=False,
                                            weight_decay=1e-3, batch_size=128, schedule="step",
                                            milestones=[0.25, 0.5, 0.75], gamma=0.25, warmup_epochs=5,
                                            warmup_start=0.01, min_lr=1e-4),
        description="finetune after the choice; its epochs are cut to what is left of the compute budget")


# The published recipe (CIFAR-100 ResNet-18): 2,048 images per probe, 120 finetune epochs.
PAPER_RECIPE = {
    "patch_catalogue": "authors", "include_zero": False, "distortion_images": 2048, "loss": "ce",
    "finetune": {"epochs": 120, "optimizer": "sgd", "lr": 0.005, "momentum": 0.9, "nesterov": False,
                 "weight_decay": 1e-3, "batch_size": 128, "schedule": "step", "milestones": [0.25, 0.5, 0.75],
                 "gamma": 0.25, "warmup_epochs": 5, "warmup_start": 0.01, "min_lr": 1e-4},
}


# The paper measures each distortion on 2,048 training images; below ~128 the measure is too noisy to
# rank patch sizes, and the knapsack then chooses on noise.
PROBE_IMAGES_STATED = 128
SETUP = (Condition(f"distortion probes of at least {PROBE_IMAGES_STATED} images each (the paper: 2,048)",
                   "reported.probe_images", ">=", PROBE_IMAGES_STATED),)

CLAIMS = [Claim("knapsack_competitive_with_snl", "knapsack's patch ReLUs are at least as accurate as SNL's per-pixel "
                "mask at equal DReLUs, at every budget",
                "knapsack patch-ReLU, Gorski, Jevnisek & Avidan, arXiv:2304.10442 (abstract; Fig. 1 and its CIFAR-100 "
                "ResNet-18 results set it against SNL)", a=ClaimSide("knapsack"), b=ClaimSide("snl"), relation="≥",
                quote="Our approach achieves competitive performance compared to a handful of competitors")]


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(description="patch ReLUs (one DReLU per patch) with per-channel patch sizes chosen by an "
                                  "exact multiple-choice knapsack over measured logit distortion",
                      paper="Gorski & Avidan, arXiv:2304.10442", options=Options, paper_recipe=PAPER_RECIPE,
                      produces=frozenset({"patch"}), claims=CLAIMS,
                      setup=SETUP)


def catalogue(height: int, width: int, dims: list[int], max_aspect: float) -> list[tuple[int, int]]:
    """Patch sizes for an ``height``×``width`` map: every (h, w) from ``dims`` that fits, square and
    non-square up to ``max_aspect``, and the full map."""
    hs = sorted({d for d in dims if d <= height} | {height})
    ws = sorted({d for d in dims if d <= width} | {width})
    sizes = [(h, w) for h in hs for w in ws if max(h, w) / min(h, w) <= max_aspect]
    return sizes + [(height, width)] * ((height, width) not in sizes)


def site_catalogue(height: int, width: int, opts: Options) -> tuple[list[tuple[int, int]], str]:
    """The patch sizes offered on an ``height``×``width`` map, and which catalogue they come from. A shape the
    authors list twice, or wider than the map (it is cut to the map), is probed once."""
    if opts.patch_catalogue == "authors" and height == width and height in AUTHORS_PATCHES:
        return list(dict.fromkeys((min(h, height), min(w, width)) for h, w in AUTHORS_PATCHES[height])), "authors"
    return catalogue(height, width, opts.patch_dims, opts.max_aspect), "generated"


def probe_images(affordable_by_share: float, affordable_by_budget: float, train_size: int, opts: Options) -> int:
    """Images per probe: ``distortion_images`` if the probes' share of the budget (``affordable_by_share``
    images per probe) affords them, else what that share affords — raised to ``min_distortion_images``
    when the whole budget (``affordable_by_budget``) can pay for the minimum, the finetune then getting
    less. A minimum the whole budget cannot pay for is not spent on: the share's count stays."""
    if affordable_by_budget == float("inf"):
        return max(1, min(opts.distortion_images, train_size))
    by_share = min(opts.distortion_images, int(affordable_by_share))
    minimum = min(opts.min_distortion_images, opts.distortion_images)
    wanted = minimum if by_share < minimum <= affordable_by_budget else by_share
    return max(1, min(wanted, train_size))


def probe_cost(sites: dict, options: dict[str, list], shares: dict[str, float], probe_batch: int) -> float:
    """Training images the probes of one image cost, as the meter counts them: the reference pass, then per
    site and option its channels' probes — each the network after the site (``shares``) — plus, once per
    vmapped batch of ``probe_batch`` channels, the network before the site, which the batch shares."""
    per_option = {name: math.ceil(site.shape[0] / probe_batch) * (1 - shares[name]) + site.shape[0] * shares[name]
                  for name, site in sites.items()}
    return FORWARD_SHARE * (1 + sum(len(options[name]) * per_option[name] for name in sites))


@torch.no_grad()
def extract_distortions(model, sites: dict, options: dict[str, list], images: torch.Tensor, opts: Options,
                        fits, sample: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """Logit MSE of every (channel, option) against the unmodified model, averaged over ``images``.

    ``options[site]`` lists (h, w), IDENTITY or ZERO; the result per site is (C, len(options)).
    ``fits(images, site)`` is asked before each batch of probe forwards (the network after ``site``
    re-run on ``images`` images) and must return True to go on; the core's meter charges them.
    ``sample`` (a dry run): per site only the first option and the identity, on one batch of channels;
    every other (channel, option) gets the site's mean of those.
    """
    model.eval()
    injected: dict[str, torch.Tensor] = {}
    out = {name: torch.zeros(site.shape[0], len(options[name])) for name, site in sites.items()}
    probes_done, probes_run, started = 0, 0, time.perf_counter()
    for start in range(0, len(images), opts.image_batch):
        x = images[start:start + opts.image_batch]
        inputs: dict[str, torch.Tensor] = {}
        with forward_hooks({site: lambda m, i, o, n=name: inputs.__setitem__(n, i[0]) for name, site in sites.items()}):
            reference = model(x).float()  # one pass records every site's input too
        for name, site in sites.items():
            pre = inputs[name]
            relu = F.relu(pre)
            channels = pre.shape[1]

            def probe(onehot: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
                injected["onehot"], injected["delta"] = onehot, delta
                return model(x).float()

            inject = {site: lambda m, i, o: o + injected["onehot"].view(1, -1, 1, 1).to(o.dtype)
                      * injected["delta"].unsqueeze(1)}
            with forward_hooks(inject):
                for k, option in enumerate(options[name]):
                    if sample and k > 0 and option != IDENTITY:
                        continue
                    if option == IDENTITY:
                        changed = pre
                    elif option == ZERO:
                        changed = torch.zeros_like(pre)
                    else:
                        changed = patch_gate(pre, *option)
                    deltas = (changed - relu).transpose(0, 1)  # (C, N, H, W): one probe per channel
                    for c0 in range(0, min(channels, opts.probe_batch) if sample else channels, opts.probe_batch):
                        idx = torch.arange(c0, min(c0 + opts.probe_batch, channels), device=pre.device)
                        if not fits(len(idx) * len(x), name):
                            raise BenchbedError("knapsack: the compute budget ran out during distortion probes; "
                                                "lower `distortion_images` or raise the suite's compute budget")
                        onehot = F.one_hot(idx, channels).to(pre.dtype)
                        logits = vmap(probe)(onehot, deltas[idx])
                        out[name][idx.cpu(), k] += ((logits - reference) ** 2).mean(dim=2).sum(dim=1).cpu()
                        probes_done += len(idx) * len(x)
                        probes_run += len(idx) * (start == 0)  # each (channel, option) probe counted once
    seconds = time.perf_counter() - started
    for name in out:
        out[name] /= len(images)
        if sample:
            probed = out[name] != 0
            out[name][~probed] = out[name][probed].mean() if probed.any() else 0.0
    return out, {"probe_image_forwards": probes_done, "probes_run": probes_run,
                 "images_per_probe": probes_done / probes_run if probes_run else 0.0, "seconds": round(seconds, 3),
                 "probe_images_per_second": round(probes_done / max(seconds, 1e-9), 1)}


@hookimpl
def build_mask(ctx: EntryContext, model) -> MaskResult:
    opts: Options = ctx.options
    sites = counted_sites(model)
    options, catalogues = {}, {}
    for name, site in sites.items():
        _, height, width = site.shape
        sizes, source = site_catalogue(height, width, opts)
        options[name] = sizes + [IDENTITY] + [ZERO] * opts.include_zero
        catalogues[f"{height}x{width}"] = {"source": source, "patch_shapes": len(sizes),
                                           "options": len(options[name])}
    probes = sum(site.shape[0] * len(options[name]) for name, site in sites.items())
    shares = {name: forward_share_after(model, ctx.data.input_shape, site) for name, site in sites.items()}
    per_image = probe_cost(sites, options, shares, opts.probe_batch)
    n_train = len(ctx.data.train_y)
    n_images = probe_images(ctx.search_epochs(opts.extraction_share) * n_train / per_image,
                            ctx.clock.remaining_epochs() * n_train / per_image, n_train, opts)
    if n_images < opts.distortion_images:
        short = f"{n_images} of {opts.distortion_images} images per probe"
        ctx.record_cut("distortion_images", short + (f", below the stated minimum of {opts.min_distortion_images}"
                                                     if n_images < opts.min_distortion_images else ""))
    images = ctx.sample_train_images(n_images)
    distortion, throughput = extract_distortions(model, sites, options, images, opts,
                                                 lambda n, name: ctx.clock.fits(n, shares[name]), sample=ctx.dry_run)
    mean = throughput["images_per_probe"]
    ctx.report_setup("probe_images", int(mean) if float(mean).is_integer() else round(mean, 2))
    ctx.report_setup("probe_images_min", opts.min_distortion_images)
    ctx.log(f"{ctx.method}: {probes:,} probes × {n_images} images, "
            f"{throughput['probe_images_per_second']:,.0f} probe-images/s")

    names = list(sites)
    costs, values = [], []
    for name in names:
        _, height, width = sites[name].shape
        cost = [0 if o in (IDENTITY, ZERO) else patch_drelus(height, width, *o) for o in options[name]]
        for c in range(sites[name].shape[0]):
            costs.append(cost)
            values.append((-distortion[name][c]).tolist())
    choice = solve_mckp(costs, values, ctx.budget)
    start, total = 0, 0.0
    for name in names:
        channels = sites[name].shape[0]
        picks = choice[start:start + channels]
        sites[name].set_patches([options[name][k] for k in picks])
        total += float(distortion[name][torch.arange(channels), torch.as_tensor(picks)].sum())
        start += channels
    model.train()
    return MaskResult(model, {"distortion_images": n_images, "probes": probes, "throughput": throughput,
                              "probe_epochs_per_image": per_image / n_train,
                              "total_distortion": total, "catalogue": catalogues,
                              "options_per_site": {n: len(o) for n, o in options.items()}})


@hookimpl
def finetune(ctx: EntryContext, model) -> FinetuneResult:
    opts: Options = ctx.options
    loss = (distillation(ctx.teacher, opts.kd_temperature) if opts.loss == "kd"
            else cross_entropy(opts.finetune.label_smoothing))
    result = fit(model, ctx, opts.finetune, loss_fn=loss, label=f"{ctx.method} finetune", part="finetune")
    return FinetuneResult(model, result.summary())
