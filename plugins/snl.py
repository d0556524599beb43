"""SNL — Selective Network Linearization (Cho et al., ICML 2022, arXiv 2202.02340).

Mask search: every ReLU pixel (or channel) of every counted site gets a trainable alpha, initialised
to 1, and the site computes ``alpha·relu(x) + (1−alpha)·x``. Weights and alphas train together on
CE + KD(teacher, T) + lambda·Σ|alpha|; lambda grows ×1.1 after every epoch (from epoch 5 on) in
which the count of alive alphas (> 1e-2) did not reach a new low. The search stops once the alive
count is within the budget, or when its share of the compute budget is spent; either way the mask
is the top-``budget`` alphas, so every entry lands exactly on its budget (the reference code stops
slightly under it). Finetune: mask frozen, CE + KD, SGD + cosine, best epoch on validation — the
reference picked it on test.

The paper's schedule needs as many epochs as it takes (421 for 15K ReLUs on CIFAR-100). Under a
compute budget the search gets a share of it, and a search stopped early leaves a mask that is the
top-k of barely-trained alphas. So by default (``lambda_schedule: on_track``) lambda also grows
×``lambda_catch_up`` after every period in which the alive count fell more slowly than it must to
reach the budget by ``on_track_by`` of the search's planned epochs (the per-period ratio
(budget / alive)^(1 / periods left)) — unless the count, falling at its current rate while the last
growth still takes effect, reaches the budget anyway. The rule follows the rate, not the level, and
it waits for the alphas to answer: an alpha moves at most about its lr per Adam step, so it needs (1 − threshold) /
alpha_lr steps to fall from 1 to the alive threshold, and lambda does not grow again (by either rule)
until that many steps have passed since it last grew — otherwise growths compound before the count
can respond and the search collapses far below the budget. The search stops as soon as the alive
count is within the budget, checked every ``stop_check_steps`` steps. ``compute: paper`` runs the
paper's rule alone, once an epoch, as the authors' code does.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from benchbed.api import (FORWARD_SHARE, Claim, ClaimSide, DistillationOptions, EntryContext, FinetuneResult,
                          MaskResult, MethodInfo, PublishedResult, SiteKernel, TrainRecipe, broadcast_like,
                          counted_sites, distillation, distilled_finetune, fit, hookimpl, planned_steps, top_k)

# The paper's CIFAR-100 ResNet-18 top-1 by ReLU count (no stem ReLU), from its published table.
PUBLISHED = [PublishedResult("cifar100", "resnet18_cifar", False, relus, accuracy, "SNL, ICML 2022")
             for relus, accuracy in [(12_900, 0.6653), (14_900, 0.6717), (25_000, 0.7005), (29_800, 0.7018),
                                     (40_000, 0.7235), (49_400, 0.7375), (60_000, 0.7485), (69_800, 0.7529),
                                     (79_100, 0.7572), (99_900, 0.7594), (120_000, 0.7635), (150_000, 0.7735),
                                     (180_000, 0.7765), (248_400, 0.777)]]

class Options(DistillationOptions):
    granularity: Literal["pixel", "channel"] = "pixel"
    lambda_init: float = Field(1e-5, gt=0, description="initial weight of the L1 penalty on alphas")
    lambda_growth: float = Field(1.1, ge=1, description="lambda multiplier after an epoch without a new low")
    lambda_patience_start: int = Field(5, ge=0, description="first epoch at which lambda may grow")
    lambda_schedule: Literal["on_track", "paper"] = Field(
        "on_track", description="paper: only the paper's rule; on_track: also grow lambda while the alive count "
                                "is behind the path that reaches the budget within the search's share")
    lambda_catch_up: float = Field(2.0, gt=1, description="lambda multiplier after an epoch that pruned too slowly "
                                                          "to reach the budget in time")
    on_track_by: float = Field(0.6, gt=0, le=1, description="share of the planned search epochs by which the count "
                                                           "should reach the budget (the rest absorbs the lag of "
                                                           "pruning behind lambda)")
    lambda_period: float = Field(1.0, gt=0, le=1, description="epochs between lambda updates (the paper: 1); a search "
                                                             "of an epoch or two needs several updates an epoch")
    alive_threshold: float = Field(1e-2, description="an alpha above this counts as a live ReLU")
    flicker_margin: float = Field(2.0, ge=0, description="on_track: Adam moves an alpha by about its lr a step, so "
                                                         "one at zero flickers up to that; the search counts an "
                                                         "alpha alive above max(threshold, margin × alpha lr)")
    wait_for_response: bool = Field(True, description="on_track: after lambda grows, wait the steps an alpha needs "
                                                      "to fall from 1 to the threshold before it grows again")
    stop_check_steps: int = Field(10, ge=1, description="steps between checks of the alive count against the budget")
    search_validation: bool = Field(False, description="measure validation accuracy after every lambda period "
                                                       "(for the trace; costs forward passes of the budget)")
    alpha_lr: float | None = Field(None, gt=0, description="lr of the alphas (default: the search lr)")
    search: TrainRecipe = Field(
        default_factory=lambda: TrainRecipe(epochs=1000, optimizer="adam", lr=1e-3, weight_decay=0.0,
                                            batch_size=128, schedule="constant"),
        description="mask search; its epochs are a cap, the search stops at the budget")
    search_share: float = Field(0.5, gt=0, le=1, description="largest share of the entry's compute the search may use")
    finetune: TrainRecipe = Field(
        default_factory=lambda: TrainRecipe(epochs=100, optimizer="sgd", lr=1e-3, momentum=0.9, nesterov=False,
                                            weight_decay=5e-4, batch_size=128, schedule="cosine"),
        description="finetune with the mask frozen; its epochs are cut to what is left of the compute budget")


# The published recipe (CIFAR-100 ResNet-18): the search runs until the budget is reached, the
# finetune 100 epochs.
PAPER_RECIPE = {
    "lambda_schedule": "paper", "lambda_init": 1e-5, "lambda_growth": 1.1, "lambda_patience_start": 5,
    "search_share": 1.0,
    "search": {"epochs": 1000, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 128,
               "schedule": "constant"},
    "finetune": {"epochs": 100, "optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "nesterov": False,
                 "weight_decay": 5e-4, "batch_size": 128, "schedule": "cosine"},
}


CLAIMS = [
    Claim("snl_mask_beats_random_mask", "SNL's learned mask beats a random mask at the same finetune (method, recipe "
          "and compute), at every budget", "SNL, Cho et al., ICML 2022", a=ClaimSide("snl"),
          b=ClaimSide("random_mask", "snl"), same="finetune compute"),
    Claim("snl_search_worth_its_compute", "SNL's search is worth its compute: at equal total compute it beats a random "
          "mask whose finetune (SNL's) gets the whole budget, at every budget",
          "benchbed: SNL's search against spending its compute on finetuning", a=ClaimSide("snl"),
          b=ClaimSide("random_mask", "snl"), same="total compute"),
]


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(description="learned per-pixel ReLU masks: L1 on alphas with a growing lambda, "
                                  "top-k to the exact budget, then finetune with KD",
                      paper="Cho et al., ICML 2022, arXiv:2202.02340", options=Options, paper_recipe=PAPER_RECIPE,
                      produces=frozenset({"masked"}), published=PUBLISHED, claims=CLAIMS)


class AlphaKernel(SiteKernel):
    """``alpha·relu(x) + (1−alpha)·x`` with one unclamped trainable alpha per pixel or channel."""

    kind = "snl_alpha"

    def __init__(self, shape: tuple[int, int, int], granularity: str, threshold: float):
        super().__init__()
        size = shape if granularity == "pixel" else (shape[0], 1, 1)
        self.alpha = nn.Parameter(torch.ones(size))
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x + alpha·(relu(x) − x) in one pass, alpha in the map's layout
        return torch.lerp(x, torch.relu(x), broadcast_like(self.alpha, x))

    def relus(self, shape: tuple[int, int, int]) -> int:
        return int((self.alpha > self.threshold).expand(shape).sum().item())

    drelus = relus


def next_lambda(lam: float, epoch: float, alive: int, best_alive: int, opts: Options,
                behind: bool = False) -> float:
    """SNL's schedule: grow lambda when a period (from epoch ``lambda_patience_start`` on) set no new
    low; grow it ×``lambda_catch_up`` instead after a period that was ``behind`` the pace to the budget."""
    if behind:
        return lam * opts.lambda_catch_up
    if epoch >= opts.lambda_patience_start and alive >= best_alive:
        return lam * opts.lambda_growth
    return lam


def needed_ratio(alive: int, budget: int, periods_left: float) -> float:
    """Per-period ratio of the alive count that reaches ``budget`` in ``periods_left`` periods (at least one)."""
    return (budget / alive) ** (1 / max(1.0, periods_left))


def alpha_sizes(alphas: dict[str, torch.Tensor], shapes: dict[str, tuple[int, int, int]]) -> dict[str, int]:
    """Pixels an alpha stands for: 1 per pixel, a whole H×W map per channel."""
    return {n: shapes[n][1] * shapes[n][2] if alphas[n].shape[1:] == (1, 1) else 1 for n in alphas}


@hookimpl
def build_mask(ctx: EntryContext, model) -> MaskResult:
    opts: Options = ctx.options
    sites = counted_sites(model)
    kernels = {n: AlphaKernel(s.shape, opts.granularity, opts.alive_threshold) for n, s in sites.items()}
    for name, site in sites.items():
        site.set_kernel(kernels[name])
    alphas = [k.alpha for k in kernels.values()]
    alpha_ids = {id(a) for a in alphas}
    weights = [p for p in model.parameters() if id(p) not in alpha_ids]
    alpha_lr = opts.alpha_lr or opts.search.lr
    params = [{"params": weights}, {"params": alphas, "lr": alpha_lr, "weight_decay": 0.0}]
    threshold = opts.alive_threshold
    if opts.lambda_schedule == "on_track":
        threshold = max(threshold, opts.flicker_margin * alpha_lr)
    alive = lambda: sum(int((kernels[n].alpha > threshold).expand(s.shape).sum())  # noqa: E731
                        for n, s in sites.items())

    start = alive()
    state = {"lambda": opts.lambda_init, "best": start, "previous": start, "reached": False, "trace": [],
             "grown_at": -10**9}
    search_budget = ctx.search_epochs(opts.search_share)
    seconds_cap = opts.search_share * ctx.clock.remaining_seconds()
    start_seconds = ctx.clock.seconds_used
    batch = min(opts.search.batch_size, len(ctx.data.train_y))
    steps_per_epoch = max(1, len(ctx.data.train_y) // batch)
    steps_per_period = max(1, round(opts.lambda_period * steps_per_epoch))
    # epochs the search can run: each image costs a training pass and the teacher's forward for the KD
    planned = planned_steps(ctx, opts.search.epochs, batch, 1 + FORWARD_SHARE, budget_epochs=search_budget) / steps_per_epoch
    lag = math.ceil((1 - threshold) / alpha_lr) if opts.wait_for_response else 0

    def after_period(index: int, val_acc: float | None) -> bool:
        count = alive()
        step = (index + 1) * steps_per_period
        epoch = index * opts.lambda_period
        behind = None
        if opts.lambda_schedule == "on_track" and count > ctx.budget:
            needed = needed_ratio(state["previous"], ctx.budget, (opts.on_track_by * planned - epoch) / opts.lambda_period)
            ratio = count / state["previous"]
            # the current lambda is still taking effect for ``lag`` steps: at today's rate, does it get there?
            arriving = count * ratio ** (lag / steps_per_period) <= ctx.budget if ratio < 1 else False
            behind = ratio > needed and not arriving
        answered = opts.lambda_schedule == "paper" or step - state["grown_at"] >= lag
        before = state["lambda"]
        if answered:
            state["lambda"] = next_lambda(before, epoch, count, state["best"], opts, bool(behind))
        if state["lambda"] != before:
            state["grown_at"] = step
        state["trace"].append({"epoch": round(epoch, 4), "step": step, "alive": count, "lambda": before,
                               "val_accuracy": val_acc, "grew": state["lambda"] != before,
                               **({} if behind is None else {"behind_pace": behind})})
        state["previous"] = count
        state["best"] = min(state["best"], count)
        state["reached"] = count <= ctx.budget
        return state["reached"] or ctx.clock.seconds_used - start_seconds >= seconds_cap

    def within_budget() -> bool:
        state["reached"] = alive() <= ctx.budget
        return state["reached"]

    penalty = lambda: state["lambda"] * sum(a.abs().sum() for a in alphas)  # noqa: E731
    result = fit(model, ctx, opts.search, budget_epochs=search_budget, params=params, extra_loss=penalty,
                 loss_fn=distillation(ctx.teacher, opts.kd_temperature, opts.kd_weight), cost_per_image=1 + FORWARD_SHARE,
                 select_on_val=False, validate=opts.search_validation, on_epoch_end=after_period,
                 period=opts.lambda_period, stop_when=within_budget, stop_every=opts.stop_check_steps,
                 label=f"{ctx.method} mask search")
    final_alive = alive()
    alphas = {n: k.alpha for n, k in kernels.items()}
    alive_at_stop = {n: (a.detach() > threshold).float().cpu() for n, a in alphas.items()}
    # the budget's largest alphas: ties (alphas never moved) go to earlier sites and pixels
    masks = top_k(alphas, ctx.budget, alpha_sizes(alphas, {n: s.shape for n, s in sites.items()}))
    for name, site in sites.items():
        site.set_mask(masks[name])
    kept = sum(s.relus for s in sites.values())
    chosen = sum(int(site.kernel.mask.cpu().mul(alive_at_stop[n].expand_as(site.kernel.mask)).expand(site.shape).sum())
                 for n, site in sites.items())
    info = {"search_epochs": round(result.epochs, 4), "planned_search_epochs": round(planned, 4),
            "search_seconds": round(ctx.clock.seconds_used - start_seconds, 3),
            "alive_at_stop": final_alive, "budget_reached_by_search": state["reached"],
            "lambda_schedule": opts.lambda_schedule, "final_lambda": state["lambda"], "response_steps": lag,
            "alive_above": threshold,
            "binarized_to": kept, "kept_chosen_by_search": chosen, "kept_filled_by_top_k": kept - chosen,
            "live_dropped_by_top_k": max(0, final_alive - chosen), "trace": state["trace"]}
    ctx.notes["snl"] = (f"{chosen:,} of the {kept:,} kept ReLUs were alive when the search stopped; top-k filled in "
                        f"{kept - chosen:,}" + (f" and dropped {final_alive - chosen:,} live ones" if final_alive > chosen
                                                 else ""))
    if not state["reached"]:
        ctx.record_cut("mask_search", f"stopped by its compute share after {result.epochs:.3g} epochs at "
                                      f"{final_alive:,} live ReLUs (budget {ctx.budget:,}); mask = top-k alphas")
    return MaskResult(model, info)


@hookimpl
def finetune(ctx: EntryContext, model) -> FinetuneResult:
    return FinetuneResult(model, distilled_finetune(ctx, model, ctx.options.finetune, ctx.options))
