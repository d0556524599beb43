"""The core training loop every method and the teacher use: one visible loop over a ``Session``.

Runs on whatever device the context holds: data already resident there, channels_last, bf16
autocast where the suite's precision resolves to it (CUDA; with ``precision: native`` also CPUs with
native bf16), no host synchronisation inside an epoch. Model selection reads the
validation split only."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from benchbed.config import TrainRecipe
from benchbed.data.bundle import eval_batches
from benchbed.files import atomic_write
from benchbed.model.passes import eval_mode
from benchbed.train.devices import autocast
from benchbed.train.losses import LossFn, cross_entropy
from benchbed.train.meter import FORWARD_SHARE
from benchbed.train.session import Session


def make_optimizer(params: Iterable[nn.Parameter] | Iterable[dict], recipe: TrainRecipe) -> torch.optim.Optimizer:
    """``params``: parameters, or parameter groups (dicts) with their own lr / weight decay."""
    params = list(params)
    if not (params and isinstance(params[0], dict)):
        params = [p for p in params if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0,
                           weight_decay=recipe.weight_decay)


def lr_factor(recipe: TrainRecipe, step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Multiplier of a parameter group's base lr at ``step`` of ``total_steps``: the recipe's schedule over
    the whole stage (step milestones are fractions of it), held at or above ``recipe.min_lr``, times a
    linear warm-up from ``recipe.warmup_start`` over the first ``warmup_steps`` (as mmcv's warm-up
    multiplies the regular lr)."""
    progress = step / max(1, total_steps)
    factor = 1.0
    if recipe.schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    elif recipe.schedule == "step":
        factor = recipe.gamma ** sum(progress >= m for m in recipe.milestones)
    factor = max(factor, recipe.min_lr / base_lr)
    if step < warmup_steps:
        factor *= recipe.warmup_start + (1 - recipe.warmup_start) * step / warmup_steps
    return factor


def warmup_steps(recipe: TrainRecipe, asked_epochs: float, total_steps: int) -> int:
    """The warm-up planned over the steps the budget pays for: the recipe's share of its own epochs."""
    return round(total_steps * min(1.0, recipe.warmup_epochs / asked_epochs)) if recipe.warmup_epochs else 0


