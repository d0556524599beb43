"""DeepReDuce (Jha, Ghodsi, Garg, Reagen, ICML 2021, arXiv:2103.01396): coarse-grained ReLU reduction.

The classic baseline that SNL and later papers compare against. It removes whole layers of ReLUs:

1. *ReLU culling by stage criticality*: for every stage, train a copy of the network that keeps only
   that stage's ReLUs (every other ReLU linearized) and measure its validation accuracy; the stages
   rank by that accuracy, and a configuration keeps the ``k`` most critical stages.
2. *ReLU thinning*: in the stages kept, keep one ReLU per residual block (``thinning`` says which one
   goes), halving their ReLUs.
3. Train the chosen network with distillation from the all-ReLU teacher.

Stages and blocks are read off the site names, so any model works: a site ``layers.1.0.relu2`` is in
block ``layers.1.0`` of stage ``layers.1``; a top-level site (the stem ReLU) is a stage of its own.
A coarse method cannot land on an arbitrary budget: the entry takes the configuration with the most
DReLUs at or under the budget, records the DReLUs it actually uses, and the leaderboard shows them.

Deviations from the paper, by design: the stage trials start from the teacher's weights and run a
share of the entry's compute (the paper trains each from scratch); ReLU reshaping (changing channel
counts) is left out, since a benchmark compares methods on one architecture. The paper reaches budgets
below its most critical stage by reshaping; without it, keeping only the ``k`` most critical stages
would land such a budget on the all-linear network (ResNet-18 on CIFAR: a most critical stage of 32,768
DReLUs thinned puts 30,000 at 0). So by default (``cull: skip``) the stages are kept in criticality
order and one that the budget left cannot hold is passed over, and the next tried; ``cull: prefix`` is
the paper's rule alone. Either way the record names the stages passed over.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from benchbed.api import (BenchbedError, DistillationOptions, EntryContext, FinetuneResult, MaskResult, MethodInfo,
                          ReLUSite, TrainRecipe, counted_sites, distillation, fit, hookimpl)


class Options(DistillationOptions):
    criticality: TrainRecipe = Field(
        default_factory=lambda: TrainRecipe(epochs=20, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                                            batch_size=128, schedule="cosine"),
        description="training of each stage-only network; its epochs are a cap, the share below decides")
    criticality_share: float = Field(0.4, gt=0, lt=1, description="share of the entry's compute for the stage "
                                                                 "trials, split evenly between the stages")
    thinning: Literal["first", "second", "none"] = Field(
        "first", description="which ReLU of a residual block thinning drops (the other stays); none: no thinning")
    cull: Literal["skip", "prefix"] = Field(
        "skip", description="prefix: keep the k most critical stages (the paper, which reaches lower budgets by "
                            "reshaping, left out here); skip: also pass over a stage the budget left cannot hold "
                            "and keep the next ones in criticality order")
    finetune: TrainRecipe = Field(
        default_factory=lambda: TrainRecipe(epochs=200, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                                            batch_size=128, schedule="cosine"),
        description="distillation of the chosen network; its epochs are cut to what is left of the budget")


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(description="coarse ReLU reduction: cull the least critical stages, thin one ReLU per block, "
                                  "then distil; lands at or under the budget",
                      paper="Jha et al., ICML 2021, arXiv:2103.01396", options=Options,
                      produces=frozenset({"relu", "masked"}))


def stage_of(site_name: str) -> str:
    parts = site_name.split(".")
    return ".".join(parts[:-2]) if len(parts) >= 3 else site_name


def block_of(site_name: str) -> str:
    parts = site_name.split(".")
    return ".".join(parts[:-1]) if len(parts) >= 3 else site_name


def stages(names: list[str]) -> dict[str, list[str]]:
    """Sites grouped by stage, in model order."""
    grouped: dict[str, list[str]] = {}
    for name in names:
        grouped.setdefault(stage_of(name), []).append(name)
    return grouped


def thinned(names: list[str], drop: Literal["first", "second", "none"]) -> list[str]:
    """The sites kept when every residual block of ``names`` keeps one of its ReLUs."""
    if drop == "none":
        return list(names)
    blocks: dict[str, list[str]] = {}
    for name in names:
        blocks.setdefault(block_of(name), []).append(name)
    kept = []
    for members in blocks.values():
        if len(members) < 2:
            kept += members
        else:
            kept += members[1:] if drop == "first" else members[:1] + members[2:]
    return [n for n in names if n in kept]


@dataclass(frozen=True)
class Configuration:
    stages: tuple[str, ...]
    thinned: bool
    sites: tuple[str, ...]
    drelus: int
    passed_over: tuple[str, ...] = ()


def _kept(stage_names: tuple[str, ...], by_stage: dict[str, list[str]], thin: bool,
          drop: Literal["first", "second", "none"]) -> tuple[str, ...]:
    names = [n for s in stage_names for n in by_stage[s]]
    return tuple(thinned(names, drop) if thin else names)


def configurations(ranking: list[str], by_stage: dict[str, list[str]], sizes: dict[str, int],
                   drop: Literal["first", "second", "none"]) -> list[Configuration]:
    """Every configuration DeepReDuce's Pareto search visits: the ``k`` most critical stages kept
    (k = 0 … all), each as they are and thinned."""
    found: dict[tuple[str, ...], Configuration] = {}
    for k in range(len(ranking) + 1):
        kept_stages = tuple(ranking[:k])
        for thin in (False, True) if drop != "none" else (False,):
            kept = _kept(kept_stages, by_stage, thin, drop)
            found.setdefault(tuple(sorted(kept)), Configuration(kept_stages, thin, kept, sum(sizes[n] for n in kept)))
    return sorted(found.values(), key=lambda c: c.drelus)


def passing_over(ranking: list[str], by_stage: dict[str, list[str]], sizes: dict[str, int],
                 drop: Literal["first", "second", "none"], budget: int) -> list[Configuration]:
    """``cull: skip``'s configurations under ``budget``, as they are and thinned: the stages in criticality
    order, each kept if the budget left holds it and passed over if not. Each contains the longest
    prefix of the ranking that fits, so it is never below the paper's choice."""
    configs = []
    for thin in (False, True) if drop != "none" else (False,):
        kept_stages: tuple[str, ...] = ()
        passed: tuple[str, ...] = ()
        for stage in ranking:
            trial = kept_stages + (stage,)
            if sum(sizes[n] for n in _kept(trial, by_stage, thin, drop)) <= budget:
                kept_stages = trial
            else:
                passed += (stage,)
        kept = _kept(kept_stages, by_stage, thin, drop)
        last = ranking.index(kept_stages[-1]) if kept_stages else -1  # those below it were never passed over
        configs.append(Configuration(kept_stages, thin, kept, sum(sizes[n] for n in kept),
                                     tuple(s for s in passed if ranking.index(s) < last)))
    return configs


