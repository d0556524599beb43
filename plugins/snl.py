"""SNL — Selective Network Linearization (Cho et al., ICML 2022, arXiv 2202.02340).

Mask search: every ReLU pixel (or channel) of every counted site gets a trainable alpha, initialised
to 1, and the site computes ``alpha·relu(x) + (1−alpha)·x``. Weights and alphas train together on
CE + KD(teacher, T) + lambda·Σ|alpha|. The search stops once the alive count is within the budget
(checked every ``stop_check_steps`` steps), or when its share of the compute budget is spent; either
way the mask is the top-``budget`` alphas, so every entry lands exactly on its budget (the reference
code stops slightly under it). Finetune: mask frozen, CE + KD, SGD + cosine, best epoch on validation
— the reference picked it on test.

What runs by default is the paper's lambda rule: lambda starts at ``lambda_init`` and grows
×``lambda_growth`` (1.1) after every lambda period from ``lambda_patience_start`` (5) on in which the
count of alive alphas (> ``alive_threshold``, the paper's 1e-2) set no new low — nothing else changes
lambda unless the forecast below says this rule cannot reach the budget in time.

benchbed's additions, each recorded in the entry:

- ``lambda_period``: the paper updates lambda once an epoch; a search of an epoch or two may update it
  several times an epoch (the rule itself is unchanged, a "period" stands for the paper's epoch).
- The forecast catch-up (``lambda_schedule: paper_with_catch_up``, the default; ``paper`` turns it off).
  The paper's schedule needs as many epochs as it takes (421 for 15K ReLUs on CIFAR-100); under a
  compute budget the search gets a share of it, and a search stopped early leaves a mask that is the
  top-k of barely-trained alphas. So after every period the alive count's geometric decline over the
  last ``forecast_window`` (2) periods is extrapolated to the end of the search's planned share,
  ``alive · (alive / alive_window_ago) ** (periods_left / forecast_window)``. While the count keeps setting new
  lows the paper's rule holds lambda, so the extrapolation is what the rule alone does next; a count
  that is not falling forecasts "never". Only when the forecast lands above the budget does lambda grow
  ×``lambda_catch_up`` (2), in place of the paper's step for that period. The catch-up acts from
  ``lambda_patience_start`` on, once ``forecast_window`` periods were counted, and waits for the alphas
  to answer — from the search's start and after each time it engaged — before it forecasts again; a
  count that cannot have moved yet is no evidence. The wait is counted in lambda periods:
  ``catch_up_wait``, by default the periods an alpha needs to fall from 1 to the threshold at about its
  lr an Adam step, ceil((1 − 1e-2) / alpha_lr / steps per period), at least 1 — 1 period on fmnist (20
  of its 42-step periods), 3 epochs at CIFAR's default lr 1e-3 (990 of ~350-390 steps an epoch), 6
  epochs on the smoke digits (99 of 19 steps). It holds back only the catch-up, never the paper's own
  rule. The record says how often the catch-up engaged and in which periods (``catch_up_engaged``,
  ``catch_up_at``) and how long it waited (``catch_up_wait_periods``).
- ``alive_threshold`` other than 1e-2, or ``flicker_margin`` (count alive only above
  ``flicker_margin × alpha_lr``: an alpha at zero flickers by about its lr a step), is recorded as a note.

``compute: paper`` runs the paper's rule alone (``lambda_schedule: paper``), once an epoch, as the
authors' code does. Every entry reports (``EntryContext.report_setup`` and the mask's info)
``lambda_controller``, ``catch_up_engaged``, ``reached_budget_by_search`` and ``top_k_share``: the
share of the kept ReLUs that top-k filled in beyond those alive when the search stopped,
clip((budget − alive_at_stop) / budget, 0, 1) — 0 when the search stopped at or above the budget.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from benchbed.api import (FORWARD_SHARE, Claim, ClaimSide, Condition, DistillationOptions, EntryContext, FinetuneResult,
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
    lambda_growth: float = Field(1.1, ge=1, description="the paper's rule: lambda multiplier after a lambda period "
                                                        "without a new low of the alive count")
    lambda_patience_start: int = Field(5, ge=0, description="first epoch at which lambda may grow (by either rule)")
    lambda_schedule: Literal["paper", "paper_with_catch_up"] = Field(
        "paper_with_catch_up", description="paper: the paper's rule alone; paper_with_catch_up: the paper's rule, and "
                                           "a catch-up only when a forecast says it cannot reach the budget within "
                                           "the search's planned share (benchbed's)")
    lambda_catch_up: float = Field(2.0, gt=1, description="lambda multiplier of the catch-up, in place of the paper's "
                                                          "step in a period where the forecast misses the budget")
    forecast_window: int = Field(2, ge=1, description="lambda periods over which the forecast measures the alive "
                                                      "count's decline (and extrapolates it to the search's end)")
    catch_up_wait: int | None = Field(
        None, ge=0, description="lambda periods the catch-up waits, from the search's start and after each time it "
                                "engaged, for the alphas to answer before it forecasts again (None: the periods an "
                                "alpha needs to fall from 1 to the threshold at about its lr a step, at least 1); "
                                "the paper's rule never waits")
    lambda_period: float = Field(1.0, gt=0, le=1, description="epochs between lambda updates (the paper: 1); a search "
                                                             "of an epoch or two needs several updates an epoch")
    alive_threshold: float = Field(1e-2, gt=0, description="an alpha above this counts as a live ReLU (the paper: "
                                                          "1e-2; another value is recorded as a note)")
    flicker_margin: float = Field(0.0, ge=0, description="0: off (the paper). Adam moves an alpha by about its lr a "
                                                         "step, so one at zero flickers up to that; >0 counts an alpha "
                                                         "alive above max(threshold, margin × alpha lr) (a note)")
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
    "lambda_period": 1.0, "alive_threshold": 1e-2, "search_share": 1.0,
    "search": {"epochs": 1000, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 128,
               "schedule": "constant"},
    "finetune": {"epochs": 100, "optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "nesterov": False,
                 "weight_decay": 5e-4, "batch_size": 128, "schedule": "cosine"},
}


# SNL's figures come from a search that reaches the budget by its own penalty. Every entry lands on the
# budget by top-k of the alphas; where top-k filled more than this share of the kept ReLUs, the mask is
# mostly benchbed's top-k of a search that stopped short, not SNL's search.
TOP_K_SHARE_STATED = 0.1
SETUP = (Condition("SNL's search reaching the budget by its own penalty", "reported.reached_budget_by_search", "==", True),
         Condition(f"at most {TOP_K_SHARE_STATED:.0%} of the kept ReLUs filled by top-k below the search's alive count",
                   "reported.top_k_share", "<=", TOP_K_SHARE_STATED))

CLAIMS = [
    Claim("snl_beats_deepreduce", "SNL beats DeepReDuce at equal ReLUs, at every budget",
          "SNL, Cho et al., ICML 2022 (abstract; the state of the art it compares with is DeepReDuce)",
          a=ClaimSide("snl"), b=ClaimSide("deepreduce"),
          quote="The results demonstrate up to 4.25% more accuracy (iso-ReLU count at 50K) or 2.2× less latency "
                "(iso-accuracy at 70%) than the current state of the art"),
    Claim("snl_mask_beats_random_mask", "SNL's learned mask beats a random mask at the same finetune (method, recipe "
          "and compute), at every budget", "benchbed (a sanity check of SNL's mask; not a claim of the paper)",
          a=ClaimSide("snl"), b=ClaimSide("random_mask", "snl"), same="finetune compute"),
    Claim("snl_search_worth_its_compute", "SNL's search is worth its compute: at equal total compute it beats a random "
          "mask whose finetune (SNL's) gets the whole budget, at every budget",
          "benchbed (SNL's search against spending its compute on finetuning; not a claim of the paper)",
          a=ClaimSide("snl"), b=ClaimSide("random_mask", "snl"), same="total compute"),
]


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(description="learned per-pixel ReLU masks: L1 on alphas with a growing lambda, "
                                  "top-k to the exact budget, then finetune with KD",
                      paper="Cho et al., ICML 2022, arXiv:2202.02340", options=Options, paper_recipe=PAPER_RECIPE,
                      produces=frozenset({"masked"}), published=PUBLISHED, claims=CLAIMS,
                      setup=SETUP)


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


PAPER_THRESHOLD = 1e-2  # the paper's alive threshold


def next_lambda(lam: float, epoch: float, alive: int, best_alive: int, opts: Options) -> float:
    """The paper's rule: grow lambda ×``lambda_growth`` after a period (from epoch ``lambda_patience_start``
    on) that set no new low of the alive count."""
    if epoch + 1e-9 >= opts.lambda_patience_start and alive >= best_alive:
        return lam * opts.lambda_growth
    return lam


def controller_name(opts: Options) -> str:
    """What drives lambda, as the entry reports it."""
    paper = f"paper ×{opts.lambda_growth:g}"
    return paper if opts.lambda_schedule == "paper" else f"{paper} + forecast catch-up"


def catch_up_wait_periods(opts: Options, alpha_lr: float, threshold: float, steps_per_period: int) -> int:
    """The catch-up's wait in lambda periods: ``catch_up_wait``, or the periods an alpha needs to fall
    from 1 to ``threshold`` moving about ``alpha_lr`` an Adam step (at least one)."""
    if opts.catch_up_wait is not None:
        return opts.catch_up_wait
    return max(1, math.ceil((1 - threshold) / alpha_lr / steps_per_period - 1e-9))


class LambdaController:
    """SNL's lambda over the search: the paper's rule, and with ``paper_with_catch_up`` the forecast
    catch-up (see the module docstring). ``update(alive)`` is called at the end of every lambda period
    with the alive count then; it sets ``lam`` for the next period and returns the period's trace entry."""

    def __init__(self, opts: Options, budget: int, start_alive: int, planned_periods: float, wait_periods: int):
        self.opts, self.budget, self.planned_periods, self.wait = opts, budget, planned_periods, wait_periods
        self.lam = opts.lambda_init
        self.best = start_alive
        self.counts = [start_alive]          # the alive count at the start and after every period
        self.catch_up_at: list[dict] = []    # the periods in which the catch-up engaged

    @property
    def periods(self) -> int:
        """Periods ended so far."""
        return len(self.counts) - 1

    def forecast(self) -> float | None:
        """The alive count at the end of the planned search if its decline over the last ``forecast_window``
        periods goes on: infinite when the count is not falling (it never gets there); None (no forecast)
        before ``forecast_window`` periods have been counted."""
        window = self.opts.forecast_window
        if self.periods < window:
            return None
        now, then = self.counts[-1], self.counts[-1 - window]
        if now >= then:
            return math.inf
        left = max(0.0, self.planned_periods - self.periods)
        return now * (now / then) ** (left / window)

    def update(self, alive: int) -> dict:
        opts, index = self.opts, self.periods
        epoch = index * opts.lambda_period
        self.counts.append(alive)
        entry = {"period": index, "epoch": round(epoch, 4), "alive": alive, "lambda": self.lam, "rule": None}
        before = self.lam
        if opts.lambda_schedule == "paper_with_catch_up" and alive > self.budget:
            forecast = self.forecast()
            if forecast is not None:
                entry["forecast_alive"] = None if math.isinf(forecast) else round(forecast, 1)
            # periods since the start (the end of period -1) or since the last catch-up
            waited = index - (self.catch_up_at[-1]["period"] if self.catch_up_at else -1) >= self.wait
            if (forecast is not None and forecast > self.budget and waited
                    and epoch + 1e-9 >= opts.lambda_patience_start):
                self.lam = before * opts.lambda_catch_up
                entry["rule"] = "catch-up"
                self.catch_up_at.append({"period": index, "epoch": round(epoch, 4), "alive": alive,
                                         "forecast_alive": entry["forecast_alive"]})
        if entry["rule"] is None:
            self.lam = next_lambda(before, epoch, alive, self.best, opts)
            if self.lam != before:
                entry["rule"] = "paper"
        entry["grew"] = self.lam != before
        self.best = min(self.best, alive)
        return entry


