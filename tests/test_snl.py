"""SNL: alpha semantics, the paper's lambda rule and the forecast catch-up, exact budgets, frozen masks,
validation-only selection, the facts an entry reports."""
from __future__ import annotations

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


def _drive(counts, budget=10, planned=10.0, wait=2, start=1000, **changes):
    """The lambda controller driven by a scripted alive count, one value a period: lambda after each."""
    opts = snl.Options(**{"lambda_init": 1.0, "lambda_growth": 1.1, "lambda_patience_start": 0, "lambda_catch_up": 2.0,
                          "forecast_window": 2, **changes})
    control = snl.LambdaController(opts, budget, start, planned, wait)
    trace = [control.update(alive) for alive in counts]
    return [round(lam, 6) for lam in _lams(trace, opts)], control, trace


def _lams(trace, opts):
    """Lambda after each period, from the trace's rule labels (each period's entry holds lambda before it)."""
    factor = {None: 1.0, "paper": opts.lambda_growth, "catch-up": opts.lambda_catch_up}
    return [t["lambda"] * factor[t["rule"]] for t in trace]


def test_the_default_controller_is_the_papers_rule_while_the_forecast_reaches_the_budget():
    assert snl.Options().lambda_schedule == "paper_with_catch_up" and snl.Options().alive_threshold == 1e-2
    # from 1000 the count falls ×0.6 a period: extrapolated, it is under the budget of 10 well before the
    # 20 planned periods end, so only the paper's rule acts. Period 0: new low (600); 1: 600 ties the low,
    # the paper grows ×1.1 (forecast 600·0.6^(18/2) ≈ 6.0); 2, 3: new lows, lambda holds.
    lams, control, trace = _drive([600, 600, 360, 216], planned=20.0, wait=1)
    assert lams == [1.0, 1.1, 1.1, 1.1] and control.lam == pytest.approx(1.1)
    assert control.catch_up_at == [] and [t["rule"] for t in trace] == [None, "paper", None, None]
    assert trace[1]["forecast_alive"] == pytest.approx(600 * 0.6 ** 9, abs=0.1)
    paper, _, _ = _drive([600, 600, 360, 216], planned=20.0, wait=1, lambda_schedule="paper")
    assert paper == lams


def test_the_catch_up_engages_only_where_the_forecast_misses_the_budget_and_waits_in_periods():
    # a count falling ×0.9 a period cannot get from 1000 to 10 in 10 periods. Wait 2 periods (from the
    # start and after each catch-up), window 2:
    # 0: 900, one period counted, no forecast; new low -> 1
    # 1: 810, forecast 810·0.81^(8/2) ≈ 349 > 10, waited 2 periods since the start -> catch-up ×2 = 2
    # 2: 810, waiting (1 period since); no new low -> the paper's ×1.1 = 2.2 (the wait never holds it back)
    # 3: 729, waited 2; forecast 729·0.9^(6/2) ≈ 531 -> catch-up = 4.4
    # 4: 656, waiting; new low -> 4.4
    # 5: 590, waited 2; forecast ≈ 386 -> catch-up = 8.8
    lams, control, trace = _drive([900, 810, 810, 729, 656, 590])
    assert lams == [1.0, 2.0, 2.2, 4.4, 4.4, 8.8]
    assert [c["period"] for c in control.catch_up_at] == [1, 3, 5]
    assert control.catch_up_at[0]["forecast_alive"] == pytest.approx(810 * 0.81 ** 4, abs=0.1)
    assert [t["rule"] for t in trace] == [None, "catch-up", "paper", "catch-up", None, "catch-up"]
    # the paper's rule alone on the same counts
    paper, control, _ = _drive([900, 810, 810, 729, 656, 590], lambda_schedule="paper")
    assert paper == [1.0, 1.0, 1.1, 1.1, 1.1, 1.1] and control.catch_up_at == []


def test_the_catch_up_waits_for_the_patience_start_and_stops_at_the_budget():
    # a flat count forecasts "never": from the patience start (epoch 3) on the catch-up acts, every
    # period with a wait of 1; the paper's rule alone would have grown ×1.1 a period
    lams, control, trace = _drive([1000] * 5, wait=1, lambda_patience_start=3)
    assert lams == [1.0, 1.0, 1.0, 2.0, 4.0] and len(control.catch_up_at) == 2
    assert trace[3]["forecast_alive"] is None, "a count that is not falling never reaches the budget"
    paper, _, _ = _drive([1000] * 5, lambda_patience_start=3, lambda_schedule="paper")
    assert paper == [1.0, 1.0, 1.0, 1.1, 1.21]
    # at the budget nothing forecasts
    _, control, trace = _drive([900, 10], wait=0)
    assert control.catch_up_at == [] and "forecast_alive" not in trace[-1]


def test_the_catch_up_wait_is_counted_in_lambda_periods():
    # an alpha falls from 1 to 1e-2 in 0.99 / alpha_lr Adam steps, rounded up to whole periods
    opts = snl.Options()
    assert snl.catch_up_wait_periods(opts, 0.05, 1e-2, 42) == 1       # fmnist: 20 steps of a 42-step period
    assert snl.catch_up_wait_periods(opts, 1e-3, 1e-2, 351) == 3      # CIFAR's default lr: 990 steps
    assert snl.catch_up_wait_periods(opts, 0.1, 1e-2, 2) == 5
    assert snl.catch_up_wait_periods(snl.Options(catch_up_wait=4), 1e-3, 1e-2, 351) == 4


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
    assert result.info["reached_budget_by_search"] is False and result.info["top_k_share"] == 0.0
    assert ctx.setup == {"top_k_share": 0.0, "reached_budget_by_search": False, "catch_up_engaged": 0,
                         "lambda_controller": "paper ×1.5 + forecast catch-up"}
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


