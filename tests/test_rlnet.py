"""RLNet: exact budget allocation, mismatch ranking, dual BN kept, both BN paths evaluated, robust teacher."""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchbed.config import EvaluationSettings
from benchbed.suite import validate_options
from benchbed.dual_bn import DualBatchNorm2d, has_dual_bn
from benchbed.runner import SuiteRun
from benchbed.sites import counted_sites, drelu_count
from benchbed_plugins import rlnet


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(1, 500), min_size=1, max_size=8),
       weights=st.lists(st.floats(0.01, 10), min_size=8, max_size=8), fraction=st.floats(0, 1))
def test_allocation_is_exact_capped_and_proportional(sizes, weights, fraction):
    names = [f"s{i}" for i in range(len(sizes))]
    size = dict(zip(names, sizes))
    weight = dict(zip(names, weights))
    budget = int(fraction * sum(sizes))
    counts = rlnet.allocate(size, weight, budget)
    assert sum(counts.values()) == budget
    assert all(0 <= counts[n] <= size[n] for n in names)
    unsaturated = [n for n in names if counts[n] < size[n]]
    if len(unsaturated) > 1 and budget:  # unsaturated sites get weight·size shares, up to one unit of rounding
        per_unit = [counts[n] / (weight[n] * size[n]) for n in unsaturated]
        assert max(per_unit) - min(per_unit) <= 2 / min(weight[n] * size[n] for n in unsaturated) + 1e-9


def test_uniform_profile_keeps_the_same_fraction_everywhere():
    sizes = {"a": 1000, "b": 300, "c": 50}
    counts = rlnet.allocate(sizes, {n: 1.0 for n in sizes}, 135)
    assert counts == {"a": 100, "b": 30, "c": 5}


def _options(**changes):
    return validate_options(rlnet.Options, {"beta": 50, "mismatch_images": 64, "finetune": {"batch_size": 64, "lr": 0.02},
                                            "robust": {"eps": 0.1, "step": 0.04, "pgd_steps": 2}, **changes})


def test_mask_keeps_the_highest_mismatch_pixels_and_dual_bn(make_ctx):
    ctx, model = make_ctx(_options(), budget=500, epochs=2.0)
    result = rlnet.build_mask(ctx=ctx, model=model)
    assert drelu_count(result.model) == 500
    assert has_dual_bn(result.model)
    sites = counted_sites(result.model)
    order = torch.randperm(len(ctx.data.train_y), generator=torch.Generator().manual_seed(ctx.seed))[:64]
    images = ctx.data.train_x[order].float() / 255  # the images build_mask ranked on
    # ranked on the all-ReLU model: once a site is masked, the inputs of later sites change
    mismatch = rlnet.relu_mismatch(ctx.teacher, counted_sites(ctx.teacher), images)
    for name, site in sites.items():
        kept = site.kernel.mask.bool()
        if kept.any() and (~kept).any():
            assert mismatch[name][kept].min() >= mismatch[name][~kept].max() - 1e-6
    # an independent mismatch: the mean |min(x, 0)| of the stem's input computed by hand
    teacher = ctx.teacher
    with torch.no_grad():
        pre = teacher.bn1(teacher.conv1(teacher.normalize(images)))
    torch.testing.assert_close(mismatch["relu"], pre.clamp(max=0).abs().mean(0))


def test_finetune_and_evaluate_route_both_bn_paths(make_ctx):
    ctx, model = make_ctx(_options(), budget=500, epochs=1.0)
    model = rlnet.build_mask(ctx=ctx, model=model).model
    result = rlnet.finetune(ctx=ctx, model=model)
    assert result.info["stopped_by_budget"] is True
    # clean + AugMix + 2 attack steps + adversarial pass: five batches' worth of work per batch drawn
    batch = 64 / len(ctx.data.train_y)
    assert result.info["epochs"] == pytest.approx(ctx.clock.epochs_used / 5, abs=5 * batch)
    adv_stats = [m.adv.running_mean for m in result.model.modules() if isinstance(m, DualBatchNorm2d)]
    assert any(s.abs().sum() > 0 for s in adv_stats), "adversarial examples trained the adversarial BNs"
    metrics = rlnet.evaluate(ctx=ctx, model=result.model.eval(),
                             settings=EvaluationSettings(pgd={"images": 50, "steps": 3, "check_steps": 1}))
    for key in ("clean_accuracy", "clean_accuracy_adv_bn", "pgd_accuracy", "val_accuracy"):
        assert 0 <= metrics[key] <= 1
    assert metrics["bn_paths"] == {"clean_and_corruptions": "clean", "pgd": "adv"}


def test_robust_teacher_recipe(write_suite, tmp_path):
    suite = write_suite(teacher={"recipe": {"epochs": 1}, "robust": {"pgd_steps": 2}}, budgets=[64],
                        methods=[{"name": "all_relu"}], evaluation={"pgd": {"images": 32, "steps": 2, "check_steps": 1}})
    SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    record = json.loads((tmp_path / "run" / "teacher.json").read_text())
    assert record["source"]["robust"] is True
    from benchbed.checkpoint import load_checkpoint

    assert has_dual_bn(load_checkpoint(tmp_path / "run" / "teacher.pt"))
    entry = json.loads((tmp_path / "run" / "entries" / "all_relu__all__s0.json").read_text())
    assert "pgd_accuracy" in entry["metrics"]
