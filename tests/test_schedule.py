"""Learning-rate schedules are planned over the steps the compute budget will pay for."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from benchbed.config import TrainRecipe
from benchbed.train.loop import fit, planned_steps


def _costly_loss(model, cost: float):
    """A step that, like RLNet's, does ``cost`` training images' worth of work per image drawn: a training
    pass and ``3 (cost - 1)`` extra no-grad forwards, each a third of a training image to the core's meter."""

    def loss(x, y):
        with torch.no_grad():
            for _ in range(round(3 * (cost - 1))):
                model(x)
        return F.cross_entropy(model(x), y)

    return loss


@pytest.mark.parametrize("cost", [1.0, 1 + 7 / 3, 10.0])
def test_cosine_ends_at_its_floor_when_every_step_costs_more(make_ctx, cost):
    ctx, model = make_ctx(None, epochs=4.0)
    recipe = TrainRecipe(epochs=240, lr=0.01, batch_size=64, schedule="cosine")
    result = fit(model, ctx, recipe, step_loss=_costly_loss(model, cost), select_on_val=False, validate=False,
                 part="finetune")
    n = len(ctx.data.train_y)
    steps = math.floor(4.0 * n / (64 * cost))  # what the budget pays for, computed by hand
    assert result.epochs == pytest.approx(steps / (n // 64))
    # LambdaLR's lr after the last step is the factor at ``steps``: cos(pi) -> 0
    assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert ctx.clock.epochs_used == pytest.approx(steps * 64 * cost / n) and ctx.clock.epochs_used <= 4.0 + 1e-9
    assert ctx.cuts["finetune"] == f"{result.epochs:.3g} of 240 epochs" and result.stopped_by_budget


def test_step_schedule_reaches_its_last_milestone(make_ctx):
    ctx, model = make_ctx(None, epochs=3.0)
    recipe = TrainRecipe(epochs=240, lr=0.01, batch_size=64, schedule="step", milestones=[0.625, 0.75, 0.875],
                         gamma=0.1)
    result = fit(model, ctx, recipe, step_loss=_costly_loss(model, 5.0), select_on_val=False, validate=False)
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


def test_the_first_step_replans_the_stage_on_what_it_really_costs(make_ctx):
    """The method declares nothing: the meter's count of the first step (here a training pass and two
    extra forwards, 1 + 2/3 training images per image) plans the rest."""
    ctx, model = make_ctx(None, epochs=2.0)
    recipe = TrainRecipe(epochs=50, lr=0.01, batch_size=64, schedule="cosine")
    result = fit(model, ctx, recipe, step_loss=_costly_loss(model, 1 + 2 / 3), select_on_val=False, validate=False)
    n = len(ctx.data.train_y)
    assert result.epochs == pytest.approx(math.floor(2.0 * n / (64 * (1 + 2 / 3))) / (n // 64))
    assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_warm_up_is_planned_over_the_budget(make_ctx):
    """Knapsack's 5 warm-up epochs of 120 on a finetune the budget cuts to 2: the warm-up keeps its
    1/24 share of the stage, so the lr reaches its peak and then its step schedule (as mmcv's warm-up,
    from warmup_start of the lr, multiplying the regular schedule)."""
    ctx, model = make_ctx(None, epochs=2.0)
    recipe = TrainRecipe(epochs=120, lr=0.01, batch_size=64, schedule="step", milestones=[0.25, 0.5, 0.75],
                         gamma=0.25, warmup_epochs=5, warmup_start=0.01, min_lr=1e-3)
    lrs = []
    fit(model, ctx, recipe, select_on_val=False, validate=False, extra_loss=lambda: lrs.append(None) or 0.0)
    steps = len(lrs)
    from benchbed.train.loop import lr_factor, warmup_steps

    warm = warmup_steps(recipe, 120, steps)
    assert warm == round(steps * 5 / 120) >= 1
    factors = [lr_factor(recipe, s, steps, warm, recipe.lr) for s in range(steps)]
    assert factors[0] == pytest.approx(0.01) and max(factors) == pytest.approx(1.0)
    assert factors.index(1.0) == warm, "the peak comes right after the planned warm-up"
    assert factors[-1] == pytest.approx(max(0.25 ** 3, 1e-3 / 0.01)), "the last milestone, held at min_lr"
