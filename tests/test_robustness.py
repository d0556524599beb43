"""PGD, corruption accuracy from official files or a generated cache, and dual-BN routing."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from benchbed.config import TrainRecipe
from benchbed.model.dual_bn import DualBatchNorm2d, bn_path, convert_dual_bn
from benchbed.robustness.attacks import pgd
from benchbed.robustness.corruption_accuracy import CorruptionSettings, corruption_accuracy
from benchbed.robustness.pgd_accuracy import PGDSettings, pgd_accuracy
from benchbed.train.loop import accuracy, fit
from conftest import build_model


@pytest.fixture(scope="module")
def trained(request):
    """A narrow ResNet trained for a few epochs on digits (about 95% test accuracy)."""
    from benchbed.train.session import Session
    from conftest import load_dataset

    data = load_dataset("digits", val_fraction=0.15)
    torch.manual_seed(0)
    model = build_model("resnet_narrow", num_classes=10, input_shape=data.input_shape, mean=data.mean, std=data.std)
    ctx = Session.create(data, torch.device("cpu"), seed=0)
    fit(model, ctx, TrainRecipe(epochs=6, lr=0.05, batch_size=64))
    return model.eval(), data


def test_pgd_stays_in_the_eps_ball_and_the_pixel_box(trained):
    model, data = trained
    x = data.test_x[:64].float() / 255
    y = data.test_y[:64]
    eps = 0.1
    model.zero_grad(set_to_none=True)
    adv = pgd(model, x, y, eps=eps, step=0.03, steps=10, generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv != x).any()
    assert all(p.grad is None for p in model.parameters()), "the attack must not leave gradients on the model"


def test_pgd_beats_random_noise_of_the_same_size(trained):
    model, data = trained
    x = data.test_x[:300].float() / 255
    y = data.test_y[:300]
    eps = 0.1
    gen = torch.Generator().manual_seed(1)
    noisy = (x + eps * torch.sign(torch.rand(x.shape, generator=gen) - 0.5)).clamp(0, 1)
    adv = pgd(model, x, y, eps=eps, step=0.025, steps=20, generator=gen)
    with torch.no_grad():
        clean_acc = (model(x).argmax(1) == y).float().mean()
        noise_acc = (model(noisy).argmax(1) == y).float().mean()
        adv_acc = (model(adv).argmax(1) == y).float().mean()
    assert clean_acc > 0.9
    assert adv_acc < noise_acc - 0.2, (clean_acc, noise_acc, adv_acc)


def test_pgd_accuracy_records_its_protocol_and_sanity_checks(trained):
    model, data = trained
    result = pgd_accuracy(model, data, PGDSettings(eps=0.1, step=0.025, steps=10, check_steps=2, images=200), 128, 0)
    assert 0 <= result["pgd_accuracy"] <= result["pgd"]["clean_accuracy_subset"]
    assert result["pgd"]["images"] == 200 and result["pgd"]["steps"] == 10
    assert result["pgd"]["checks"] == {"adversarial_not_above_clean": True, "more_steps_not_weaker": True}
    assert result["pgd"]["gradient_masking_suspected"] is False
    assert result["pgd_accuracy"] <= result["pgd"]["accuracy_2_steps"] + 0.05


def _official_layout(root, name: str, per_severity: int, classes: int):
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5 * per_severity, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, 5 * per_severity).astype(np.int64)
    np.save(folder / f"{name}.npy", images)
    np.save(folder / "labels.npy", labels)
    return images, labels


def test_official_cifar_c_files_are_used_when_present(tmp_path):
    images, labels = _official_layout(tmp_path, "fog", per_severity=12, classes=10)
    model = build_model("resnet_narrow", num_classes=10, input_shape=(3, 32, 32)).eval()
    empty = torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
    data = _bundle("cifar10", tmp_path, empty)
    result = corruption_accuracy(model, data, CorruptionSettings(names=["fog"], severities=[2, 5], images=10), 64)
    assert result["corruptions"]["source"] == "official"
    for severity in (2, 5):
        block = slice((severity - 1) * 12, (severity - 1) * 12 + 10)
        x = torch.from_numpy(images[block]).permute(0, 3, 1, 2).contiguous()
        expected = accuracy(model, x, torch.from_numpy(labels[block]))
        assert result["corruptions"]["per_severity"]["fog"][severity] == expected
    assert result["corruption_accuracy"] == pytest.approx(np.mean(list(result["corruptions"]["per_severity"]["fog"].values())))


def _bundle(name, root, test_x, test_y=None):
    test_y = torch.zeros(len(test_x), dtype=torch.long) if test_y is None else test_y
    return dataclasses.replace(_digits_like(), name=name, root=str(root), test_x=test_x, test_y=test_y)


def _digits_like():
    from conftest import load_dataset

    return load_dataset("digits")


def test_generated_corruptions_are_cached_and_marked(tmp_path, trained):
    model, data = trained
    data = dataclasses.replace(data, root=str(tmp_path))
    settings = CorruptionSettings(names=["gaussian_noise", "contrast"], severities=[1, 5], images=100)
    first = corruption_accuracy(model, data, settings, 64)
    cached = sorted(p.name for p in (tmp_path / "benchbed-corruptions").rglob("*.pt"))
    assert len(cached) == 4
    second = corruption_accuracy(model, data, settings, 64)
    assert first == second
    assert first["corruptions"]["source"] == "generated"
    per = first["corruptions"]["per_corruption"]
    assert set(per) == {"gaussian_noise", "contrast"}
    assert first["corruptions"]["per_severity"]["contrast"][5] <= first["corruptions"]["per_severity"]["contrast"][1]


def test_dual_bn_paths_keep_separate_statistics():
    model = convert_dual_bn(build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8)))
    duals = [m for m in model.modules() if isinstance(m, DualBatchNorm2d)]
    assert duals and not any(isinstance(m, torch.nn.BatchNorm2d) and not isinstance(p, DualBatchNorm2d)
                             for p in model.modules() for m in p.children() if p is model)
    snapshot = lambda which: [getattr(m, which).running_mean.clone() for m in duals]  # noqa: E731
    adv_before, clean_before = snapshot("adv"), snapshot("clean")
    model.train()
    model(torch.rand(16, 1, 8, 8) * 3)
    assert all(torch.equal(a, b) for a, b in zip(snapshot("adv"), adv_before)), "a clean batch must not touch adv BN"
    assert not all(torch.equal(a, b) for a, b in zip(snapshot("clean"), clean_before))
    clean_after = snapshot("clean")
    with bn_path(model, "adv"):
        model(torch.rand(16, 1, 8, 8) * 3)
    assert all(torch.equal(a, b) for a, b in zip(snapshot("clean"), clean_after)), "an adv batch must not touch clean BN"
    assert not all(torch.equal(a, b) for a, b in zip(snapshot("adv"), adv_before))
    assert all(m.path == "clean" for m in duals), "the routing is restored after the block"


def test_dual_bn_checkpoint_round_trip(tmp_path):
    from benchbed.model.checkpoint import save_checkpoint
    from conftest import load_checkpoint

    model = convert_dual_bn(build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8)))
    model.train()
    with bn_path(model, "adv"):
        model(torch.rand(8, 1, 8, 8))
    model.eval()
    path = tmp_path / "dual.pt"
    save_checkpoint(model, path, model_name="resnet_narrow", num_classes=10, input_shape=(1, 8, 8), mean=(0,), std=(1,))
    loaded = load_checkpoint(path).eval()
    x = torch.rand(4, 1, 8, 8)
    for path_name in ("clean", "adv"):
        with bn_path(model, path_name), bn_path(loaded, path_name):
            torch.testing.assert_close(loaded(x), model(x))


def test_generated_corruptions_are_cached_beside_writable_data_only(tmp_path, monkeypatch):
    from benchbed.robustness.corruption_accuracy import cache_root

    assert cache_root(tmp_path) == tmp_path / "benchbed-corruptions"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("benchbed.robustness.corruption_accuracy.os.access", lambda path, mode: False)
    assert cache_root(tmp_path / "read-only") == tmp_path / "cache" / "benchbed" / "corruptions"


# ---------------------------------------------------------------- AugMix, per image

AUGMIX_OPS = ["ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Posterize", "Solarize", "AutoContrast",
              "Equalize"]


def test_augmix_op_list_is_torchvisions_without_all_ops():
    from torchvision.transforms import v2

    from benchbed.config import RobustTraining
    from benchbed.robustness.training import augmix_ops, augmix_plan

    assert list(augmix_ops(False)) == AUGMIX_OPS == list(v2.AugMix(all_ops=False)._PARTIAL_AUGMENTATION_SPACE)
    assert list(augmix_ops(True)) == AUGMIX_OPS + ["Brightness", "Color", "Contrast", "Sharpness"]
    plan = augmix_plan(256, 32, 32, RobustTraining(), torch.Generator().manual_seed(0))
    assert list(plan.names) == AUGMIX_OPS and set(plan.ops.unique().tolist()) == set(range(len(AUGMIX_OPS)))


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (5, 3, 32, 32)])
def test_each_augmix_op_is_torchvisions_at_every_magnitude(shape):
    """The batched operations (per-image affine grids; the others grouped by magnitude) give torchvision's
    AugMix operation image by image, for every op, severity bin and sign."""
    from benchbed.config import RobustTraining
    from benchbed.robustness.training import _transform, apply_ops, augmix_ops

    settings = RobustTraining(augmix_all_ops=True, augmix_severity=10)
    transform = _transform(settings)
    space = augmix_ops(True)
    names = tuple(space)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    n, _, h, w = shape
    for op, (bins, signed) in enumerate(space.values()):
        values = bins(10, h, w)
        for value in [0.0] if values is None else [float(v) for v in values]:
            for sign in (1, -1) if signed else (1,):
                # every image its own magnitude: the first half at +value, the second at -value
                mags = torch.tensor([value * (sign if i < n // 2 else -sign if signed else 1) for i in range(n)],
                                    dtype=torch.float64)
                active = torch.arange(n) != 1  # image 1 left alone
                got = apply_ops(images, names, torch.full((n,), op), mags, active, transform)
                assert torch.equal(got[1], images[1])
                for i in torch.nonzero(active).flatten().tolist():
                    ref = transform._apply_image_or_video_transform(images[i], names[op], float(mags[i]),
                                                                    interpolation=transform.interpolation,
                                                                    fill=transform._fill)
                    assert torch.equal(got[i], ref), (names[op], float(mags[i]), i)


def test_every_image_draws_its_own_augmix_chains():
    from benchbed.config import RobustTraining
    from benchbed.robustness.training import augmix_plan

    settings = RobustTraining()
    plan = augmix_plan(128, 32, 32, settings, torch.Generator().manual_seed(0))
    width = settings.augmix_width
    assert plan.depth.shape == (width, 128) and set(plan.depth.unique().tolist()) <= {1, 2, 3}

    def chain(c, i):
        return [(plan.names[plan.ops[k, c, i]], float(plan.magnitudes[k, c, i])) for k in range(plan.depth[c, i])]

    first = {tuple(chain(0, i)) for i in range(128)}
    assert chain(0, 0) != chain(0, 1) and len(first) > 64, "images of one batch draw different chains"
    assert len({plan.depth[0, i].item() for i in range(128)}) == 3 and len(set(plan.ops[0, 0].tolist())) == 9
    # mixing weights per image: Beta for the original, Dirichlet over the chains; they sum to 1
    torch.testing.assert_close(plan.original + plan.chains.sum(0), torch.ones(128))
    assert plan.original.unique().numel() == 128 and plan.chains[0].unique().numel() == 128
    # magnitudes: the first `severity` of torchvision's 10 bins, signed where the op is
    rotations = plan.magnitudes[plan.ops == plan.names.index("Rotate")].abs()
    assert set(rotations.round(decimals=4).tolist()) <= {0.0, 3.3333, 6.6667}
    assert (plan.magnitudes[plan.ops == plan.names.index("Rotate")] < 0).any()


@pytest.mark.parametrize("shape", [(16, 1, 28, 28), (16, 3, 32, 32)])
def test_augmix_mixes_each_images_own_chains_as_torchvision_does(shape):
    """The batched AugMix equals a per-image reference run on the same draws: torchvision's operations
    applied image by image along each image's chains, mixed with its weights and truncated to uint8."""
    from benchbed.config import RobustTraining
    from benchbed.robustness.training import _transform, augmix, augmix_plan

    settings = RobustTraining()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    got = augmix(x, settings, generator=torch.Generator().manual_seed(5))
    plan = augmix_plan(shape[0], shape[2], shape[3], settings, torch.Generator().manual_seed(5))
    transform = _transform(settings)
    as_bytes = (x * 255).round().to(torch.uint8)
    for i in range(shape[0]):
        mix = plan.original[i] * as_bytes[i]
        for c in range(settings.augmix_width):
            aug = as_bytes[i]
            for k in range(plan.depth[c, i]):
                aug = transform._apply_image_or_video_transform(
                    aug, plan.names[plan.ops[k, c, i]], float(plan.magnitudes[k, c, i]),
                    interpolation=transform.interpolation, fill=transform._fill)
            mix = mix + plan.chains[c, i] * aug
        assert torch.equal(got[i], mix.to(torch.uint8).float() / 255), i


