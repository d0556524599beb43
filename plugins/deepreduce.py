"""DeepReDuce (Jha, Ghodsi, Garg, Reagen, ICML 2021, arXiv:2103.01396): coarse-grained ReLU reduction.

The classic baseline that SNL and later papers compare against. It removes whole layers of ReLUs:

1. *ReLU culling by stage criticality*: for every stage, train a network that keeps only that stage's
   ReLUs (every other ReLU linearized), score the stage by a criticality metric that accounts for the
   accuracy those ReLUs buy and for their count, and keep the ``k`` most critical stages.
2. *ReLU thinning*: in the stages kept, keep one ReLU per residual block (``thinning`` says which one
   goes), halving their ReLUs.
3. *ReLU reshaping* (``reshape: halve_channels``): halve the channels of kept, thinned stages, to reach
   budgets that the thinned stages exceed (the knapsack authors' reproduction at 49.2K on ResNet-18 keeps
   stages 2-3, only each block's second ReLU, channels halved: 2·64·16·16 + 2·128·8·8 = 49,152).
4. Train the chosen network with distillation from the all-ReLU teacher.

Stages and blocks are read off the site names, so any model works: a site ``layers.1.0.relu2`` is in
block ``layers.1.0`` of stage ``layers.1``; a top-level site (the stem ReLU) is a stage of its own.
A coarse method cannot land on an arbitrary budget: the entry takes the configuration with the most
DReLUs at or under the budget, records the DReLUs it actually uses, and the leaderboard shows them.

*Criticality — what was found, and what runs.* The paper defines its criticality metric ``C_k`` of
stage ``k`` in section 3 (ReLU culling); it accounts for the accuracy of the network with only stage
``k``'s ReLUs and for their count. Its exact equation could not be retrieved here: the stored copies of
the paper (arXiv/ar5iv) were only reachable as their opening pages, and secondary summaries say only
that ``C_k`` measures the importance of stage ``k``'s ReLUs and "incorporates accuracy and ReLU cost".
So no equation number is cited, and ``criticality_metric: gain_per_log_relu`` (the default) is
benchbed's own metric of that kind::

    C_k = (A_k − A_lin) / ln(1 + R_k)

``A_k`` the best validation accuracy of the stage-``k``-only network, ``A_lin`` that of the all-linear
network trained the same way (one more trial), ``R_k`` the stage's ReLU count: accuracy bought per
order of magnitude of ReLUs. ``criticality_metric: accuracy`` ranks by ``A_k`` alone (benchbed's
earlier rule). The record and ``criticality`` setup fact say which ran.

*Stage-only networks.* What was found: a public model file that builds DeepReDuce's culled ResNets
(per-stage ``isCulled`` and ``isThinned`` flags, a width factor ``alpha``, a resolution factor ``rho``)
constructs each network fresh, loading no weights, and the paper's pipeline applies distillation as its
last step, to the optimized networks (summaries of the paper; its outline: culling, thinning, reshaping,
then "improving accuracy using KD"). So under ``compute: paper`` each trial starts from freshly
initialised weights (the same seed for every stage) and trains with cross-entropy. Under matched
compute a trial gets a few epochs of the entry's budget, too few to learn from scratch, so it starts
from the teacher's weights and distils from it (benchbed's adaptation, recorded in the notes);
``criticality_from`` and ``criticality_distillation`` override either. Every trial is a ``fit`` of the
entry's context, so its batches are charged to the entry's compute (``criticality_share`` of it).

*Culling.* ``cull: prefix`` is the paper's rule: keep the ``k`` most critical stages; it is the
default under ``compute: paper``. The paper reaches budgets below its most critical stage by
reshaping; without it, keeping the ``k`` most critical stages lands such a budget on the all-linear
network (ResNet-18 on CIFAR: a most critical stage of 32,768 DReLUs thinned puts 30,000 at 0). So
under matched compute the default is benchbed's ``cull: skip``: the stages are kept in criticality
order, one that the budget left cannot hold is passed over, and the next tried.

*Reshaping, as benchbed approximates it.* The model abstraction cannot change a site's shape, so
``halve_channels`` keeps the ReLUs of the first half of the channels (``C // 2``, as ``int(C·alpha)``
rounds in that model file) at every kept site of a reshaped stage and linearizes the other half
(identity): the DReLU count of the halved stage, but the channels stay and only their ReLUs halve; the
convolutions keep their width. Halving all the kept stages is the paper's network-wide width factor;
benchbed also tries halving only the least critical of them (under ``cull: skip``, only the stages
that do not fit whole), so a budget between the two is not left unspent. It is the default under
``compute: paper`` (the paper's way to low budgets) and off (``none``) under matched compute. The
record names the stages passed over and the stages reshaped, and reports them (``report_setup``:
``criticality``, ``cull``, ``stages_kept``, ``stages_passed_over``, ``stages_reshaped``).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from benchbed.api import (BenchbedError, Condition, DistillationOptions, EntryContext, FinetuneResult, MaskResult, MethodInfo,
                          ReLUSite, TrainRecipe, counted_sites, distillation, fit, hookimpl)


class Options(DistillationOptions):
    criticality: TrainRecipe = Field(
        default_factory=lambda: TrainRecipe(epochs=20, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                                            batch_size=128, schedule="cosine"),
        description="training of each stage-only network; its epochs are a cap, the share below decides")
    criticality_share: float = Field(0.4, gt=0, lt=1, description="share of the entry's compute for the stage "
                                                                 "trials, split evenly between the trials")
    criticality_metric: Literal["gain_per_log_relu", "accuracy"] = Field(
        "gain_per_log_relu", description="gain_per_log_relu: benchbed's C_k = (A_k - A_lin) / ln(1 + R_k), with an "
                                         "all-linear trial for A_lin (the paper's section-3 equation was not at "
                                         "hand); accuracy: A_k alone")
    criticality_from: Literal["scratch", "teacher"] | None = Field(
        None, description="the stage trials' start: freshly initialised weights (as the paper builds its culled "
                          "networks) or the teacher's; by default scratch under `compute: paper`, the teacher "
                          "under matched compute")
    criticality_distillation: bool | None = Field(
        None, description="distil the stage trials from the teacher; by default not under `compute: paper` (the "
                          "paper distils only its final networks), yes under matched compute")
    thinning: Literal["first", "second", "none"] = Field(
        "first", description="which ReLU of a residual block thinning drops (the other stays); none: no thinning")
    cull: Literal["skip", "prefix"] | None = Field(
        None, description="prefix: keep the k most critical stages (the paper's rule, the default under "
                          "`compute: paper`); skip: also pass over a stage the budget left cannot hold and keep the "
                          "next ones in criticality order (benchbed's, the default under matched compute)")
    reshape: Literal["none", "halve_channels"] | None = Field(
        None, description="halve_channels: also halve the channels of kept, thinned stages to reach lower budgets, "
                          "as benchbed approximates it (ReLUs on half the channels of their sites, the other half "
                          "linear); by default on under `compute: paper`, none under matched compute")
    finetune: TrainRecipe = Field(
        default_factory=lambda: TrainRecipe(epochs=200, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                                            batch_size=128, schedule="cosine"),
        description="distillation of the chosen network; its epochs are cut to what is left of the budget")


# The paper reaches a budget by culling the least critical stages in order and reshaping what is kept;
# passing over a stage that does not fit (``cull: skip``) is benchbed's rule.
SETUP = (Condition("DeepReDuce's culling, the least critical stages first (cull: prefix)", "reported.cull", "==",
                   "prefix"),)


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(description="coarse ReLU reduction: cull the least critical stages, thin one ReLU per block, "
                                  "optionally halve channels, then distil; lands at or under the budget",
                      paper="Jha et al., ICML 2021, arXiv:2103.01396", options=Options,
                      produces=frozenset({"relu", "masked"}), setup=SETUP)


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
    reshaped: tuple[str, ...] = ()  # kept stages whose sites keep ReLUs on half their channels


def halved_sizes(sites: dict[str, ReLUSite]) -> dict[str, int]:
    """Per site, its DReLUs with ReLUs on ``C // 2`` of its ``C`` channels: the count of the site with its
    channels halved (``reshape: halve_channels``)."""
    return {name: (site.shape[0] // 2) * (site.numel // site.shape[0]) for name, site in sites.items()}


def _kept(stage_names: tuple[str, ...], by_stage: dict[str, list[str]], thin: bool,
          drop: Literal["first", "second", "none"]) -> tuple[str, ...]:
    names = [n for s in stage_names for n in by_stage[s]]
    return tuple(thinned(names, drop) if thin else names)


def _cost(kept: tuple[str, ...], by_stage: dict[str, list[str]], sizes: dict[str, int],
          halved: dict[str, int] | None, reshaped: tuple[str, ...]) -> int:
    halved_sites = {n for s in reshaped for n in by_stage[s]}
    return sum(halved[n] if n in halved_sites else sizes[n] for n in kept)  # type: ignore[index]


def configurations(ranking: list[str], by_stage: dict[str, list[str]], sizes: dict[str, int],
                   drop: Literal["first", "second", "none"],
                   halved: dict[str, int] | None = None) -> list[Configuration]:
    """Every configuration DeepReDuce's Pareto search visits: the ``k`` most critical stages kept
    (k = 0 … all), each as they are and thinned; with ``halved`` (the per-site DReLUs of
    ``reshape: halve_channels``) also thinned with the least critical ``m`` of them reshaped (m = 1 … k)."""
    found: dict[tuple, Configuration] = {}

    def add(config: Configuration) -> None:
        found.setdefault((tuple(sorted(config.sites)), tuple(sorted(config.reshaped))), config)

    for k in range(len(ranking) + 1):
        kept_stages = tuple(ranking[:k])
        for thin in (False, True) if drop != "none" else (False,):
            kept = _kept(kept_stages, by_stage, thin, drop)
            add(Configuration(kept_stages, thin, kept, sum(sizes[n] for n in kept)))
        if halved is not None:
            kept = _kept(kept_stages, by_stage, drop != "none", drop)
            for m in range(1, k + 1):
                reshaped = kept_stages[k - m:]
                add(Configuration(kept_stages, drop != "none", kept,
                                  _cost(kept, by_stage, sizes, halved, reshaped), reshaped=reshaped))
    return sorted(found.values(), key=lambda c: c.drelus)


def passing_over(ranking: list[str], by_stage: dict[str, list[str]], sizes: dict[str, int],
                 drop: Literal["first", "second", "none"], budget: int,
                 halved: dict[str, int] | None = None) -> list[Configuration]:
    """``cull: skip``'s configurations under ``budget``, as they are and thinned: the stages in criticality
    order, each kept if the budget left holds it and passed over if not. Each contains the longest
    prefix of the ranking that fits, so it is never below the paper's choice. With ``halved`` two more,
    thinned: a stage reshaped only when it does not fit whole, and every stage reshaped."""
    variants: list[tuple[bool, tuple[bool, ...]]] = [(False, (False,))]
    if drop != "none":
        variants.append((True, (False,)))
    if halved is not None:
        variants += [(drop != "none", (False, True)), (drop != "none", (True,))]
    configs = []
    for thin, tries in variants:
        kept_stages: tuple[str, ...] = ()
        passed: tuple[str, ...] = ()
        reshaped: tuple[str, ...] = ()
        for stage in ranking:
            for halve in tries:
                trial, trial_reshaped = kept_stages + (stage,), reshaped + ((stage,) if halve else ())
                if _cost(_kept(trial, by_stage, thin, drop), by_stage, sizes, halved, trial_reshaped) <= budget:
                    kept_stages, reshaped = trial, trial_reshaped
                    break
            else:
                passed += (stage,)
        kept = _kept(kept_stages, by_stage, thin, drop)
        last = ranking.index(kept_stages[-1]) if kept_stages else -1  # those below it were never passed over
        configs.append(Configuration(kept_stages, thin, kept, _cost(kept, by_stage, sizes, halved, reshaped),
                                     tuple(s for s in passed if ranking.index(s) < last), reshaped))
    return configs


def choose(configs: list[Configuration], budget: int) -> Configuration:
    """The configuration with the most DReLUs at or under the budget (more ReLUs, higher accuracy on
    DeepReDuce's Pareto frontier); among equals, the paper's own (passing over no stage), then the one
    reshaping fewer stages (benchbed's approximation), then the one keeping more critical stages
    unthinned."""
    fitting = [c for c in configs if c.drelus <= budget]
    if not fitting:
        raise BenchbedError(f"deepreduce: no configuration fits a budget of {budget:,} DReLUs")
    return max(fitting, key=lambda c: (c.drelus, -len(c.passed_over), -len(c.reshaped), -c.thinned, -len(c.stages)))


def keep_only(model: torch.nn.Module, keep: set[str], halved: set[str] = frozenset()) -> None:
    """ReLUs at the counted sites in ``keep`` (at those also in ``halved``, on the first ``C // 2`` of their
    ``C`` channels, the rest linear); every other counted site linear (identity)."""
    for name, site in counted_sites(model).items():
        if name in keep and name not in halved:
            site.set_relu()
        else:
            mask = torch.zeros(site.shape[0], 1, 1)
            if name in keep:
                mask[: site.shape[0] // 2] = 1.0
            site.set_mask(mask)


def criticality_score(accuracy: float, linear_accuracy: float, relus: int) -> float:
    """benchbed's criticality of a stage (``criticality_metric: gain_per_log_relu``; the paper's section-3
    equation was not at hand): the validation accuracy its ReLUs alone add over the all-linear network,
    per natural log of their count, ``(A_k − A_lin) / ln(1 + R_k)``."""
    return (accuracy - linear_accuracy) / math.log1p(relus)


def _fresh(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of ``model`` with freshly initialised weights, the same for every call with ``seed``."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return fresh


LINEAR = "(all linear)"  # the all-linear trial's label among the stage trials


def criticality(ctx: EntryContext, model: torch.nn.Module, by_stage: dict[str, list[str]],
                sizes: dict[str, int], opts: Options) -> dict:
    """Per stage, a network that keeps only that stage's ReLUs trained within a share of the entry's
    compute, and the stage's criticality; with ``gain_per_log_relu`` also the all-linear network."""
    start = opts.criticality_from or ("scratch" if ctx.protocol == "paper" else "teacher")
    distil = opts.criticality_distillation if opts.criticality_distillation is not None else ctx.protocol != "paper"
    trials = dict(by_stage)
    if opts.criticality_metric == "gain_per_log_relu":
        trials[LINEAR] = []
    per_trial = ctx.search_epochs(opts.criticality_share) / max(1, len(trials))
    loss = distillation(ctx.teacher, opts.kd_temperature, opts.kd_weight) if distil else None
    init = _fresh(model, ctx.seed) if start == "scratch" else model
    accuracy, ran = {}, []
    for stage, names in trials.items():
        trial = copy.deepcopy(init)
        keep_only(trial, set(names))
        result = fit(trial, ctx, opts.criticality, budget_epochs=per_trial, loss_fn=loss,
                     label=f"{ctx.method} criticality of {stage}")
        accuracy[stage] = result.best_val_accuracy
        ran.append(result.epochs)
        del trial
    if min(ran) < opts.criticality.epochs:
        ctx.record_cut("criticality", f"{min(ran):.2f} of {opts.criticality.epochs:g} epochs per trial")
    relus = {stage: sum(sizes[n] for n in names) for stage, names in by_stage.items()}
    linear = accuracy.pop(LINEAR, None)
    scores = ({s: criticality_score(accuracy[s], linear, relus[s]) for s in by_stage} if linear is not None
              else dict(accuracy))
    return {"criticality": scores, "stage_accuracy": accuracy, "linear_accuracy": linear, "stage_relus": relus,
            "criticality_metric": opts.criticality_metric, "trials_from": start, "trials_distilled": distil,
            "trial_epochs": [round(e, 4) for e in ran]}


@hookimpl
def build_mask(ctx: EntryContext, model) -> MaskResult:
    opts: Options = ctx.options
    sites: dict[str, ReLUSite] = counted_sites(model)
    by_stage = stages(list(sites))
    sizes = {n: s.numel for n, s in sites.items()}
    paper = ctx.protocol == "paper"
    cull = opts.cull or ("prefix" if paper else "skip")
    reshape = opts.reshape or ("halve_channels" if paper else "none")
    trials = criticality(ctx, model, by_stage, sizes, opts)
    scores = trials["criticality"]
    # Most critical first; a stable sort keeps model order among equal scores.
    ranking = sorted(by_stage, key=lambda s: -scores[s])
    halved = halved_sizes(sites) if reshape == "halve_channels" else None
    configs = configurations(ranking, by_stage, sizes, opts.thinning, halved)
    if cull == "skip":
        configs = sorted(configs + passing_over(ranking, by_stage, sizes, opts.thinning, ctx.budget, halved),
                         key=lambda c: c.drelus)
    chosen = choose(configs, ctx.budget)
    keep_only(model, set(chosen.sites), {n for s in chosen.reshaped for n in by_stage[s]})
    metric = ("benchbed (A_k - A_lin) / ln(1 + R_k); the paper's section-3 equation not at hand"
              if opts.criticality_metric == "gain_per_log_relu" else "benchbed: stage-only validation accuracy A_k")
    metric += (f"; trials from {'scratch' if trials['trials_from'] == 'scratch' else 'the teacher'}, "
               f"{'distilled' if trials['trials_distilled'] else 'cross-entropy'}")
    facts = {"criticality": metric, "cull": cull, "stages_kept": ",".join(chosen.stages),
             "stages_passed_over": ",".join(chosen.passed_over), "stages_reshaped": ",".join(chosen.reshaped)}
    for fact, value in facts.items():
        ctx.report_setup(fact, value)
    passed = (f"; passed over, too large for the budget left: {', '.join(chosen.passed_over)}"
              if chosen.passed_over else "")
    halves = f"; channels halved: {', '.join(chosen.reshaped)}" if chosen.reshaped else ""
    ctx.notes["deepreduce"] = (f"coarse: {chosen.drelus:,} of a {ctx.budget:,} DReLU budget used "
                               f"(stages {', '.join(chosen.stages) or 'none'}{', thinned' if chosen.thinned else ''}"
                               f"{halves}{passed}; cull: {cull})")
    if reshape == "halve_channels":
        ctx.notes["deepreduce reshape"] = ("channel halving is benchbed's approximation of the paper's architectural "
                                           "reshape: a reshaped stage keeps its channels, and ReLUs on the first half "
                                           "of them (the other half linear), the DReLUs of the halved stage")
    if trials["trials_from"] == "teacher" or trials["trials_distilled"]:
        ctx.notes["deepreduce criticality"] = (
            f"stage trials started from {'the teacher' if trials['trials_from'] == 'teacher' else 'scratch'}"
            f"{' and distilled' if trials['trials_distilled'] else ''} (benchbed's adaptation; under `compute: "
            "paper` they start from fresh weights and train with cross-entropy, distillation being the paper's "
            "last step)")
    return MaskResult(model, {**trials, "ranking": ranking, "kept_stages": list(chosen.stages),
                              "passed_over": list(chosen.passed_over), "reshaped": list(chosen.reshaped),
                              "cull": cull, "reshape": reshape, "setup": facts,
                              "thinned": chosen.thinned, "drelus_used": chosen.drelus,
                              "budget_share_used": chosen.drelus / ctx.budget if ctx.budget else 0.0,
                              "configurations": [{"stages": list(c.stages), "thinned": c.thinned, "drelus": c.drelus,
                                                  "passed_over": list(c.passed_over), "reshaped": list(c.reshaped)}
                                                 for c in configs]})


@hookimpl
def finetune(ctx: EntryContext, model) -> FinetuneResult:
    opts: Options = ctx.options
    result = fit(model, ctx, opts.finetune, loss_fn=distillation(ctx.teacher, opts.kd_temperature, opts.kd_weight),
                 label=f"{ctx.method} finetune", part="finetune")
    return FinetuneResult(model, result.summary())
