"""Knapsack patch-ReLU: the catalogue, distortion probes against direct evaluation, budgets."""
from __future__ import annotations

import copy

import torch

from benchbed.model.sites import IDENTITY, ZERO, counted_sites, drelu_count, patch_drelus
from benchbed.run.suite import validate_options
from benchbed_plugins import knapsack
from conftest import build_model


def test_catalogue_has_square_non_square_and_full_map_patches():
    sizes = knapsack.catalogue(32, 32, [1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 32], max_aspect=4)
    assert (32, 32) in sizes and (1, 1) in sizes and (3, 12) in sizes and (2, 8) in sizes
    assert (1, 8) not in sizes, "aspect 8 exceeds max_aspect 4"
    assert all(h <= 32 and w <= 32 for h, w in sizes)
    assert 60 <= len(sizes) <= 100, "close to the paper's 80 options at 32 px"
    assert len(set(sizes)) == len(sizes)
    assert knapsack.catalogue(4, 4, [1, 2, 3, 4, 8], 4) == [(h, w) for h in (1, 2, 3, 4) for w in (1, 2, 3, 4)
                                                           if max(h, w) / min(h, w) <= 4]
    assert (7, 7) in knapsack.catalogue(7, 7, [1, 2, 4, 8], 4), "the full map is always an option"


def _opts(**changes):
    return validate_options(knapsack.Options, {"image_batch": 16, "probe_batch": 5, **changes})