@pytest.mark.parametrize("shape", [(64, 1, 28, 28), (64, 3, 32, 32)])
def test_augmix_is_in_the_unit_box_and_seeded(shape):
    from benchbed.config import RobustTraining
    from benchbed.robustness.training import augmix

    x = torch.rand(shape)
    torch.manual_seed(3)
    a = augmix(x, RobustTraining())
    torch.manual_seed(3)
    b = augmix(x, RobustTraining())
    torch.manual_seed(4)
    c = augmix(x, RobustTraining())
    assert a.shape == x.shape and a.dtype == x.dtype and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, (x * 255).round() / 255)
    same = x[:1].expand(8, -1, -1, -1).contiguous()  # one image eight times: eight different augmentations
    out = augmix(same, RobustTraining())
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8


# ---------------------------------------------------------------- the robust teacher

def _dual_model():
    model = convert_dual_bn(build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8)))
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, DualBatchNorm2d):  # a distinct adversarial path
            m.adv.running_mean.normal_(0, 0.5, generator=gen)
    return model.eval()  # eval: every pass deterministic, so the loss can be recomputed by hand


@pytest.mark.parametrize("split", ["halves", "thirds"])
def test_robust_teacher_loss_splits_the_batch_into_its_views(split, monkeypatch):
    import torch.nn.functional as F

    from benchbed.config import RobustTraining
    from benchbed.robustness import training

    settings = RobustTraining(eps=0.1, step=0.04, pgd_steps=2, teacher_split=split)
    model = _dual_model()
    first_bn = next(m for m in model.modules() if isinstance(m, DualBatchNorm2d))
    passes = []
    first_bn.register_forward_pre_hook(lambda m, inputs: passes.append((m.path, len(inputs[0]))))
    seen = {}

    def fake_augmix(x, settings_):
        seen["augmix"] = x.clone()
        return x.flip(-1)

    def fake_adversarial(model_, x, y, settings_):
        seen["adversarial"] = (x.clone(), y.clone())
        return (x + 0.05).clamp(0, 1)

    monkeypatch.setattr(training, "augmix", fake_augmix)
    monkeypatch.setattr(training, "adversarial", fake_adversarial)
    x, y = torch.rand(12, 1, 8, 8), torch.arange(12) % 10
    got = training.robust_teacher_loss(model, settings)(x, y)
    clean, mixed, attacked = {"halves": (slice(0, 6), slice(0, 6), slice(6, 12)),
                              "thirds": (slice(0, 4), slice(4, 8), slice(8, 12))}[split]
    assert training.teacher_parts(12, settings) == (clean, mixed, attacked)
    assert torch.equal(seen["augmix"], x[mixed])
    assert torch.equal(seen["adversarial"][0], x[attacked]) and torch.equal(seen["adversarial"][1], y[attacked])
    # clean and AugMix through the clean BNs, the PGD examples through the adversarial ones
    sizes = [len(range(12)[p]) for p in (clean, mixed, attacked)]
    assert passes == [("clean", sizes[0]), ("clean", sizes[1]), ("adv", sizes[2])]
    with torch.no_grad():
        expected = F.cross_entropy(model(x[clean]), y[clean]) + F.cross_entropy(model(x[mixed].flip(-1)), y[mixed])
        with bn_path(model, "adv"):
            expected = expected + F.cross_entropy(model((x[attacked] + 0.05).clamp(0, 1)), y[attacked])
    torch.testing.assert_close(got.detach(), expected / 3)
    got.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("split", ["halves", "thirds"])