def test_the_search_reaches_the_budget_within_its_share_of_a_smoke_sized_budget(make_ctx):
    # digits, 20 epochs of compute as in the smoke suite: the search (half of it) must reach the budget
    ctx, student = make_ctx(_opts(lambda_init=3e-3, alpha_lr=0.01, lambda_growth=1.5, lambda_patience_start=1),
                            budget=256, epochs=20.0)
    info = snl.build_mask(ctx=ctx, model=student).info
    assert info["reached_budget_by_search"] is True, info["trace"]
    assert info["alive_at_stop"] <= 256 and info["search_epochs"] <= 10 + 1e-9
    assert "mask_search" not in ctx.cuts
    # the search chose some of the kept pixels, top-k filled in the rest; the share is reported
    assert info["kept_chosen_by_search"] + info["kept_filled_by_top_k"] == 256
    assert info["top_k_share"] == pytest.approx((256 - info["alive_at_stop"]) / 256, abs=1e-6)
    assert info["top_k_share"] == pytest.approx(info["kept_filled_by_top_k"] / 256, abs=1e-6)
    assert ctx.setup["top_k_share"] == info["top_k_share"] and ctx.setup["reached_budget_by_search"] is True
    assert ctx.setup["catch_up_engaged"] == len(info["catch_up_at"]) == info["catch_up_engaged"]
    assert all(isinstance(v, (bool, int, float, str)) for v in ctx.setup.values())
    assert info["alive_above"] == 1e-2 and "snl_alive_threshold" not in ctx.notes, "the paper's threshold"
    assert "top-k filled in" in ctx.notes["snl"]
    _check_rules(info, snl.Options(lambda_growth=1.5, lambda_patience_start=1), 256)


def _check_rules(info, opts, budget):
    """Every lambda change in a search's trace is the paper's ×growth after a period without a new low
    (from the patience start), or a catch-up where the forecast missed the budget."""
    trace, best = info["trace"], info["alive_at_start"]
    for before, after in zip(trace, trace[1:] + [None]):
        low = before["alive"] < best
        if before["rule"] == "paper":
            assert not low and before["epoch"] >= opts.lambda_patience_start
        elif before["rule"] == "catch-up":
            assert before["forecast_alive"] is None or before["forecast_alive"] > budget
        else:
            assert low or before["epoch"] < opts.lambda_patience_start
        factor = {None: 1.0, "paper": opts.lambda_growth, "catch-up": opts.lambda_catch_up}[before["rule"]]
        if after is not None:
            assert after["lambda"] == pytest.approx(before["lambda"] * factor)
        best = min(best, before["alive"])


def test_a_one_epoch_search_updates_lambda_several_times_an_epoch_and_records_its_catch_ups(make_ctx):
    """Two epochs of compute leave the search under one: with ten lambda updates an epoch, the catch-up
    waits the periods the alphas need ((1 − 1e-2) / 0.1 = 9.9 steps, 2 steps a period: 5 periods), then
    engages where the forecast misses the budget, and the record says when; the paper's schedule alone
    never does."""
    infos, setups = {}, {}
    for schedule in ("paper_with_catch_up", "paper"):
        ctx, student = make_ctx(_opts(lambda_init=1e-4, alpha_lr=0.1, lambda_patience_start=0, lambda_period=0.1,
                                      lambda_schedule=schedule), budget=256, epochs=2.0)
        infos[schedule], setups[schedule] = snl.build_mask(ctx=ctx, model=student).info, ctx.setup
    info = infos["paper_with_catch_up"]
    trace = info["trace"]
    assert len(trace) > 3 and [t["epoch"] for t in trace] == pytest.approx([i / 10 for i in range(len(trace))])
    assert info["catch_up_wait_periods"] == 5
    engaged = [c["period"] for c in info["catch_up_at"]]
    assert engaged and engaged[0] >= 4 and all(b - a >= 5 for a, b in zip(engaged, engaged[1:]))
    assert [t["period"] for t in trace if t["rule"] == "catch-up"] == engaged
    assert all(c["step"] == 2 * (c["period"] + 1) for c in info["catch_up_at"])
    assert setups["paper_with_catch_up"]["catch_up_engaged"] == len(engaged)
    assert setups["paper_with_catch_up"]["lambda_controller"] == "paper ×1.5 + forecast catch-up"
    opts = snl.Options(lambda_growth=1.5, lambda_patience_start=0)
    _check_rules(info, opts, 256)
    paper = infos["paper"]
    assert paper["catch_up_at"] == [] and all(t["rule"] != "catch-up" for t in paper["trace"])
    assert setups["paper"]["catch_up_engaged"] == 0 and setups["paper"]["lambda_controller"] == "paper ×1.5"
    _check_rules(paper, opts, 256)
    for setup, i in ((setups[k], infos[k]) for k in infos):
        assert setup["reached_budget_by_search"] is i["reached_budget_by_search"] is (i["alive_at_stop"] <= 256)
        assert setup["top_k_share"] == max(0.0, round((256 - i["alive_at_stop"]) / 256, 6))


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
    assert opts.lambda_period == 1.0 and opts.alive_threshold == 1e-2 and snl.controller_name(opts) == "paper ×1.1"
