"""AutoReP: hysteresis, straight-through scores, DaPa against numerical least squares, exact budgets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchbed.config import SecureCostSettings
from benchbed.suite import validate_options
from benchbed.cost import aby3_profile, price
from benchbed.models import build_model
from benchbed.sites import MaskedKernel, counted_sites, drelu_count
from benchbed_plugins import autorep


@pytest.mark.parametrize("mask,score,expected", [
    (1, 0.5, 1),      # kept, clearly positive
    (1, -0.002, 1),   # kept: inside the band it stays
    (1, -0.004, 0),   # kept, below -t: dropped
    (0, 0.002, 0),    # dropped: inside the band it stays dropped
    (0, 0.004, 1),    # dropped, above t: recovers
    (0, -1.0, 0),
    (1, 0.0, 1),
    (0, 0.0, 0),
    (1, -0.003, 0),   # at -t exactly: dropped, as in the authors' code (kept only while s > -t)
    (0, 0.003, 0),    # at t exactly: stays dropped (returns only when s > t)
])
def test_hysteresis_truth_table(mask, score, expected):
    out = autorep.hysteresis(torch.tensor([float(mask)]), torch.tensor([score]), threshold=0.003)
    assert out.item() == expected


def _kernel(shape=(2, 3, 3), **changes):
    opts = validate_options(autorep.Options, changes)
    return autorep.AutoRePKernel(shape, opts, torch.Generator().manual_seed(0))


def test_forward_applies_hysteresis_every_training_step():
    kernel = _kernel()
    with torch.no_grad():
        kernel.score.fill_(-0.01)
    kernel.train()(torch.randn(2, 2, 3, 3))
    assert kernel.mask.sum() == 0
    with torch.no_grad():
        kernel.score.fill_(0.002)  # inside the band: stays dropped
    kernel(torch.randn(2, 2, 3, 3))
    assert kernel.mask.sum() == 0
    kernel.eval()
    with torch.no_grad():
        kernel.score.fill_(1.0)
    kernel(torch.randn(2, 2, 3, 3))
    assert kernel.mask.sum() == 0, "evaluation never changes the mask"


def test_straight_through_gradient_reaches_the_scores():
    kernel = _kernel(polynomial="identity", ste_scale="none").train()
    x = torch.randn(4, 2, 3, 3)
    kernel(x).sum().backward()
    # d out / d m = relu(x) - p(x) with p = identity; the STE passes it to s unchanged.
    expected = (torch.relu(x) - x).sum(0)
    torch.testing.assert_close(kernel.score.grad, expected)


def test_softplus_ste_scales_the_gradient():
    kernel = _kernel(polynomial="identity", ste_scale="softplus").train()
    x = torch.randn(4, 2, 3, 3)
    kernel(x).sum().backward()
    expected = (torch.relu(x) - x).sum(0) * torch.nn.functional.softplus(kernel.score.detach())
    torch.testing.assert_close(kernel.score.grad, expected)


@pytest.mark.parametrize("mu,sigma", [(0.0, 1.0), (1.5, 0.7), (-1.2, 0.5), (-3.0, 1.0), (0.3, 0.01), (-0.02, 0.01),
                                      (5.0, 2.0)])
def test_dapa_matches_numerical_least_squares(mu, sigma):
    rng = np.random.default_rng(0)
    z = rng.standard_normal(400_000)
    z = np.concatenate([z, -z])  # antithetic: halves the sampling error of odd moments
    x = mu + sigma * z
    design = np.stack([z * z, z, np.ones_like(z)], 1)  # fit in standard units: well conditioned at any scale
    b2, b1, b0 = np.linalg.lstsq(design, np.maximum(x, 0), rcond=None)[0]
    c2, c1, c0 = (float(c) for c in autorep.dapa_coefficients(torch.tensor(mu), torch.tensor(sigma)))
    # c2·x² + c1·x + c0 with x = mu + sigma·z, in powers of z:
    ours = (c2 * sigma ** 2, sigma * (2 * c2 * mu + c1), c2 * mu ** 2 + c1 * mu + c0)
    np.testing.assert_allclose(ours, (b2, b1, b0), atol=6e-3 * sigma)


def test_dapa_is_tensor_in_tensor_out_and_vectorised():
    c2, c1, c0 = autorep.dapa_coefficients(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]))
    assert c2.shape == c1.shape == c0.shape == (2,)
    assert c2[0].item() == pytest.approx(1 / (2 * np.sqrt(2 * np.pi)))
    assert c1[0].item() == pytest.approx(0.5)


def test_paper_lambda_table():
    assert autorep.default_lambda(9_000, 491_520) == pytest.approx(140)
    assert autorep.default_lambda(12_900, 491_520) == pytest.approx(80)
    assert autorep.default_lambda(3_000, 491_520) == 200
    assert autorep.default_lambda(100_000, 491_520) == 40
    assert 80 > autorep.default_lambda(14_000, 491_520) > 60


def test_top_k_on_scores_is_exact_on_resnet18():
    model = build_model("resnet18_cifar", num_classes=100, input_shape=(3, 32, 32))
    opts = validate_options(autorep.Options, {})
    gen = torch.Generator().manual_seed(0)
    kernels = {n: autorep.AutoRePKernel(s.shape, opts, gen) for n, s in counted_sites(model).items()}
    masks = autorep.top_k_masks(kernels, 15_000)
    assert sum(int(m.sum()) for m in masks.values()) == 15_000


def _options(**changes):
    return validate_options(autorep.Options, {"score_lr": 0.01, "search": {"batch_size": 64},
                                              "finetune": {"batch_size": 64, "lr": 1e-3}, **changes})


@pytest.mark.parametrize("granularity", ["pixel", "channel"])
def test_build_mask_lands_on_the_budget_with_polynomial_sites(make_ctx, granularity):
    ctx, student = make_ctx(_options(granularity=granularity), budget=512, epochs=2.0)
    model = autorep.build_mask(ctx=ctx, model=student).model
    count = drelu_count(model)
    assert count == 512 if granularity == "pixel" else 512 - 4 < count <= 512
    model.eval()
    for site in counted_sites(model).values():
        assert isinstance(site.kernel, MaskedKernel)
        x = torch.randn(3, *site.shape)
        out = site(x).detach().numpy()
        c = site.kernel.coeffs.detach().numpy()
        m = site.kernel.mask.expand(site.shape).numpy()
        xn = x.numpy()
        poly = c[:, 0, None, None] * xn ** 2 + c[:, 1, None, None] * xn + c[:, 2, None, None]
        np.testing.assert_allclose(out, np.where(m > 0, np.maximum(xn, 0), poly), rtol=1e-5, atol=1e-5)


def test_polynomial_sites_are_priced_as_secure_multiplications(make_ctx):
    ctx, student = make_ctx(_options(), budget=512, epochs=1.0)
    model = autorep.build_mask(ctx=ctx, model=student).model
    cost = price(model, (1, 8, 8), SecureCostSettings(), aby3_profile())
    squares = sum(s.poly_pixels for s in counted_sites(model).values())
    assert squares == sum(s.numel for s in counted_sites(model).values()) - 512
    # a kept pixel's select is one product; a replaced pixel's quadratic with secret coefficients is two
    assert cost["secure_mults"] == 512 + 2 * squares
