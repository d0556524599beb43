"""The core training loop every method and the teacher use: one visible loop over a ``Session``.

Runs on whatever device the context holds: data already resident there, bf16 autocast and
channels_last on CUDA, no host synchronisation inside an epoch. Model selection reads the
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


def lr_factor(recipe: TrainRecipe, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Multiplier of the base lr at ``step``: linear warm-up, then the recipe's schedule."""
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if recipe.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if recipe.schedule == "step":
        return recipe.gamma ** sum(progress >= m for m in recipe.milestones)
    return 1.0


@torch.no_grad()
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


def planned_steps(ctx: Session, epochs: float, batch_size: int, cost_per_image: float = 1.0) -> int:
    """Optimiser steps a stage will get: ``epochs`` of batches, or fewer when the compute budget cannot
    pay for them at ``cost_per_image`` budget units (training-image equivalents) per image drawn."""
    n_train = len(ctx.data.train_y)
    steps = math.ceil(epochs * max(1, n_train // batch_size))
    affordable = ctx.clock.remaining_epochs() * n_train / (batch_size * cost_per_image)
    return max(1, min(steps, math.floor(affordable + 1e-9)) if math.isfinite(affordable) else steps)


def fit(model: nn.Module, ctx: Session, recipe: TrainRecipe, *, epochs: float | None = None,
        loss_fn: LossFn | None = None, params: Iterable[nn.Parameter] | Iterable[dict] | None = None,
        extra_loss: Callable[[], torch.Tensor] | None = None, select_on_val: bool = True,
        on_epoch_end: Callable[[int, float], bool | None] | None = None, label: str = "train",
        cost_per_image: float = 1.0, step_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        part: str | None = None, resume: Path | None = None, period: float = 1.0) -> FitResult:
    """Train ``model`` for ``epochs`` (default: the recipe's), never past the entry's compute budget.

    ``loss_fn(logits, y, x)`` defaults to cross-entropy; ``extra_loss()`` is added every step
    (e.g. a sparsity penalty). ``step_loss(x, y)``, when given, replaces the forward pass and
    ``loss_fn`` (a method that splits the batch into views). ``cost_per_image``: the budget units
    each image of a batch costs, extra passes and attack steps included (the method charges all
    but the first itself); the schedule is planned over the steps the budget will pay for, so a
    cosine or step schedule ends where it is meant to, however much a step costs. After every
    ``period`` epochs of steps (1: every epoch; less for a method that must act several times within
    an epoch, e.g. SNL's lambda over a short search) the validation accuracy is measured; with
    ``select_on_val`` the best period's weights are restored at the end. ``on_epoch_end(index,
    val_accuracy)``, called after each period (``index`` counts periods), may return True to stop
    early. Epochs are whole shuffled passes whatever the period.
    With ``part``, a stage that runs fewer epochs than asked is recorded as a cut of that part.
    With ``resume``, the loop's whole state is saved there after every epoch and picked up from it on
    the next call, so an interrupted stage (the teacher's hours on CIFAR) continues where it stopped.
    """
    if resume is not None and period != 1:
        raise ValueError("fit resumes on whole epochs: period must be 1 with resume")
    asked = recipe.epochs if epochs is None else epochs
    n_train = len(ctx.data.train_y)
    batch_size = min(recipe.batch_size, n_train)
    steps_per_epoch = max(1, n_train // batch_size)
    steps_per_period = max(1, round(period * steps_per_epoch))
    total_steps = planned_steps(ctx, asked, batch_size, cost_per_image)
    loss_fn = loss_fn or cross_entropy(recipe.label_smoothing)
    optimizer = make_optimizer(model.parameters() if params is None else params, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(recipe, s, total_steps, steps_per_epoch))
    if ctx.device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if recipe.compile else model

    best_acc, best_state, best_epoch, history = -1.0, None, -1, []
    step, epoch = 0, 0
    if resume is not None and resume.exists():
        state = torch.load(resume, map_location=ctx.device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ctx.generator.set_state(state["generator"].cpu())
        ctx.clock.charge(state["images"] - ctx.clock.images)
        step, epoch, best_acc, best_epoch, history = (state["step"], state["epoch"], state["best_acc"],
                                                      state["best_epoch"], state["history"])
        best_state = state["best_state"]
        ctx.log(f"{label}: resumed at epoch {epoch} from {resume}")
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(())
    while step < total_steps and not ctx.clock.exhausted:
        model.train()
        taken = 0
        while taken < steps_per_period and step < total_steps:
            batch = next(batches, None)
            if batch is None:  # an epoch ended: the next one is a fresh shuffle
                batches = ctx.train_batches(batch_size)
                batch = next(batches, None)
                if batch is None:  # the compute budget cannot pay for another batch
                    break
            x, y = batch
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
        if not taken:
            break
        val_acc = accuracy(model, ctx.data.val_x, ctx.data.val_y)
        history.append({"epoch": epoch, "val_accuracy": val_acc, "lr": optimizer.param_groups[0]["lr"]})
        ctx.progress(label, step / total_steps, 1.0)
        if select_on_val and val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch
            best_state = copy.deepcopy(model.state_dict())
        epoch += 1
        if resume is not None:
            atomic_write(resume, lambda f: torch.save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "generator": ctx.generator.get_state(), "images": ctx.clock.images, "step": step, "epoch": epoch,
                "best_acc": best_acc, "best_epoch": best_epoch, "history": history, "best_state": best_state}, f))
        if on_epoch_end is not None and on_epoch_end(epoch - 1, val_acc):
            asked = step / steps_per_epoch  # the method ended the stage itself: nothing was cut
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    if not select_on_val and history:
        best_acc, best_epoch = history[-1]["val_accuracy"], history[-1]["epoch"]
    ran = step / steps_per_epoch
    cut = step < math.ceil(asked * steps_per_epoch - 1e-9)  # the budget (planned for or run out) held it short
    if part is not None and cut:
        ctx.record_cut(part, f"{ran:.3g} of {asked:g} epochs")
    return FitResult(ran, best_epoch, best_acc, cut or ctx.clock.exhausted_at is not None, history)
