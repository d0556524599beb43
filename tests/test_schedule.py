"""Learning-rate schedules are planned over the steps the compute budget will pay for."""
from __future__ import annotations

import math

import pytest
import torch.nn.functional as F

from benchbed.config import TrainRecipe
from benchbed.train.loop import fit, planned_steps


def _charging_loss(ctx, model, cost: float):
    """A step that, like RLNet's, does ``cost`` training images' worth of work per image drawn."""

    def loss(x, y):
        ctx.clock.charge(len(y) * (cost - 1))
        return F.cross_entropy(model(x), y)

    return loss


@pytest.mark.parametrize("cost", [1.0, 1 + 7 / 3, 10.0])
def test_cosine_ends_at_its_floor_when_every_step_costs_more(make_ctx, cost):
    ctx, model = make_ctx(None, epochs=4.0)
    recipe = TrainRecipe(epochs=240, lr=0.01, batch_size=64, schedule="cosine")
    result = fit(model, ctx, recipe, step_loss=_charging_loss(ctx, model, cost), cost_per_image=cost,
                 select_on_val=False, part="finetune")
    n = len(ctx.data.train_y)
    steps = math.floor(4.0 * n / (64 * cost))  # what the budget pays for, computed by hand
    assert result.epochs == pytest.approx(steps / (n // 64))
    # LambdaLR's lr after the last step is the factor at ``steps``: cos(pi) -> 0
    assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert ctx.clock.epochs_used <= 4.0 + 1e-9
    assert ctx.cuts["finetune"] == f"{result.epochs:.3g} of 240 epochs" and result.stopped_by_budget


def test_step_schedule_reaches_its_last_milestone(make_ctx):
    ctx, model = make_ctx(None, epochs=3.0)
    recipe = TrainRecipe(epochs=240, lr=0.01, batch_size=64, schedule="step", milestones=[0.625, 0.75, 0.875],
                         gamma=0.1)
    result = fit(model, ctx, recipe, step_loss=_charging_loss(ctx, model, 5.0), cost_per_image=5.0,
                 select_on_val=False)
    assert result.history[-1]["lr"] == pytest.approx(0.01 * 0.1 ** 3)


def test_planned_steps_without_a_limit_is_the_recipe(make_ctx):
    ctx, _ = make_ctx(None, epochs=None)
    n = len(ctx.data.train_y)
    assert planned_steps(ctx, 2.5, 64, cost_per_image=10.0) == math.ceil(2.5 * (n // 64))


def test_a_stage_that_gets_all_it_asks_records_no_cut(make_ctx):
    ctx, model = make_ctx(None, epochs=5.0)
    fit(model, ctx, TrainRecipe(epochs=1, lr=0.01, batch_size=64), part="finetune")
    assert ctx.cuts == {}


def test_a_stage_the_method_ends_itself_is_no_cut(make_ctx):
    ctx, model = make_ctx(None, epochs=5.0)
    result = fit(model, ctx, TrainRecipe(epochs=4, lr=0.01, batch_size=64), part="search",
                 on_epoch_end=lambda epoch, acc: epoch == 0)
    assert result.epochs == 1 and not result.stopped_by_budget and ctx.cuts == {}
