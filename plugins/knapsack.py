"""Knapsack patch-ReLU (Gorski & Avidan, arXiv 2304.10442).

Every channel of every counted site picks one option: a patch size (h, w) — the sign of each
patch's mean, one DReLU per patch, gates the whole patch — or identity (no ReLU) or zero. The
price of an option is its DReLUs; its distortion is the mean squared change of the logits when only
that channel is switched to it, measured on training images. An exact multiple-choice knapsack
then picks one option per channel, minimising total distortion under the DReLU budget.

Distortion probes are batched with ``torch.func.vmap``: the probe's change is injected at the site
by a forward hook, so everything before the site does not depend on the vmapped input and runs once
per batch of probes. Probing is forward-only work and is charged to the entry's compute budget (a
forward counts a third of a training image); when the budget cannot afford ``distortion_images``
images per probe, fewer are used and the record says so.
"""
from __future__ import annotations

import time
from typing import Literal

import torch
import torch.nn.functional as F
from benchbed_plugins.mckp import solve_mckp
from pydantic import Field
from torch.func import vmap

from benchbed.api import (IDENTITY, ZERO, BenchbedError, EntryContext, FinetuneResult, MaskResult, MethodInfo, Strict,
                          TrainRecipe, counted_sites, cross_entropy, distillation, fit, hookimpl, patch_drelus,
                          patch_gate)
from benchbed.compute import FORWARD_SHARE
from benchbed.data import to_float

__all__ = ["solve_mckp", "catalogue", "extract_distortions"]


class Options(Strict):
    patch_dims: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 32],
                                  description="patch heights and widths to combine (those up to the map size)")
    max_aspect: float = Field(4.0, ge=1, description="largest ratio of a patch's long side to its short side")
    include_zero: bool = Field(True, description="offer zeroing a channel as an option")
    distortion_images: int = Field(2048, ge=1, description="training images per distortion probe (paper: 2,048)")
    extraction_share: float = Field(0.5, gt=0, le=1, description="largest share of the compute for distortion probes")
    probe_batch: int = Field(32, ge=1, description="probes evaluated together in one vmapped forward")
    image_batch: int = Field(128, ge=1, description="images per probe forward")
    loss: Literal["ce", "kd"] = Field("ce", description="finetune loss: plain CE (paper) or CE + KD")
    kd_temperature: float = Field(4.0, gt=0)
    finetune: TrainRecipe = Field(
        default_factory=lambda: TrainRecipe(epochs=120, optimizer="sgd", lr=0.005, momentum=0.9, nesterov=False,
                                            weight_decay=1e-3, batch_size=128, schedule="step",
                                            milestones=[0.25, 0.5, 0.75], gamma=0.25, warmup_epochs=5),
        description="finetune after the choice; its epochs are cut to what is left of the compute budget")


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(description="patch ReLUs (one DReLU per patch) with per-channel patch sizes chosen by an "
                                  "exact multiple-choice knapsack over measured logit distortion",
                      paper="Gorski & Avidan, arXiv:2304.10442", options=Options)


def catalogue(height: int, width: int, dims: list[int], max_aspect: float) -> list[tuple[int, int]]:
    """Patch sizes for an ``height``×``width`` map: every (h, w) from ``dims`` that fits, square and
    non-square up to ``max_aspect``, and the full map."""
    hs = sorted({d for d in dims if d <= height} | {height})
    ws = sorted({d for d in dims if d <= width} | {width})
    sizes = [(h, w) for h in hs for w in ws if max(h, w) / min(h, w) <= max_aspect]
    return sizes + [(height, width)] * ((height, width) not in sizes)