def test_robust_teacher_cost_estimate_is_what_the_meter_charges(split, make_ctx):
    """The first plan's estimate equals the metered cost of a step with the real PGD and AugMix."""
    from benchbed.config import RobustTraining
    from benchbed.robustness.training import robust_teacher_cost, robust_teacher_loss

    settings = RobustTraining(eps=0.1, step=0.04, pgd_steps=3, teacher_split=split)
    ctx, model = make_ctx(None, budget=None, epochs=5.0)
    convert_dual_bn(model).train()
    x, y = ctx.data.train_x[:24].float() / 255, ctx.data.train_y[:24]
    before = ctx.clock.epochs_used
    robust_teacher_loss(model, settings)(x, y).backward()
    spent = (ctx.clock.epochs_used - before) * len(ctx.data.train_y) / len(y)
    # halves: three training passes of 12 images and 3 attack steps on 12 (2/3 each): 2.5 per image drawn;
    # thirds: three of 8, and the attack on 8: 5/3
    assert robust_teacher_cost(settings, 24) == pytest.approx({"halves": 2.5, "thirds": 5 / 3}[split])
    assert spent == pytest.approx(robust_teacher_cost(settings, 24))
    assert robust_teacher_cost(RobustTraining()) == pytest.approx(1.5 + 7 / 3), "PGD-7 on half of 128"