def test_vmapped_probes_match_switching_one_channel_directly(make_ctx):
    ctx, model = make_ctx(_opts(), budget=512)
    model.eval()
    sites = dict(list(counted_sites(model).items())[2:4])
    options = {n: [(2, 2), (1, 3), IDENTITY, ZERO] for n in sites}
    images = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    distortion, stats = knapsack.extract_distortions(model, sites, options, images, ctx.options, lambda n, site: True)
    assert stats["probe_image_forwards"] == sum(s.shape[0] * 4 for s in sites.values()) * 20
    with torch.no_grad():
        reference = model(images)
        for name, site in sites.items():
            channels = site.shape[0]
            for c in (0, channels // 2, channels - 1):
                for k, option in enumerate(options[name]):
                    site.set_patches([option if i == c else (1, 1) for i in range(channels)])
                    direct = ((model(images) - reference) ** 2).mean().item()
                    site.set_relu()
                    assert abs(distortion[name][c, k].item() - direct) <= 1e-5 * max(1.0, direct), (name, c, option)


def _per_image(ctx, model) -> float:
    """Training images the probes of one image cost, computed here from the layers' multiply-accumulates:
    the reference forward, then every probe re-running the network after its site, plus the network
    before the site once per vmapped batch of probes."""
    model = copy.deepcopy(model)
    for module in model.modules():
        module._forward_hooks.clear()  # the core's meter: this count is the test's own
    sites = counted_sites(model)
    order = []
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) or module in sites.values():
            module.register_forward_hook(lambda m, i, o: order.append((m, o.numel() * (m.weight.numel() // m.weight.shape[0])
                                                                       if hasattr(m, "weight") else 0)))
    with torch.no_grad():
        model.eval()(torch.zeros(1, *ctx.data.input_shape))
    total = sum(c for _, c in order)
    cost = total  # the reference pass
    for site in sites.values():
        at = [m for m, _ in order].index(site)
        after = sum(c for _, c in order[at + 1:])
        options = len(knapsack.site_catalogue(*site.shape[1:], ctx.options)[0]) + 1  # + identity
        batches = -(-site.shape[0] // ctx.options.probe_batch)
        cost += options * (batches * (total - after) + site.shape[0] * after)
    return cost / (3 * total)


def _affordable(ctx, model, share: float = 1.0) -> int:
    """Images per probe that ``share`` of the entry's compute pays for."""
    return int(share * ctx.clock.remaining_epochs() * len(ctx.data.train_y) / _per_image(ctx, model))


def test_probes_are_charged_to_the_compute_budget_and_short_probes_are_cuts(make_ctx):
    ctx, model = make_ctx(_opts(distortion_images=64, min_distortion_images=1), budget=512, epochs=4.0)
    probes = sum(s.shape[0] * len(knapsack.site_catalogue(*s.shape[1:], ctx.options)[0]) + s.shape[0]
                 for s in counted_sites(model).values())  # + identity per channel
    expected = _affordable(ctx, model, share=0.5)
    result = knapsack.build_mask(ctx=ctx, model=model)
    n = result.info["distortion_images"]
    assert result.info["probes"] == probes and n == expected < 64
    assert ctx.cuts["distortion_images"] == f"{n} of 64 images per probe"
    charged = n * _per_image(ctx, model) / len(ctx.data.train_y)
    # the meter charged what the probes computed; the plan counts every layer that runs after a site (a
    # block's shortcut conv too, which a probe does not recompute), so it errs by a little on the safe side
    assert 0.99 * charged <= ctx.clock.epochs_used <= charged
    assert ctx.clock.epochs_used <= 0.5 * 4.0


def test_the_stated_minimum_takes_more_than_the_share_when_the_whole_budget_pays_for_it(make_ctx):
    ctx, model = make_ctx(_opts(distortion_images=64, min_distortion_images=6), budget=512, epochs=4.0)
    assert _affordable(ctx, model, 0.5) < 6 <= _affordable(ctx, model)
    assert knapsack.build_mask(ctx=ctx, model=model).info["distortion_images"] == 6
    assert ctx.cuts["distortion_images"] == "6 of 64 images per probe"

    ctx, model = make_ctx(_opts(distortion_images=64, min_distortion_images=60), budget=512, epochs=4.0)
    share, whole = _affordable(ctx, model, 0.5), _affordable(ctx, model)
    n = knapsack.build_mask(ctx=ctx, model=model).info["distortion_images"]
    assert whole < 60 and n == share, "a minimum the whole budget cannot pay for is not spent on"
    assert ctx.cuts["distortion_images"] == f"{n} of 64 images per probe, below the stated minimum of 60"
    assert ctx.clock.epochs_used <= 0.5 * 4.0 + 1e-9


def test_the_authors_catalogue_has_the_published_counts_on_resnet18():
    # methods.md: 80 options at 32 px, 78 at 16 px, 25 at 8 px, 9 at 4 px, counting identity and zero;
    # the authors' search offers the patch shapes and identity (78 + identity at 32 px), no zero
    model = build_model("resnet18_cifar", num_classes=100, input_shape=(3, 32, 32))
    opts = knapsack.Options()
    counts = {}
    for site in counted_sites(model).values():
        sizes, source = knapsack.site_catalogue(*site.shape[1:], opts)
        assert source == "authors" and len(set(sizes)) == len(sizes)
        assert all(1 <= h <= site.shape[1] and 1 <= w <= site.shape[2] for h, w in sizes)
        counts[site.shape[1]] = len(sizes)
    assert {px: n + 2 for px, n in counts.items()} == {32: 80, 16: 78, 8: 25, 4: 9}
    assert not opts.include_zero
    assert (3, 12) in knapsack.AUTHORS_PATCHES[32] and (12, 3) not in knapsack.AUTHORS_PATCHES[32]
    assert knapsack.AUTHORS_PATCHES[16] == knapsack.AUTHORS_PATCHES[32][:-2]
    assert knapsack.site_catalogue(9, 9, opts)[1] == "generated", "a map size the authors list nothing for"


def test_the_authors_catalogue_covers_the_fashion_mnist_map_sizes():
    """28, 14 and 7 px (the tiny ResNet on 28x28): the authors' lists, each distinct patch once, cut to the map."""
    opts = knapsack.Options()
    found = {px: knapsack.site_catalogue(px, px, opts) for px in (28, 14, 7)}
    assert {px: source for px, (_, source) in found.items()} == {28: "authors", 14: "authors", 7: "authors"}
    # the authors list 78, 73 and 23 shapes; 28 and 14 px repeat 7x7, and 14 px's 4x15 is its 4x14
    assert {px: len(sizes) for px, (sizes, _) in found.items()} == {28: 77, 14: 71, 7: 23}
    assert found[28][0][-2:] == [(21, 21), (28, 28)] and (7, 1) in found[7][0] and (1, 7) in found[7][0]


def test_the_catalogue_in_use_is_recorded(make_ctx):
    ctx, model = make_ctx(_opts(distortion_images=4), budget=512, epochs=20.0)
    info = knapsack.build_mask(ctx=ctx, model=model).info
    assert info["catalogue"] == {"8x8": {"source": "authors", "patch_shapes": 23, "options": 24},
                                 "4x4": {"source": "authors", "patch_shapes": 7, "options": 8},
                                 "2x2": {"source": "authors", "patch_shapes": 4, "options": 5}}


def test_choice_respects_the_budget_and_matches_the_chosen_sizes(make_ctx):
    for budget in (0, 100, 700, 3000):  # what is checked is the choice: a few probe images, wide probe batches
        ctx, model = make_ctx(_opts(distortion_images=4, probe_batch=16), budget=budget, epochs=20.0)
        model = knapsack.build_mask(ctx=ctx, model=model).model
        assert drelu_count(model) <= budget
        recount = 0
        for site in counted_sites(model).values():
            _, height, width = site.shape
            recount += sum(0 if tuple(hw) in (IDENTITY, ZERO) else patch_drelus(height, width, *hw)
                           for hw in site.kernel.sizes.tolist())
        assert recount == drelu_count(model)


def test_a_budget_of_every_relu_costs_no_distortion(make_ctx):
    ctx, model = make_ctx(_opts(distortion_images=8), budget=4608, epochs=40.0)
    result = knapsack.build_mask(ctx=ctx, model=model)
    # Full ReLUs everywhere distort nothing; where identity or a patch also distorts nothing (a channel
    # that is never negative on the probe images), the cheaper option may be taken.
    assert result.info["total_distortion"] == 0.0
    assert drelu_count(result.model) <= 4608


def test_probe_images_are_reported_and_a_budget_short_of_the_minimum_is_a_cut(make_ctx):
    # the default minimum (128) on a budget that cannot pay for it: fewer images, a cut, no overrun
    ctx, model = make_ctx(_opts(), budget=512, epochs=4.0)
    assert knapsack.Options().min_distortion_images == 128
    share, whole = _affordable(ctx, model, 0.5), _affordable(ctx, model)
    assert whole < 128
    n = knapsack.build_mask(ctx=ctx, model=model).info["distortion_images"]
    assert n == share < 128
    assert ctx.setup["probe_images"] == n and isinstance(ctx.setup["probe_images"], int)
    assert ctx.setup["probe_images_min"] == 128
    assert ctx.cuts["distortion_images"] == f"{n} of 2048 images per probe, below the stated minimum of 128"
    assert ctx.clock.epochs_used <= 0.5 * 4.0 + 1e-9

    # a budget that pays for what was asked: every probe averages that many images, no cut
    ctx, model = make_ctx(_opts(distortion_images=4, min_distortion_images=2), budget=512, epochs=20.0)
    knapsack.build_mask(ctx=ctx, model=model)
    assert ctx.setup["probe_images"] == 4 and ctx.setup["probe_images_min"] == 2
    assert "distortion_images" not in ctx.cuts


def test_the_mean_images_per_probe_counts_each_probe_once_over_image_batches(make_ctx):
    ctx, model = make_ctx(_opts(), budget=512)
    sites = dict(list(counted_sites(model).items())[2:3])
    options = {n: [(2, 2), IDENTITY] for n in sites}
    images = torch.rand(37, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # batches of 16, 16, 5
    _, stats = knapsack.extract_distortions(model, sites, options, images, ctx.options, lambda n, site: True)
    probes = sum(s.shape[0] * 2 for s in sites.values())
    assert stats["probes_run"] == probes and stats["images_per_probe"] == 37
