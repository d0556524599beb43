"""RLNet: exact budget allocation, mismatch ranking, dual BN kept, both BN paths evaluated, robust teacher."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchbed.config import EvaluationSettings
from benchbed.errors import BenchbedError
from benchbed.model.dual_bn import DualBatchNorm2d, bn_path, convert_dual_bn, has_dual_bn
from benchbed.model.sites import counted_sites, drelu_count
from benchbed.plugin.manager import Plugins, plugin_manager
from benchbed.robustness.evaluate import evaluate_model
from benchbed.run.runner import SuiteRun
from benchbed.run.suite import validate_options
from benchbed_plugins import rlnet
from conftest import build_model


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
    # the test model is a narrow ResNet, for which the authors' lists have no mapping: uniform shares
    return validate_options(rlnet.Options, {"beta": 50, "mismatch_images": 64, "finetune": {"batch_size": 64, "lr": 0.02},
                                            "robust": {"eps": 0.1, "step": 0.04, "pgd_steps": 2},
                                            "sensitivity": "uniform", **changes})


def test_one_shot_mask_keeps_the_highest_mismatch_pixels_and_dual_bn(make_ctx):
    ctx, model = make_ctx(_options(mask_method="one_shot"), budget=500, epochs=2.0)
    result = rlnet.build_mask(ctx=ctx, model=model)
    assert drelu_count(result.model) == 500
    assert has_dual_bn(result.model)
    assert ctx.setup == {"shares": "uniform", "pgd_steps": 2}, "the entry reports its shares and PGD steps"
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
    ctx, model = make_ctx(_options(mask_method="one_shot"), budget=500, epochs=1.0)
    model = rlnet.build_mask(ctx=ctx, model=model).model
    ctx.setup.clear()
    result = rlnet.finetune(ctx=ctx, model=model)
    assert ctx.setup == {"pgd_steps": 2}, "a finetune alone (another method's mask) reports its PGD steps too"
    # the views, attack steps and teacher passes are metered, and the schedule is planned on what a step
    # really cost: the finetune spends the budget, and no more
    assert result.info["stopped_by_budget"] and 0.9 <= ctx.clock.epochs_used <= 1.0 + 1e-9
    adv_stats = [m.adv.running_mean for m in result.model.modules() if isinstance(m, DualBatchNorm2d)]
    assert any(s.abs().sum() > 0 for s in adv_stats), "adversarial examples trained the adversarial BNs"
    # the core evaluates a dual-BN model as RLNet's paper does
    metrics = evaluate_model(result.model.eval(), ctx.data, EvaluationSettings(pgd={"images": 50, "steps": 3,
                                                                                    "check_steps": 1}),
                             ctx.seed, Plugins(plugin_manager()).metrics)
    for key in ("clean_accuracy", "clean_accuracy_adv_bn", "pgd_accuracy", "val_accuracy"):
        assert 0 <= metrics[key] <= 1
    assert metrics["bn_paths"] == {"clean": "clean", "pgd": "adv"}


def test_robust_teacher_recipe(write_suite, tmp_path):
    suite = write_suite(teacher={"recipe": {"epochs": 1}, "robust": {"pgd_steps": 2}}, budgets=[64],
                        methods=[{"name": "all_relu"}], evaluation={"pgd": {"images": 32, "steps": 2, "check_steps": 1}})
    SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    record = json.loads((tmp_path / "run" / "teacher.json").read_text())
    assert record["source"]["robust"] is True
    from conftest import load_checkpoint

    assert has_dual_bn(load_checkpoint(tmp_path / "run" / "teacher.pt"))
    entry = json.loads((tmp_path / "run" / "entries" / "all_relu__all__s0.json").read_text())
    assert "pgd_accuracy" in entry["metrics"]


def _forward_by_hand(model, x):
    """Logits and stage outputs of a CIFAR ResNet, computed layer by layer."""
    h = model.relu(model.bn1(model.conv1(model.normalize(x))))
    stages = []
    for layer in model.layers:
        h = layer(h)
        stages.append(h)
    return model.fc(torch.flatten(model.pool(h), 1)), stages


def _attention_loss(student, teacher):
    total = 0.0
    for s, t in zip(student, teacher):
        qs, qt = s.pow(2).mean(1).flatten(1), t.pow(2).mean(1).flatten(1)
        qs, qt = qs / qs.norm(dim=1, keepdim=True), qt / qt.norm(dim=1, keepdim=True)
        total = total + ((qs - qt) ** 2).mean()
    return total


def _kl(student_logits, teacher_logits, t):
    p = torch.softmax(teacher_logits / t, 1)
    return (p * (torch.log(p) - torch.log_softmax(student_logits / t, 1))).sum(1).mean() * t * t


def test_stage_two_loss_is_the_authors_sum_over_three_views_of_two_halves(make_ctx, monkeypatch):
    opts = _options(gamma=0.3, alpha=0.7, beta=50.0, robust={"eps": 0.1, "step": 0.04, "pgd_steps": 3})
    ctx, model = make_ctx(opts, budget=500, epochs=5.0)
    convert_dual_bn(model)
    gen = torch.Generator().manual_seed(1)
    for site in counted_sites(model).values():
        site.set_mask((torch.rand(site.shape, generator=gen) > 0.5).float())
    for m in model.modules():
        if isinstance(m, DualBatchNorm2d):  # a distinct adversarial path
            m.adv.running_mean.normal_(0, 0.5, generator=gen)
    model.eval()  # batch statistics would differ between the views; eval makes every pass deterministic
    attack_objectives = []

    def fake_adversarial(model_, x, y, settings, objective):
        attack_objectives.append(objective)
        return (x + 0.05).clamp(0, 1)

    monkeypatch.setattr(rlnet, "augmix", lambda x, settings: x.flip(-1))
    monkeypatch.setattr(rlnet, "adversarial", fake_adversarial)
    x = ctx.data.train_x[:12].float() / 255
    y = ctx.data.train_y[:12]
    loss, remove = rlnet.robust_step(ctx, model, attention=True)
    before = ctx.clock.epochs_used
    got = loss(x, y)
    spent = (ctx.clock.epochs_used - before) * len(ctx.data.train_y)
    remove()

    # the authors' split: the first half clean and, the same images, as AugMix; the second half attacked
    with torch.no_grad():
        t_logits, t_stages = _forward_by_hand(ctx.teacher, x)
        _, t_mixed_stages = _forward_by_hand(ctx.teacher, x[:6].flip(-1))
        clean, s_clean = _forward_by_hand(model, x[:6])
        mixed, s_mixed = _forward_by_hand(model, x[:6].flip(-1))
        with bn_path(model, "adv"):
            attacked, _ = _forward_by_hand(model, (x[6:] + 0.05).clamp(0, 1))
    ce = sum(-torch.log_softmax(out, 1)[torch.arange(6), y[p]].mean()
             for out, p in ((clean, slice(0, 6)), (mixed, slice(0, 6)), (attacked, slice(6, 12)))) / 3
    # every KL is to the teacher's logits on the clean images
    kl = (_kl(clean, t_logits[:6], 4) + _kl(mixed, t_logits[:6], 4) + _kl(attacked, t_logits[6:], 4)) / 3
    # attention: the clean view to the teacher on the clean images, the AugMix view to it on the AugMix images
    at = (_attention_loss(s_clean, [t[:6] for t in t_stages]) + _attention_loss(s_mixed, t_mixed_stages)) / 2
    expected = 0.3 * ce + 0.7 * kl + 50.0 * at
    torch.testing.assert_close(got.detach(), expected, rtol=1e-4, atol=1e-6)
    # RSLAD: the attack maximises KL to the teacher's logits on the clean adversarial half
    assert attack_objectives[0](t_logits[6:], None, None).item() == pytest.approx(0.0, abs=1e-6)
    # metered: three training passes of 6 images, the teacher's forwards of 12 and of the 6 AugMix images
    # (a third each); the (faked) attack computed nothing
    assert spent == pytest.approx(18 + 12 / 3 + 6 / 3)


def test_stage_one_has_no_attention_term(make_ctx, monkeypatch):
    ctx, model = make_ctx(_options(beta=1e6), budget=500, epochs=5.0)
    convert_dual_bn(model)
    gen = torch.Generator().manual_seed(1)
    for site in counted_sites(model).values():  # a student that differs from its teacher
        site.set_mask((torch.rand(site.shape, generator=gen) > 0.5).float())
    model.eval()
    monkeypatch.setattr(rlnet, "adversarial", lambda model_, x, y, settings, objective: x)
    x, y = ctx.data.train_x[:12].float() / 255, ctx.data.train_y[:12]
    with_at, remove = rlnet.robust_step(ctx, model, attention=True)
    stage_one, remove_too = rlnet.robust_step(ctx, model, attention=False)
    torch.manual_seed(0)
    a = with_at(x, y)
    torch.manual_seed(0)
    b = stage_one(x, y)
    remove(), remove_too()
    assert a.item() > b.item() + 1.0, "beta = 1e6 times the attention term is only in stage 2"
    assert not rlnet.Options().mask_training_attention and rlnet.Options().mask_training.lr == 0.05


def test_stage_one_rederives_the_mask_from_the_clean_post_relu_mismatch(make_ctx, monkeypatch):
    opts = _options(mask_training={"epochs": 1, "lr": 1e-12, "batch_size": 64},
                    robust={"eps": 0.1, "step": 0.04, "pgd_steps": 1})
    ctx, model = make_ctx(opts, budget=600, epochs=10.0)
    replay = torch.Generator().set_state(ctx.generator.get_state())
    initial = {}
    real_fit = rlnet.fit

    def fit_noting_the_start(model_, ctx_, recipe, **kw):
        initial.update({n: s.kernel.mask.clone() for n, s in counted_sites(model_).items()})
        return real_fit(model_, ctx_, recipe, **kw)

    monkeypatch.setattr(rlnet, "fit", fit_noting_the_start)
    result = rlnet.build_mask(ctx=ctx, model=model)
    assert result.info["mask_updates"] == 1 and drelu_count(result.model) == 600
    counts = result.info["kept_per_site"]
    assert {n: int(m.sum()) for n, m in initial.items()} == counts, "the random start has the allocated sizes"

    # replay the epoch by hand: same batches, the starting mask, the clean half only, |teacher - student|
    from benchbed.data.bundle import train_batches

    student = copy.deepcopy(result.model).train()
    for name, site in counted_sites(student).items():
        site.kernel.mask.copy_(initial[name])
    outputs = {}
    hooks = [s.register_forward_hook(lambda m, i, o, key=(who, n): outputs.__setitem__(key, o))
             for who, net in (("s", student), ("t", ctx.teacher)) for n, s in counted_sites(net).items()]
    totals = {n: torch.zeros(s.shape) for n, s in counted_sites(student).items()}
    steps = len(ctx.data.train_y) // 64
    with torch.no_grad():
        for step, (x, _) in enumerate(train_batches(ctx.data, 64, replay)):
            if step == steps:
                break
            ctx.teacher(x)
            student(x[:32])
            for n in totals:
                totals[n] += (outputs[("t", n)][:32] - outputs[("s", n)]).abs().sum(0)
    for h in hooks:
        h.remove()
    for name, site in counted_sites(result.model).items():
        kept = set(torch.nonzero(site.kernel.mask.flatten()).flatten().tolist())
        expected = set(totals[name].flatten().argsort(descending=True)[:counts[name]].tolist())
        assert len(kept ^ expected) <= 2, name  # float ties at the boundary may differ


def test_authors_sensitivity_lists_allocate_the_published_fractions():
    from types import SimpleNamespace

    model = build_model("resnet18_cifar", num_classes=100, input_shape=(3, 32, 32))
    sites = counted_sites(model)
    fractions = [0.01, 0.11, 0.14, 0.19, 0.21, 0.03, 0.03, 0.03, 0.03, 0.1, 0.14, 0.19, 0.34, 0.35, 0.76, 0.83, 0.85]
    sizes = [s.numel for s in sites.values()]
    budget = round(sum(f * n for f, n in zip(fractions, sizes)))  # the 82K list's own total: 82,657
    assert budget == 82_657
    cuts = {}
    ctx = SimpleNamespace(options=rlnet.Options(sensitivity="authors"), budget=budget,
                          record_cut=cuts.__setitem__)
    weights, source = rlnet.site_weights(ctx, sites)
    counts = rlnet.allocate({n: s.numel for n, s in sites.items()}, weights, budget)
    assert source == "authors' 82K list" and sum(counts.values()) == budget and not cuts
    for (name, n), f in zip(zip(sites, sizes), fractions):
        assert abs(counts[name] - f * n) <= 1, name
    # a model the lists were not made for is an error that says what to do, not a silent fallback
    narrow = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    ctx.budget = 500
    with pytest.raises(BenchbedError, match="set `sensitivity: uniform` or give per-site weights") as err:
        rlnet.site_weights(ctx, counted_sites(narrow))
    assert "\n" not in str(err.value) and not cuts
    for sensitivity, source in (("uniform", "uniform"), ({"relu": 2.0}, "per-site weights")):
        ctx.options = rlnet.Options(sensitivity=sensitivity)
        assert rlnet.site_weights(ctx, counted_sites(narrow))[1] == source


def test_authors_lists_map_onto_a_stem_free_resnet18_without_their_stem_entry():
    from types import SimpleNamespace

    model = build_model("resnet18_cifar", num_classes=100, input_shape=(3, 32, 32), stem_relu=False)
    sites = counted_sites(model)
    sizes = [64 * 32 * 32] * 4 + [128 * 16 * 16] * 4 + [256 * 8 * 8] * 4 + [512 * 4 * 4] * 4  # no stem site
    assert [s.numel for s in sites.values()] == sizes
    ctx = SimpleNamespace(options=rlnet.Options(), budget=50_000, record_cut=None)
    weights, source = rlnet.site_weights(ctx, sites)
    assert source == "authors' 50K list without the stem entry"
    counts = rlnet.allocate({n: s.numel for n, s in sites.items()}, weights, ctx.budget)
    # by hand: the 50K list's 16 block entries, each times its site's size, rescaled to the whole budget
    fractions = [0.025, 0.03, 0.025, 0.025, 0.05, 0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 0.25, 0.5, 0.6, 0.6, 0.6]
    total = sum(f * n for f, n in zip(fractions, sizes))  # 48,660.48: the list's own count without the stem
    expected = [50_000 * f * n / total for f, n in zip(fractions, sizes)]
    assert expected[1] == pytest.approx(2020.20, abs=0.01) and expected[-1] == pytest.approx(5050.51, abs=0.01)
    assert sum(counts.values()) == 50_000
    for name, want in zip(sites, expected):
        assert abs(counts[name] - want) < 1, name
    # the stem-free model also gets the list nearest its budget
    ctx.budget = 100_000
    assert rlnet.site_weights(ctx, sites)[1] == "authors' 100K list without the stem entry"


def test_the_authors_shares_on_a_model_without_a_mapping_stop_the_entry(make_ctx):
    ctx, model = make_ctx(_options(mask_method="one_shot", sensitivity="authors"), budget=500, epochs=2.0)
    with pytest.raises(BenchbedError, match="sensitivity: uniform"):
        rlnet.build_mask(ctx=ctx, model=model)
    ctx, model = make_ctx(_options(mask_method="one_shot", sensitivity={"relu": 1.0, "layers.0.0.relu1": 3.0}),
                          budget=300, epochs=2.0)
    result = rlnet.build_mask(ctx=ctx, model=model)
    assert ctx.setup["shares"] == "per-site weights" and sum(result.info["kept_per_site"].values()) == 300


def test_stage_one_starts_from_the_teacher_under_matched_compute_and_from_scratch_under_the_paper(make_ctx):
    for protocol, start in (("matched", "teacher"), ("paper", "scratch")):
        ctx, model = make_ctx(_options(mask_training={"epochs": 0.2, "batch_size": 64}), budget=500, epochs=2.0)
        ctx.protocol = protocol
        with torch.no_grad():
            model.conv1.weight.mul_(10)  # weights no fresh initialisation could have
        before = model.conv1.weight.detach().clone()
        info = rlnet.build_mask(ctx=ctx, model=model).info
        assert info["mask_training_from"] == start
        moved = (model.conv1.weight - before).abs().max().item()
        assert (moved > 1.0) == (start == "scratch"), "a fresh initialisation moves the weights far"
        assert ("rlnet" in ctx.notes) == (start == "teacher")


def test_the_papers_robust_teacher_and_sensitivity_lists_are_the_defaults():
    info = rlnet.method_info()
    assert info.teacher(rlnet.Options()) == "robust" and rlnet.Options().sensitivity == "authors"
    assert info.teacher(rlnet.Options(teacher="standard")) == "standard"
    paper = validate_options(rlnet.Options, info.paper_recipe)
    assert paper.teacher == "robust" and paper.sensitivity == "authors" and paper.mask_method == "training"
    assert paper.mask_training.epochs == 150 and paper.finetune.epochs == 240
    assert [round(m * 240) for m in paper.finetune.milestones] == [150, 180, 210]
    assert paper.robust.augmix_all_ops is False


def test_augmix_leaves_out_the_ops_that_overlap_the_test_corruptions():
    from benchbed.config import RobustTraining
    from benchbed.robustness.training import augmix_plan

    overlap = {"Brightness", "Contrast", "Color", "Sharpness"}
    default = augmix_plan(64, 8, 8, RobustTraining())
    assert not overlap & set(default.names)
    assert overlap <= set(augmix_plan(64, 8, 8, RobustTraining(augmix_all_ops=True)).names)