def test_robust_teacher_recipe_is_the_suites_with_the_authors_lr_and_scaled_epochs():
    from pydantic import ValidationError

    from benchbed.config import RobustTraining
    from benchbed.robustness.training import robust_teacher_recipe

    suite = TrainRecipe(epochs=160, lr=0.1, batch_size=256, schedule="step", milestones=[0.5, 0.75])
    robust = robust_teacher_recipe(suite, RobustTraining())
    assert (robust.epochs, robust.lr) == (240, 0.05), "the authors' 240 epochs at lr 0.05 against 160"
    assert robust.model_dump(exclude={"epochs", "lr"}) == suite.model_dump(exclude={"epochs", "lr"})
    assert suite.epochs == 160 and suite.lr == 0.1, "the suite's recipe is left alone"
    own = robust_teacher_recipe(TrainRecipe(epochs=30, lr=0.2), RobustTraining(teacher_lr=None,
                                                                               teacher_epochs_factor=2))
    assert (own.epochs, own.lr) == (60, 0.2)
    for bad in ({"teacher_epochs_factor": 0}, {"teacher_lr": -1}, {"teacher_split": "quarters"},
                {"augmix_groups": 8}):
        with pytest.raises(ValidationError):
            RobustTraining(**bad)


def test_clean_accuracy_is_a_metric_of_the_registry_measured_first_and_always(trained):
    """The metric hook takes any metric: clean accuracy is the core's, ``always`` on, measured before a
    third party's metric that a suite turns on, with its images counted like every other's."""
    from pydantic import BaseModel

    from benchbed.config import EvaluationSettings
    from benchbed.plugin.manager import Plugins, plugin_manager
    from benchbed.robustness.evaluate import evaluate_model
    from benchbed.robustness.registry import Metric, MetricRegistry

    model, data = trained
    seen = []

    class Off(BaseModel):
        pass

    def flips(model, data, settings, batch_size, seed, progress):
        seen.append("flips")
        return {"flip_accuracy": accuracy(model, data.test_x.flip(-1), data.test_y, batch_size), "flip": {"n": 7}}

    core = Plugins(plugin_manager()).metrics
    assert core["clean"].always and [n for n, m in core.items() if m.always] == ["clean"]
    registry = MetricRegistry([*[("benchbed", m) for m in core.values()],
                               ("lab", Metric("flip", Off, flips, {"flip_accuracy": "flip %"}, lambda r: r["flip"]["n"]))])
    out = evaluate_model(model, data, EvaluationSettings(flip={}), 0, registry)
    assert out["clean_accuracy"] == accuracy(model, data.test_x, data.test_y) and "val_accuracy" in out
    assert list(out["columns"]) == ["clean_accuracy", "flip_accuracy"], "clean first, then the suite's"
    assert out["columns"]["clean_accuracy"]["images"] == len(data.test_y) and out["columns"]["flip_accuracy"]["images"] == 7
    assert seen == ["flips"] and "pgd_accuracy" not in out, "a metric the suite leaves off is not measured"
