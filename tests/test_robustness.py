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