def alpha_sizes(alphas: dict[str, torch.Tensor], shapes: dict[str, tuple[int, int, int]]) -> dict[str, int]:
    """Pixels an alpha stands for: 1 per pixel, a whole H×W map per channel."""
    return {n: shapes[n][1] * shapes[n][2] if alphas[n].shape[1:] == (1, 1) else 1 for n in alphas}


@hookimpl
def build_mask(ctx: EntryContext, model) -> MaskResult:
    opts: Options = ctx.options
    sites = counted_sites(model)
    alpha_lr = opts.alpha_lr or opts.search.lr
    threshold = max(opts.alive_threshold, opts.flicker_margin * alpha_lr)
    kernels = {n: AlphaKernel(s.shape, opts.granularity, threshold) for n, s in sites.items()}
    for name, site in sites.items():
        site.set_kernel(kernels[name])
    alphas = [k.alpha for k in kernels.values()]
    alpha_ids = {id(a) for a in alphas}
    weights = [p for p in model.parameters() if id(p) not in alpha_ids]
    params = [{"params": weights}, {"params": alphas, "lr": alpha_lr, "weight_decay": 0.0}]
    alive = lambda: sum(int((kernels[n].alpha > threshold).expand(s.shape).sum())  # noqa: E731
                        for n, s in sites.items())

    start = alive()
    search_budget = ctx.search_epochs(opts.search_share)
    seconds_cap = opts.search_share * ctx.clock.remaining_seconds()
    start_seconds = ctx.clock.seconds_used
    batch = min(opts.search.batch_size, len(ctx.data.train_y))
    steps_per_epoch = max(1, len(ctx.data.train_y) // batch)
    steps_per_period = max(1, round(opts.lambda_period * steps_per_epoch))
    # epochs the search can run: each image costs a training pass and the teacher's forward for the KD
    planned = planned_steps(ctx, opts.search.epochs, batch, 1 + FORWARD_SHARE, budget_epochs=search_budget) / steps_per_epoch
    wait = catch_up_wait_periods(opts, alpha_lr, threshold, steps_per_period)
    control = LambdaController(opts, ctx.budget, start, planned / opts.lambda_period, wait)
    trace: list[dict] = []

    def after_period(index: int, val_acc: float | None) -> bool:
        count, step = alive(), (index + 1) * steps_per_period
        trace.append({**control.update(count), "step": step, "val_accuracy": val_acc})
        if trace[-1]["rule"] == "catch-up":
            control.catch_up_at[-1]["step"] = step
        return count <= ctx.budget or ctx.clock.seconds_used - start_seconds >= seconds_cap

    def within_budget() -> bool:
        return alive() <= ctx.budget

    penalty = lambda: control.lam * sum(a.abs().sum() for a in alphas)  # noqa: E731
    result = fit(model, ctx, opts.search, budget_epochs=search_budget, params=params, extra_loss=penalty,
                 loss_fn=distillation(ctx.teacher, opts.kd_temperature, opts.kd_weight), cost_per_image=1 + FORWARD_SHARE,
                 select_on_val=False, validate=opts.search_validation, on_epoch_end=after_period,
                 period=opts.lambda_period, stop_when=within_budget, stop_every=opts.stop_check_steps,
                 label=f"{ctx.method} mask search")
    final_alive = alive()
    reached = final_alive <= ctx.budget
    alphas = {n: k.alpha for n, k in kernels.items()}
    alive_at_stop = {n: (a.detach() > threshold).float().cpu() for n, a in alphas.items()}
    # the budget's largest alphas: ties (alphas never moved) go to earlier sites and pixels
    masks = top_k(alphas, ctx.budget, alpha_sizes(alphas, {n: s.shape for n, s in sites.items()}))
    for name, site in sites.items():
        site.set_mask(masks[name])
    kept = sum(s.relus for s in sites.values())
    chosen = sum(int(site.kernel.mask.cpu().mul(alive_at_stop[n].expand_as(site.kernel.mask)).expand(site.shape).sum())
                 for n, site in sites.items())
    # the share of the kept ReLUs top-k filled in beyond those alive at the stop (0 at or above the budget)
    top_k_share = min(1.0, max(0.0, (ctx.budget - final_alive) / ctx.budget))
    facts = {"top_k_share": round(top_k_share, 6), "reached_budget_by_search": reached,
             "catch_up_engaged": len(control.catch_up_at), "lambda_controller": controller_name(opts)}
    for fact, value in facts.items():
        ctx.report_setup(fact, value)
    info = {"search_epochs": round(result.epochs, 4), "planned_search_epochs": round(planned, 4),
            "search_seconds": round(ctx.clock.seconds_used - start_seconds, 3),
            "alive_at_start": start, "alive_at_stop": final_alive, **facts, "catch_up_at": control.catch_up_at,
            "lambda_schedule": opts.lambda_schedule, "final_lambda": control.lam,
            "catch_up_wait_periods": wait if opts.lambda_schedule != "paper" else None,
            "alive_above": threshold,
            "binarized_to": kept, "kept_chosen_by_search": chosen, "kept_filled_by_top_k": kept - chosen,
            "live_dropped_by_top_k": max(0, final_alive - chosen), "trace": trace}
    ctx.notes["snl"] = (f"{chosen:,} of the {kept:,} kept ReLUs were alive when the search stopped; top-k filled in "
                        f"{kept - chosen:,} ({top_k_share:.1%})"
                        + (f" and dropped {final_alive - chosen:,} live ones" if final_alive > chosen else "")
                        + f"; lambda: {controller_name(opts)}"
                        + (f", the catch-up ×{opts.lambda_catch_up:g} engaged {len(control.catch_up_at)}× (at epochs "
                           + ", ".join(f"{c['epoch']:g}" for c in control.catch_up_at) + ")" if control.catch_up_at
                           else ""))
    if threshold != PAPER_THRESHOLD:
        ctx.notes["snl_alive_threshold"] = (f"the search counted alphas above {threshold:g} as alive, not the paper's "
                                            f"{PAPER_THRESHOLD:g}")
    if not reached:
        ctx.record_cut("mask_search", f"stopped by its compute share after {result.epochs:.3g} epochs at "
                                      f"{final_alive:,} live ReLUs (budget {ctx.budget:,}); mask = top-k alphas")
    return MaskResult(model, info)


@hookimpl
def finetune(ctx: EntryContext, model) -> FinetuneResult:
    return FinetuneResult(model, distilled_finetune(ctx, model, ctx.options.finetune, ctx.options))