@torch.inference_mode()  # no autograd bookkeeping at all (no version counters, no views tracked)
def accuracy(model: nn.Module, x_u8: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    correct = torch.zeros((), dtype=torch.long, device=y.device)
    with eval_mode(model):
        for x, yb in eval_batches(x_u8, y, batch_size):
            with autocast(y.device):
                correct += (model(x).argmax(1) == yb).sum()
    return correct.item() / max(1, len(y))


@dataclass
class FitResult:
    epochs: float
    best_epoch: int
    best_val_accuracy: float
    stopped_by_budget: bool
    history: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {"epochs": round(self.epochs, 4), "best_epoch": self.best_epoch,
                "best_val_accuracy": self.best_val_accuracy, "stopped_by_budget": self.stopped_by_budget}


def planned_steps(ctx: Session, epochs: float, batch_size: int, cost_per_image: float = 1.0,
                  validation: float = 0.0, steps_per_period: int = 1, budget_epochs: float = float("inf")) -> int:
    """Optimiser steps a stage will get: ``epochs`` of batches, or fewer when the compute budget (and the
    stage's own ``budget_epochs``) cannot pay for them at ``cost_per_image`` training-image
    equivalents per image drawn, with a ``validation`` pass (in training images) after every
    ``steps_per_period`` steps and after the last."""
    n_train = len(ctx.data.train_y)
    steps = math.ceil(epochs * max(1, n_train // batch_size))
    available = min(ctx.clock.remaining_epochs(), budget_epochs) * n_train
    return max(1, min(steps, affordable_steps(available, batch_size, cost_per_image, validation, steps_per_period)))


def affordable_steps(available: float, batch_size: int, cost_per_image: float, validation: float,
                     steps_per_period: int) -> int | float:
    """The most steps ``available`` training images pay for, a validation included after every period
    and after the last (infinite without a limit)."""
    if not math.isfinite(available):
        return float("inf")

    def cost(k: int) -> float:
        return k * batch_size * cost_per_image + math.ceil(k / steps_per_period) * validation

    steps = math.floor(available / (batch_size * cost_per_image + validation / steps_per_period) + 1e-9)
    while steps > 1 and cost(steps) > available + 1e-6:
        steps -= 1
    return steps


def fit(model: nn.Module, ctx: Session, recipe: TrainRecipe, *, epochs: float | None = None,
        loss_fn: LossFn | None = None, params: Iterable[nn.Parameter] | Iterable[dict] | None = None,
        extra_loss: Callable[[], torch.Tensor] | None = None, select_on_val: bool = True, validate: bool = True,
        on_epoch_end: Callable[[int, float | None], bool | None] | None = None, label: str = "train",
        cost_per_image: float = 1.0, step_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        part: str | None = None, resume: Path | None = None, period: float = 1.0,
        stop_when: Callable[[], bool] | None = None, stop_every: int = 10,
        budget_epochs: float | None = None) -> FitResult:
    """Train ``model`` for ``epochs`` (default: the recipe's), never past the entry's compute budget nor
    past ``budget_epochs`` of it for this stage (a mask search's share, ``ctx.search_epochs``).

    ``loss_fn(logits, y, x)`` defaults to cross-entropy; ``extra_loss()`` is added every step
    (e.g. a sparsity penalty). ``step_loss(x, y)``, when given, replaces the forward pass and
    ``loss_fn`` (a method that splits the batch into views). The schedule, warm-up included, is
    planned over the steps the budget pays for: first at ``cost_per_image`` training images per image
    drawn, then, after the first step, at what that step really cost as the core's meter counted it
    (teacher passes, attack steps and extra views included) — so a cosine or step schedule ends where
    it is meant to, however much a step costs. After every ``period`` epochs of steps (1: every epoch;
    less for a method that must act several times within an epoch, e.g. SNL's lambda over a short
    search) the validation accuracy is measured (unless ``validate`` is off; the passes are metered
    and planned for like the steps); with ``select_on_val`` the best period's weights are restored at
    the end. ``on_epoch_end(index, val_accuracy)``, called after each period (``index`` counts
    periods), may return True to stop early; so may ``stop_when()``, asked every ``stop_every``
    steps. Epochs are whole shuffled passes whatever the period.
    With ``part``, a stage that runs fewer epochs than asked is recorded as a cut of that part.
    With ``resume``, the loop's whole state is saved there after every epoch and picked up from it on
    the next call, so an interrupted stage (the teacher's hours on CIFAR) continues where it stopped.
    """
    if resume is not None and period != 1:
        raise ValueError("fit resumes on whole epochs: period must be 1 with resume")
    if select_on_val and not validate:
        raise ValueError("select_on_val needs validate")
    asked = recipe.epochs if epochs is None else epochs
    n_train = len(ctx.data.train_y)
    batch_size = min(recipe.batch_size, n_train)
    steps_per_epoch = max(1, n_train // batch_size)
    steps_per_period = max(1, round(period * steps_per_epoch))
    asked_steps = math.ceil(asked * steps_per_epoch)
    validation = len(ctx.data.val_y) * FORWARD_SHARE if validate else 0.0
    share = float("inf") if budget_epochs is None else budget_epochs
    available = min(ctx.clock.remaining_epochs(), share) * n_train  # training images this stage may use
    plan = {"total": planned_steps(ctx, asked, batch_size, cost_per_image, validation, steps_per_period, share)}
    plan["warmup"] = warmup_steps(recipe, asked, plan["total"])
    loss_fn = loss_fn or cross_entropy(recipe.label_smoothing)
    optimizer = make_optimizer(model.parameters() if params is None else params, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [lambda s, base=g["lr"]: lr_factor(recipe, s, plan["total"], plan["warmup"], base)
                    for g in optimizer.param_groups])
    model.to(memory_format=torch.channels_last)  # as the batches are (``to_float``)
    forward = torch.compile(model) if recipe.compile else model

    best_acc, best_state, best_epoch, history = -1.0, None, -1, []
    step, epoch = 0, 0
    if resume is not None and resume.exists():
        state = torch.load(resume, map_location=ctx.device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ctx.generator.set_state(state["generator"].cpu())
        ctx.clock.usage = state["usage"]
        step, epoch, best_acc, best_epoch, history = (state["step"], state["epoch"], state["best_acc"],
                                                      state["best_epoch"], state["history"])
        best_state = state["best_state"]
        ctx.log(f"{label}: resumed at epoch {epoch} from {resume}")
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(())
    ended = False
    while step < plan["total"] and not ctx.clock.exhausted and not ended:
        model.train()
        taken = 0
        while taken < steps_per_period and step < plan["total"]:
            batch = next(batches, None)
            if batch is None:  # an epoch ended: the next one is a fresh shuffle
                batches = ctx.train_batches(batch_size)
                batch = next(batches, None)
                if batch is None:  # the compute budget cannot pay for another batch
                    break
            x, y = batch
            before = ctx.clock.usage
            if step_loss is not None:
                loss = step_loss(x, y)
            else:
                with ctx.autocast:
                    logits = forward(x)
                loss = loss_fn(logits, y, x)
            if extra_loss is not None:
                loss = loss + extra_loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            taken += 1
            if step == 1 and ctx.clock.usage > before:  # the first step's real cost re-plans the stage
                cost = (ctx.clock.usage - before) / len(y)
                plan["total"] = max(1, min(asked_steps, affordable_steps(available, batch_size, cost, validation,
                                                                         steps_per_period)))
                plan["warmup"] = warmup_steps(recipe, asked, plan["total"])
            if stop_when is not None and step % stop_every == 0 and stop_when():
                ended = True
                break
        if not taken:
            break
        val_acc = accuracy(model, ctx.data.val_x, ctx.data.val_y) if validate else None
        history.append({"epoch": epoch, "val_accuracy": val_acc, "lr": optimizer.param_groups[0]["lr"]})
        ctx.progress(label, step / plan["total"], 1.0)
        if select_on_val and val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch
            best_state = copy.deepcopy(model.state_dict())
        epoch += 1
        if resume is not None:
            atomic_write(resume, lambda f: torch.save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "generator": ctx.generator.get_state(), "usage": ctx.clock.usage, "step": step, "epoch": epoch,
                "best_acc": best_acc, "best_epoch": best_epoch, "history": history, "best_state": best_state}, f))
        if on_epoch_end is not None and on_epoch_end(epoch - 1, val_acc):
            ended = True
    if ended:
        asked = step / steps_per_epoch  # the method ended the stage itself: nothing was cut
    if best_state is not None:
        model.load_state_dict(best_state)
    if not select_on_val and history:
        best_acc, best_epoch = history[-1]["val_accuracy"], history[-1]["epoch"]
    ran = step / steps_per_epoch
    cut = step < math.ceil(asked * steps_per_epoch - 1e-9)  # the budget (planned for or run out) held it short
    if part is not None and cut:
        ctx.record_cut(part, f"{ran:.3g} of {asked:g} epochs")
    return FitResult(ran, best_epoch, best_acc, cut or ctx.clock.exhausted_at is not None, history)