@torch.no_grad()
def extract_distortions(model, sites: dict, options: dict[str, list], images: torch.Tensor, opts: Options,
                        charge) -> tuple[dict[str, torch.Tensor], dict]:
    """Logit MSE of every (channel, option) against the unmodified model, averaged over ``images``.

    ``options[site]`` lists (h, w), IDENTITY or ZERO; the result per site is (C, len(options)).
    ``charge(images)`` is called before each batch of probe forwards and must return True to go on.
    """
    model.eval()
    injected: dict[str, torch.Tensor] = {}
    out = {name: torch.zeros(site.shape[0], len(options[name])) for name, site in sites.items()}
    probes_done, started = 0, time.perf_counter()
    for start in range(0, len(images), opts.image_batch):
        x = images[start:start + opts.image_batch]
        inputs: dict[str, torch.Tensor] = {}
        handles = [site.register_forward_hook(lambda m, i, o, n=name: inputs.__setitem__(n, i[0]))
                   for name, site in sites.items()]
        try:
            reference = model(x).float()  # one pass records every site's input too
        finally:
            for handle in handles:
                handle.remove()
        for name, site in sites.items():
            pre = inputs[name]
            relu = F.relu(pre)
            channels = pre.shape[1]

            def probe(onehot: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
                injected["onehot"], injected["delta"] = onehot, delta
                return model(x).float()

            handle = site.register_forward_hook(
                lambda m, i, o: o + injected["onehot"].view(1, -1, 1, 1).to(o.dtype) * injected["delta"].unsqueeze(1))
            try:
                for k, option in enumerate(options[name]):
                    if option == IDENTITY:
                        changed = pre
                    elif option == ZERO:
                        changed = torch.zeros_like(pre)
                    else:
                        changed = patch_gate(pre, *option)
                    deltas = (changed - relu).transpose(0, 1)  # (C, N, H, W): one probe per channel
                    for c0 in range(0, channels, opts.probe_batch):
                        idx = torch.arange(c0, min(c0 + opts.probe_batch, channels), device=pre.device)
                        if not charge(len(idx) * len(x)):
                            raise BenchbedError("knapsack: the compute budget ran out during distortion probes; "
                                                "lower `distortion_images` or raise the suite's compute budget")
                        onehot = F.one_hot(idx, channels).to(pre.dtype)
                        logits = vmap(probe)(onehot, deltas[idx])
                        out[name][idx.cpu(), k] += ((logits - reference) ** 2).mean(dim=2).sum(dim=1).cpu()
                        probes_done += len(idx) * len(x)
            finally:
                handle.remove()
    seconds = time.perf_counter() - started
    for name in out:
        out[name] /= len(images)
    return out, {"probe_image_forwards": probes_done, "seconds": round(seconds, 3),
                 "probe_images_per_second": round(probes_done / max(seconds, 1e-9), 1)}


@hookimpl
def build_mask(ctx: EntryContext, model) -> MaskResult:
    opts: Options = ctx.options
    if ctx.budget is None:
        raise BenchbedError("knapsack needs a ReLU budget")
    sites = counted_sites(model)
    options = {}
    for name, site in sites.items():
        _, height, width = site.shape
        options[name] = (catalogue(height, width, opts.patch_dims, opts.max_aspect) + [IDENTITY]
                         + [ZERO] * opts.include_zero)
    probes = sum(site.shape[0] * len(options[name]) for name, site in sites.items())
    affordable = opts.extraction_share * ctx.clock.remaining_epochs() * len(ctx.data.train_y) / (FORWARD_SHARE * probes)
    n_images = max(1, min(opts.distortion_images, len(ctx.data.train_y), int(affordable)))
    chosen = torch.randperm(len(ctx.data.train_y), generator=torch.Generator().manual_seed(ctx.seed))[:n_images]
    images = to_float(ctx.data.train_x[chosen.to(ctx.data.train_x.device)])
    distortion, throughput = extract_distortions(model, sites, options, images, opts, ctx.clock.allows_forward)
    if n_images < opts.distortion_images:
        ctx.notes["knapsack"] = (f"distortion measured on {n_images} images per probe "
                                 f"({opts.distortion_images} asked): the compute budget allowed no more")
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
                              "total_distortion": total,
                              "options_per_site": {n: len(o) for n, o in options.items()}})


@hookimpl
def finetune(ctx: EntryContext, model) -> FinetuneResult:
    opts: Options = ctx.options
    loss = (distillation(ctx.teacher, opts.kd_temperature) if opts.loss == "kd"
            else cross_entropy(opts.finetune.label_smoothing))
    result = fit(model, ctx, opts.finetune, loss_fn=loss, label=f"{ctx.method} finetune")
    return FinetuneResult(model, result.summary())
