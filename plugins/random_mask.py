"""Baseline: keep a uniformly random set of exactly ``budget`` ReLU pixels, then finetune.

Any method that learns where ReLUs matter should beat this at the same budget and compute."""
import torch
from pydantic import Field

from benchbed.api import (DistillationOptions, EntryContext, FinetuneResult, MaskResult, MethodInfo, TrainRecipe,
                          counted_sites, distilled_finetune, hookimpl)


class Options(DistillationOptions):
    finetune: TrainRecipe = Field(default_factory=lambda: TrainRecipe(epochs=100, lr=0.01),
                                  description="finetune recipe; its epochs are cut to the entry's compute budget")


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(description="uniformly random per-pixel mask meeting the budget exactly, then finetuned "
                                  "with CE + KD (baseline)", options=Options, produces=frozenset({"masked"}))


def random_masks(shapes: dict[str, tuple[int, int, int]], budget: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Exactly ``budget`` ones spread uniformly over all pixels of all sites."""
    sizes = [torch.Size(s).numel() for s in shapes.values()]
    flat = torch.zeros(sum(sizes))
    flat[torch.randperm(len(flat), generator=generator)[:budget]] = 1
    return {name: part.view(shape) for (name, shape), part in zip(shapes.items(), flat.split(sizes))}


@hookimpl
def build_mask(ctx: EntryContext, model) -> MaskResult:
    sites = counted_sites(model)
    masks = random_masks({n: s.shape for n, s in sites.items()}, ctx.budget, torch.Generator().manual_seed(ctx.seed))
    for name, site in sites.items():
        site.set_mask(masks[name])
    return MaskResult(model, {"kept_per_site": {n: int(m.sum()) for n, m in masks.items()}})


@hookimpl
def finetune(ctx: EntryContext, model) -> FinetuneResult:
    return FinetuneResult(model, distilled_finetune(ctx, model, ctx.options.finetune, ctx.options, part=None))
