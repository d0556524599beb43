"""SNL: alpha semantics, lambda schedule, exact budgets, frozen masks, validation-only selection."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchbed.api import top_k
from benchbed.config import TrainRecipe
from benchbed.model.sites import MaskedKernel, counted_sites, drelu_count, relu_count
from benchbed.run.suite import validate_options
from benchbed.train import loop as training
from benchbed_plugins import snl
from conftest import build_model


def binarize(alphas, shapes, budget):
    """SNL's masks: the budget's largest alphas, a channel alpha standing for its whole map."""
    return top_k(alphas, budget, snl.alpha_sizes(alphas, shapes))


def test_alpha_site_output_is_the_convex_mix():
    torch.manual_seed(0)
    kernel = snl.AlphaKernel((3, 4, 4), "pixel", 1e-2)
    with torch.no_grad():
        kernel.alpha.copy_(torch.randn(3, 4, 4) * 2)  # unclamped: negative and above 1 too
    x = torch.randn(5, 3, 4, 4)
    a, xn = kernel.alpha.detach().numpy(), x.numpy()
    expected = a * np.maximum(xn, 0) + (1 - a) * xn
    np.testing.assert_allclose(kernel(x).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert kernel.relus((3, 4, 4)) == int((a > 1e-2).sum())


def test_alpha_gradient_is_relu_minus_identity():
    kernel = snl.AlphaKernel((2, 1, 3), "channel", 1e-2)
    x = torch.randn(4, 2, 1, 3)
    kernel(x).sum().backward()
    expected = (torch.relu(x) - x).sum(dim=(0, 2, 3)).view(2, 1, 1)
    torch.testing.assert_close(kernel.alpha.grad, expected)


def test_lambda_grows_only_without_a_new_low_from_the_patience_epoch_on():
    opts = snl.Options(lambda_init=1.0, lambda_growth=1.1, lambda_patience_start=2)
    lam, best, seen = 1.0, 100, []
    for epoch, alive in enumerate([100, 100, 90, 95, 90, 80, 80]):
        lam = snl.next_lambda(lam, epoch, alive, best, opts)
        best = min(best, alive)
        seen.append(round(lam, 6))
    # epochs 0,1: too early; 2: new low (90); 3: 95 no low -> grow; 4: 90 ties the low -> grow; 5: new low; 6: grow
    assert seen == [1.0, 1.0, 1.0, 1.1, 1.21, 1.21, 1.331]


@pytest.mark.parametrize("stem_relu,budget", [(True, 15_000), (False, 15_000), (True, 100_000), (False, 400_000)])
def test_binarize_hits_the_budget_exactly_on_resnet18(stem_relu, budget):
    model = build_model("resnet18_cifar", num_classes=100, input_shape=(3, 32, 32), stem_relu=stem_relu)
    sites = counted_sites(model)
    gen = torch.Generator().manual_seed(0)
    alphas = {n: torch.rand(s.shape, generator=gen) for n, s in sites.items()}
    masks = binarize(alphas, {n: s.shape for n, s in sites.items()}, budget)
    for n, s in sites.items():
        s.set_mask(masks[n])
    assert relu_count(model) == drelu_count(model) == budget
    # the kept pixels are exactly the largest alphas
    kept = torch.cat([alphas[n][masks[n].bool()] for n in sites])
    dropped = torch.cat([alphas[n][~masks[n].bool()] for n in sites])
    assert kept.min() >= dropped.max()


def test_binarize_breaks_ties_deterministically_and_exactly():
    model = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    sites = counted_sites(model)
    ones = {n: torch.ones(s.shape) for n, s in sites.items()}  # a search that never moved
    masks = binarize(ones, {n: s.shape for n, s in sites.items()}, 1000)
    assert sum(int(m.sum()) for m in masks.values()) == 1000
    assert binarize(ones, {n: s.shape for n, s in sites.items()}, 1000).keys() == masks.keys()


def test_channel_granularity_lands_on_or_just_under_the_budget():
    model = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    sites = counted_sites(model)
    alphas = {n: torch.rand(s.shape[0], 1, 1, generator=torch.Generator().manual_seed(1)) for n, s in sites.items()}
    masks = binarize(alphas, {n: s.shape for n, s in sites.items()}, 1000)
    for n, s in sites.items():
        s.set_mask(masks[n])
    assert 1000 - 4 < drelu_count(model) <= 1000  # the smallest channel here has 2x2 = 4 pixels


def _opts(**changes):
    base = {"lambda_init": 0.03, "lambda_growth": 1.5, "lambda_patience_start": 1, "alpha_lr": 0.01,
            "search": {"batch_size": 64}, "finetune": {"lr": 0.02, "batch_size": 64}}
    return validate_options(snl.Options, {**base, **changes})


def test_search_out_of_compute_still_returns_the_exact_budget_and_says_so(make_ctx):
    ctx, student = make_ctx(_opts(lambda_init=1e-6), budget=300, epochs=1.0)
    result = snl.build_mask(ctx=ctx, model=student)
    assert drelu_count(result.model) == 300
    assert all(isinstance(s.kernel, MaskedKernel) for s in counted_sites(result.model).values())
    assert result.info["budget_reached_by_search"] is False
    one_batch = 64 / len(ctx.data.train_y)
    assert result.info["search_epochs"] <= 0.5 + one_batch, "the search keeps to its share of the compute"
    assert "stopped by its compute share" in ctx.cuts["mask_search"]


def test_mask_stays_frozen_and_selection_reads_validation_only(make_ctx, monkeypatch):
    ctx, student = make_ctx(_opts(), budget=300, epochs=4.0)
    masked = snl.build_mask(ctx=ctx, model=student).model
    before = {n: s.kernel.mask.clone() for n, s in counted_sites(masked).items()}
    assert not any("mask" in name for name, _ in masked.named_parameters()), "a mask is a buffer, never trained"

    seen, val_scores = [], []
    real_accuracy = training.accuracy

    def spy(model, x_u8, y, batch_size=512):
        seen.append("test" if x_u8 is ctx.data.test_x else "val" if x_u8 is ctx.data.val_x else "other")
        val_scores.append(real_accuracy(model, x_u8, y, batch_size))
        return val_scores[-1]

    monkeypatch.setattr(training, "accuracy", spy)
    result = snl.finetune(ctx=ctx, model=masked)
    assert set(seen) == {"val"}, "finetune must never look at test"
    for n, s in counted_sites(result.model).items():
        assert torch.equal(s.kernel.mask, before[n])
    assert drelu_count(result.model) == 300
    assert result.info["best_val_accuracy"] == max(val_scores)
    assert real_accuracy(result.model, ctx.data.val_x, ctx.data.val_y) == max(val_scores), \
        "the returned weights are those of the best validation epoch"


def test_finetune_keeps_the_bypass_an_identity(make_ctx):
    ctx, student = make_ctx(_opts(), budget=300, epochs=3.0)
    model = snl.finetune(ctx=ctx, model=snl.build_mask(ctx=ctx, model=student).model).model
    for site in counted_sites(model).values():
        torch.testing.assert_close(site.kernel.coeffs, torch.tensor([[0.0, 1.0, 0.0]]).expand_as(site.kernel.coeffs))
        assert site.poly_pixels == 0


def test_on_track_lambda_grows_by_the_catch_up_factor_after_an_epoch_behind_pace():
    opts = snl.Options(lambda_init=1.0, lambda_growth=1.1, lambda_patience_start=0, lambda_catch_up=2.0)
    # behind pace: ×2 whatever the low; on pace: the paper's rule (grow only without a new low)
    assert snl.next_lambda(1.0, 3, alive=900, best_alive=800, opts=opts, behind=True) == 2.0
    assert snl.next_lambda(1.0, 3, alive=900, best_alive=1000, opts=opts, behind=False) == 1.0
    assert snl.next_lambda(1.0, 3, alive=900, best_alive=800, opts=opts, behind=False) == pytest.approx(1.1)


def test_needed_ratio_reaches_the_budget_in_the_epochs_left():
    # from 4608 to 256 in 4 epochs: each epoch must keep (256/4608)^(1/4) of the count
    ratio = snl.needed_ratio(4608, 256, 4.0)
    assert 4608 * ratio ** 4 == pytest.approx(256)
    assert snl.needed_ratio(1000, 250, 0.3) == pytest.approx(0.25), "with under an epoch left: all of it now"


def test_the_search_reaches_the_budget_within_its_share_of_a_smoke_sized_budget(make_ctx):
    # digits, 20 epochs of compute as in the smoke suite: the search (half of it) must reach the budget
    ctx, student = make_ctx(_opts(lambda_init=3e-3, alpha_lr=0.01, lambda_growth=1.5, lambda_patience_start=1),
                            budget=256, epochs=20.0)
    info = snl.build_mask(ctx=ctx, model=student).info
    assert info["budget_reached_by_search"] is True, info["trace"]
    assert info["alive_at_stop"] <= 256 and info["search_epochs"] <= 10 + 1e-9
    assert "mask_search" not in ctx.cuts
    # without overshooting: the search itself chose most of the kept pixels; top-k filled in the rest
    assert info["kept_chosen_by_search"] + info["kept_filled_by_top_k"] == 256
    assert info["kept_chosen_by_search"] >= 0.75 * 256, info["trace"]
    assert "top-k filled in" in ctx.notes["snl"]


def test_a_one_epoch_search_updates_lambda_several_times_an_epoch_and_waits_for_the_alphas(make_ctx):
    """Two epochs of compute leave the search one: with the paper's one lambda update an epoch the
    on-track rule acts at most once; with ten an epoch it grows lambda after periods behind pace, but
    never again before the alphas had the steps they need to answer (1 − threshold) / alpha_lr."""
    infos = {}
    for period in (1.0, 0.1):
        ctx, student = make_ctx(_opts(lambda_init=1e-4, alpha_lr=0.1, lambda_patience_start=0, lambda_period=period),
                                budget=256, epochs=2.0)
        infos[period] = snl.build_mask(ctx=ctx, model=student).info
    assert len(infos[1.0]["trace"]) <= 1
    trace = infos[0.1]["trace"]
    assert len(trace) > 3 and [t["epoch"] for t in trace] == pytest.approx([i / 10 for i in range(len(trace))])
    lag = infos[0.1]["response_steps"]
    # an alpha at zero flickers by about its lr: the search counts alphas above 2 × 0.1 as alive
    assert infos[0.1]["alive_above"] == pytest.approx(0.2) and lag == math.ceil((1 - 0.2) / 0.1)
    grown = [t["step"] for t in trace if t["grew"]]
    assert grown and all(later - earlier >= lag for earlier, later in zip(grown, grown[1:]))
    for before, after in zip(trace, trace[1:]):
        factor = (2.0 if before.get("behind_pace") else 1.0) if before["grew"] else 1.0
        assert after["lambda"] == pytest.approx(before["lambda"] * factor)
    assert infos[0.1]["final_lambda"] > infos[1.0]["final_lambda"]


def test_fit_periods_split_whole_shuffled_epochs(make_ctx):
    """Validation and the callback come every period; the batches are the same whole epochs."""
    weights, calls = {}, {}
    for period in (1.0, 0.25):
        ctx, student = make_ctx(None, epochs=5.0)  # the validation passes are charged too
        seen = []
        training.fit(student, ctx, TrainRecipe(epochs=2, lr=0.01, batch_size=64), select_on_val=False,
                     period=period, on_epoch_end=lambda i, acc: seen.append(i))
        weights[period], calls[period] = [p.detach().clone() for p in student.parameters()], seen
    assert calls[1.0] == [0, 1] and calls[0.25] == list(range(8))
    assert all(torch.equal(a, b) for a, b in zip(weights[1.0], weights[0.25]))


def test_paper_recipe_runs_the_paper_schedule_alone():
    info = snl.method_info()
    recipe = info.paper_recipe
    assert recipe["lambda_schedule"] == "paper" and recipe["lambda_init"] == 1e-5 and recipe["lambda_growth"] == 1.1
    assert recipe["finetune"]["epochs"] == 100 and recipe["finetune"]["schedule"] == "cosine"
    opts = validate_options(snl.Options, recipe)
    assert opts.search.optimizer == "adam" and opts.search.lr == 1e-3 and opts.search.schedule == "constant"