def choose(configs: list[Configuration], budget: int) -> Configuration:
    """The configuration with the most DReLUs at or under the budget (more ReLUs, higher accuracy on
    DeepReDuce's Pareto frontier); among equals, the paper's own (passing over no stage), then the one
    keeping more critical stages unthinned."""
    fitting = [c for c in configs if c.drelus <= budget]
    if not fitting:
        raise BenchbedError(f"deepreduce: no configuration fits a budget of {budget:,} DReLUs")
    return max(fitting, key=lambda c: (c.drelus, -len(c.passed_over), -c.thinned, -len(c.stages)))


def keep_only(model: torch.nn.Module, keep: set[str]) -> None:
    """ReLUs at the counted sites in ``keep``; every other counted site linear (identity)."""
    for name, site in counted_sites(model).items():
        if name in keep:
            site.set_relu()
        else:
            site.set_mask(torch.zeros(site.shape[0], 1, 1))


def criticality(ctx: EntryContext, model: torch.nn.Module, by_stage: dict[str, list[str]], opts: Options) -> dict[str, float]:
    """Per stage, the validation accuracy of a copy of ``model`` that keeps only that stage's ReLUs."""
    per_stage = ctx.search_epochs(opts.criticality_share) / max(1, len(by_stage))
    loss = distillation(ctx.teacher, opts.kd_temperature, opts.kd_weight)
    scores, ran = {}, []
    for stage, names in by_stage.items():
        trial = copy.deepcopy(model)
        keep_only(trial, set(names))
        result = fit(trial, ctx, opts.criticality, budget_epochs=per_stage, loss_fn=loss,
                     label=f"{ctx.method} criticality of {stage}")
        scores[stage] = result.best_val_accuracy
        ran.append(result.epochs)
    if min(ran) < opts.criticality.epochs:
        ctx.record_cut("criticality", f"{min(ran):.2f} of {opts.criticality.epochs:g} epochs per stage")
    return scores


@hookimpl
def build_mask(ctx: EntryContext, model) -> MaskResult:
    opts: Options = ctx.options
    sites: dict[str, ReLUSite] = counted_sites(model)
    by_stage = stages(list(sites))
    scores = criticality(ctx, model, by_stage, opts)
    # Most critical first; a stable sort keeps model order among equal scores.
    ranking = sorted(by_stage, key=lambda s: -scores[s])
    sizes = {n: s.numel for n, s in sites.items()}
    configs = configurations(ranking, by_stage, sizes, opts.thinning)
    if opts.cull == "skip":
        configs = sorted(configs + passing_over(ranking, by_stage, sizes, opts.thinning, ctx.budget),
                         key=lambda c: c.drelus)
    chosen = choose(configs, ctx.budget)
    keep_only(model, set(chosen.sites))
    passed = (f"; passed over, too large for the budget left: {', '.join(chosen.passed_over)}"
              if chosen.passed_over else "")
    ctx.notes["deepreduce"] = (f"coarse: {chosen.drelus:,} of a {ctx.budget:,} DReLU budget used "
                               f"(stages {', '.join(chosen.stages) or 'none'}{', thinned' if chosen.thinned else ''}"
                               f"{passed})")
    return MaskResult(model, {"criticality": scores, "ranking": ranking, "kept_stages": list(chosen.stages),
                              "passed_over": list(chosen.passed_over), "cull": opts.cull,
                              "thinned": chosen.thinned, "drelus_used": chosen.drelus,
                              "budget_share_used": chosen.drelus / ctx.budget if ctx.budget else 0.0,
                              "configurations": [{"stages": list(c.stages), "thinned": c.thinned, "drelus": c.drelus,
                                                  "passed_over": list(c.passed_over)} for c in configs]})


@hookimpl
def finetune(ctx: EntryContext, model) -> FinetuneResult:
    opts: Options = ctx.options
    result = fit(model, ctx, opts.finetune, loss_fn=distillation(ctx.teacher, opts.kd_temperature, opts.kd_weight),
                 label=f"{ctx.method} finetune", part="finetune")
    return FinetuneResult(model, result.summary())
