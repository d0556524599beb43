"""Sites: counting conventions, every kernel against an independent computation, conversion, saving."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from benchbed.errors import BenchbedError
from benchbed.model.checkpoint import save_checkpoint
from benchbed.model.sites import (IDENTITY, ZERO, MaskedKernel, PatchKernel, ReLUSite, capacity, convert_relus,
                                  drelu_count, relu_count, site_counts, sites)
from conftest import build_model, load_checkpoint


def test_resnet18_cifar_counts_both_conventions():
    model = build_model("resnet18_cifar", num_classes=100, input_shape=(3, 32, 32))
    all_sites = sites(model)
    assert len(all_sites) == 17
    assert len({id(s) for s in all_sites.values()}) == 17, "every ReLU must be its own module"
    assert relu_count(model) == drelu_count(model) == capacity(model) == 557_056
    assert all_sites["relu"].role == "stem" and all_sites["relu"].shape == (64, 32, 32)
    without = build_model("resnet18_cifar", num_classes=100, input_shape=(3, 32, 32), stem_relu=False)
    assert relu_count(without) == capacity(without) == 491_520


def test_narrow_and_wide_models_have_sites():
    narrow = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    assert relu_count(narrow) == 16 * 64 + 2 * 16 * 64 + 2 * 32 * 16 + 2 * 64 * 4
    wide = build_model("wrn22_8", num_classes=10, input_shape=(3, 32, 32))
    assert len(sites(wide)) == 19


def _site(shape):
    site = ReLUSite()
    site.shape = shape
    return site


def test_masked_pixel_kernel_matches_numpy():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 6)
    mask = (torch.rand(3, 5, 6) > 0.5).float()
    site = _site((3, 5, 6))
    site.set_mask(mask)
    xn, mn = x.numpy(), mask.numpy()
    expected = np.where(mn[None] > 0, np.maximum(xn, 0), xn)
    np.testing.assert_allclose(site(x).detach().numpy(), expected, rtol=0, atol=0)
    assert site.drelus == site.relus == int(mn.sum())


def test_masked_channel_kernel_with_polynomial_matches_numpy():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 3, 3)
    mask = torch.tensor([1.0, 0.0, 0.0, 1.0])
    coeffs = torch.tensor([[0.1, 0.5, 0.2], [0.25, 0.5, 0.3], [0.0, 1.0, 0.0], [3.0, 3.0, 3.0]])
    site = _site((4, 3, 3))
    site.set_mask(mask, coeffs)
    out = site(x).detach().numpy()
    xn = x.numpy()
    for c in range(4):
        if mask[c]:
            expected = np.maximum(xn[:, c], 0)
        else:
            c2, c1, c0 = coeffs[c].tolist()
            expected = c2 * xn[:, c] ** 2 + c1 * xn[:, c] + c0
        np.testing.assert_allclose(out[:, c], expected, rtol=1e-6, atol=1e-6)
    assert site.drelus == 2 * 9
    assert site.poly_pixels == 9, "only channel 1 is a polynomial with a square term"


def test_all_polynomial_site():
    site = _site((2, 2, 2))
    site.set_polynomial(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]]))
    x = torch.randn(3, 2, 2, 2)
    out = site(x)
    torch.testing.assert_close(out[:, 0], x[:, 0] ** 2)
    torch.testing.assert_close(out[:, 1], 2 * x[:, 1] + 1)
    assert site.drelus == 0 and site.poly_pixels == 4


def _patch_reference(x: np.ndarray, sizes: list[tuple[int, int]], coeffs: np.ndarray | None = None) -> np.ndarray:
    """Per-channel, per-patch loop: the sign of each patch's mean gates the whole patch; a linearized
    channel computes its quadratic (the identity without ``coeffs``)."""
    out = np.zeros_like(x)
    _, channels, height, width = x.shape
    for c, (h, w) in enumerate(sizes):
        if (h, w) == IDENTITY:
            c2, c1, c0 = coeffs[c] if coeffs is not None else (0.0, 1.0, 0.0)
            out[:, c] = c2 * x[:, c] ** 2 + c1 * x[:, c] + c0
            continue
        if (h, w) == ZERO:
            continue
        for i in range(0, height, h):
            for j in range(0, width, w):
                patch = x[:, c, i:i + h, j:j + w]
                gate = (patch.mean(axis=(1, 2)) > 0).astype(x.dtype)
                out[:, c, i:i + h, j:j + w] = patch * gate[:, None, None]
    return out


def _patch_drelus(shape, sizes) -> int:
    _, height, width = shape
    return sum(0 if hw in (IDENTITY, ZERO) else math.ceil(height / min(hw[0], height)) * math.ceil(width / min(hw[1], width))
               for hw in sizes)


patch_size = st.one_of(st.tuples(st.integers(1, 8), st.integers(1, 8)), st.just(IDENTITY), st.just(ZERO))


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 9), width=st.integers(1, 9),
       sizes=st.lists(patch_size, min_size=1, max_size=5), seed=st.integers(0, 10_000))
def test_patch_kernel_matches_loop(height, width, sizes, seed):
    sizes = [(min(h, height), min(w, width)) if h > 0 else (h, w) for h, w in sizes]
    x = torch.randn(2, len(sizes), height, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    site = _site((len(sizes), height, width))
    site.set_patches(sizes)
    np.testing.assert_allclose(site(x).numpy(), _patch_reference(x.numpy(), sizes), atol=1e-12)
    assert site.drelus == _patch_drelus(site.shape, sizes)


def test_patch_kernels_linearized_channels_compute_their_polynomial():
    sizes = [(2, 2), IDENTITY, ZERO, IDENTITY]
    coeffs = torch.tensor([[9.0, 9.0, 9.0], [0.2, 0.7, -0.1], [9.0, 9.0, 9.0], [0.0, 1.0, 0.0]])  # float32, as kept
    x = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    site = _site((4, 5, 5))
    site.set_patches(sizes, coeffs, trainable=True)
    out = site(x)
    np.testing.assert_allclose(out.detach().numpy(), _patch_reference(x.numpy(), sizes, coeffs.double().numpy()), atol=1e-12)
    assert site.drelus == 9 and site.relus == 25
    assert site.poly_pixels == 25, "one linearized channel has a square term"
    out.sum().backward()
    grad = site.kernel.coeffs.grad
    assert grad[1].abs().sum() > 0 and grad[0].abs().sum() == grad[2].abs().sum() == 0, "only linearized channels train"
    rebuilt = PatchKernel(**{k: v for k, v in site.kernel.spec().items() if k != "kind"})
    torch.testing.assert_close(rebuilt.coeffs, site.kernel.coeffs.detach().float())
    assert rebuilt.coeffs.requires_grad


def test_patch_one_by_one_is_relu_and_gradient_flows():
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    kernel = PatchKernel([(1, 1)] * 3)
    torch.testing.assert_close(kernel(x), torch.relu(x))
    kernel(x).sum().backward()
    torch.testing.assert_close(x.grad, (x > 0).float())


def test_bad_masks_and_patches_are_rejected():
    site = _site((2, 3, 3))
    with pytest.raises(BenchbedError):
        site.set_mask(torch.ones(3, 3, 3))
    with pytest.raises(BenchbedError):
        site.set_patches([(2, 2)])
    with pytest.raises(BenchbedError):
        PatchKernel([(0, 3)])
    with pytest.raises(BenchbedError):
        MaskedKernel(torch.ones(2, 3, 3), torch.ones(2, 2))


def test_convert_relus_on_own_model():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.ReLU(), nn.Flatten())
    x = torch.randn(2, 1, 6, 6)
    before = model(x)
    model = convert_relus(model, (1, 6, 6))
    assert [(c.name, c.shape) for c in site_counts(model)] == [("1", (4, 6, 6)), ("3", (2, 4, 4))]
    torch.testing.assert_close(model(x), before)


def test_convert_relus_splits_a_reused_relu_module():
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32)
    before = model(x)
    converted = convert_relus(model, (3, 32, 32))
    assert len(sites(converted)) == 17
    assert len({id(s) for s in sites(converted).values()}) == 17
    torch.testing.assert_close(converted.eval()(x), before)


def test_checkpoint_round_trip_keeps_every_kernel(tmp_path):
    model = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8), mean=[0.5], std=[0.25])
    named = list(sites(model).values())
    named[0].set_mask((torch.rand(16, 8, 8) > 0.5).float())
    named[1].set_polynomial(torch.rand(16, 3))
    named[2].set_patches([(2, 3)] * 8 + [IDENTITY] * 4 + [ZERO] * 4)
    model.eval()
    x = torch.rand(3, 1, 8, 8)
    path = tmp_path / "m.pt"
    save_checkpoint(model, path, model_name="resnet_narrow", num_classes=10, input_shape=(1, 8, 8),
                    mean=(0.5,), std=(0.25,))
    loaded = load_checkpoint(path).eval()
    torch.testing.assert_close(loaded(x), model(x))
    assert [c.kind for c in site_counts(loaded)] == [c.kind for c in site_counts(model)]
    assert drelu_count(loaded) == drelu_count(model)


def test_patch_checkpoints_saved_before_patch_polynomials_still_load(tmp_path):
    model = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8), mean=[0.5], std=[0.25])
    site_name, site = list(sites(model).items())[2]
    site.set_patches([(2, 3)] * 8 + [IDENTITY] * 4 + [ZERO] * 4)
    path = tmp_path / "m.pt"
    save_checkpoint(model, path, model_name="resnet_narrow", num_classes=10, input_shape=(1, 8, 8),
                    mean=(0.5,), std=(0.25,))
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop(f"{site_name}.kernel.coeffs")
    for key in ("coeffs", "trainable"):
        payload["sites"][site_name].pop(key)
    torch.save(payload, path)
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(load_checkpoint(path).eval()(x), model.eval()(x))
    payload["state_dict"].pop("conv1.weight")  # any other missing weight is still refused
    torch.save(payload, path)
    with pytest.raises(BenchbedError, match="does not match its model"):
        load_checkpoint(path)


def test_identity_bypass_does_not_train_unless_asked():
    site = _site((2, 3, 3))
    site.set_mask(torch.zeros(2, 3, 3))
    assert not site.kernel.coeffs.requires_grad, "SNL-style identity bypasses must stay identities"
    site.set_polynomial(torch.rand(2, 3), trainable=True)
    assert site.kernel.coeffs.requires_grad


def test_resnet18_without_a_stem_relu_is_the_snl_and_autorep_model(tmp_path):
    with_stem = build_model("resnet18_cifar", num_classes=100, input_shape=(3, 32, 32)).eval()
    without = build_model("resnet18_cifar", num_classes=100, input_shape=(3, 32, 32), stem_relu=False).eval()
    # 4·(64·32·32) + 4·(128·16·16) + 4·(256·8·8) + 4·(512·4·4): no stem site at all, counted or not
    assert relu_count(without) == relu_count(without, counted_only=False) == capacity(without) == 491_520
    assert len(sites(without)) == 16 and "relu" not in sites(without)
    assert isinstance(without.relu, nn.Identity)
    # same weights: the stem's output goes straight into the first block, pre-activation values and all
    without.load_state_dict({k: v for k, v in with_stem.state_dict().items() if not k.startswith("relu.")})
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        stem = with_stem.bn1(with_stem.conv1(with_stem.normalize(x)))
        h = stem
        for layer in with_stem.layers:
            h = layer(h)
        expected = with_stem.fc(torch.flatten(with_stem.pool(h), 1))
        assert (stem < 0).any(), "the check needs negative stem outputs to tell the models apart"
    torch.testing.assert_close(without(x), expected)
    path = tmp_path / "nostem.pt"
    save_checkpoint(without, path, model_name="resnet18_cifar", num_classes=100, input_shape=(3, 32, 32),
                    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    loaded = load_checkpoint(path).eval()
    assert relu_count(loaded) == 491_520 and loaded.build_options == {"stem_relu": False}
    torch.testing.assert_close(loaded(x), without(x))


def test_stem_relu_changes_nothing_on_a_model_without_a_stem_relu():
    wide = build_model("wrn22_8", num_classes=10, input_shape=(3, 32, 32), stem_relu=False)
    assert len(sites(wide)) == 19
