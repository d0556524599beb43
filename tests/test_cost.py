"""The cost model's arithmetic on hand-computed cases, for every site kind and layer type."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchbed.config import SecureCostSettings
from benchbed.cost import CostProfile, aby3_profile, price, securenn_profile
from benchbed.dual_bn import convert_dual_bn
from benchbed.models import build_model
from benchbed.sites import IDENTITY, ZERO, convert_relus, sites

# Round numbers, so that every expected figure below can be checked by hand.
P = CostProfile("toy", "toy", relu_bytes=100, relu_rounds=10, compare_bytes=50, compare_rounds=5, select_bytes=7,
                select_rounds=3, poly_bytes=20, poly_rounds=4, trunc_bytes=9, trunc_rounds=2, affine_bytes=11,
                affine_rounds=6, linear_bytes_per_output=2, linear_bytes_per_input=0, linear_bytes_per_weight=0,
                linear_rounds=1, seconds_per_comparison=1e-3, seconds_per_mult=1e-4, seconds_per_mac=1e-6)
NETS = SecureCostSettings(networks={"A": {"bandwidth_mbps": 8, "rtt_ms": 100}})


def toy() -> nn.Module:
    """conv 1→2 (3x3, pad 1) + BN (folded) on 4x4, a site, a flatten and a linear 32→3."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(32, 3))
    return convert_relus(model, (1, 4, 4))


def layer(cost, name):
    return next(c for c in cost["per_layer"] if c["layer"] == name)


def test_all_relu_toy_by_hand():
    cost = price(toy(), (1, 4, 4), NETS, P)
    conv, relu, fc = layer(cost, "0"), layer(cost, "2"), layer(cost, "4")
    assert (conv["bytes"], conv["rounds"], conv["macs"]) == (2 * 32, 1, 9 * 32)
    assert all(c["layer"] != "1" for c in cost["per_layer"]), "BN after a conv is folded: free"
    assert (relu["bytes"], relu["rounds"], relu["drelus"]) == (100 * 32, 10, 32)
    assert (fc["bytes"], fc["rounds"], fc["macs"]) == (2 * 3, 1, 96)
    total = 64 + 3200 + 6
    assert cost["comm_mb"] == pytest.approx(total / 1e6)
    assert cost["rounds"] == 12
    compute = 32 * 1e-3 + 32 * 1e-4 + (288 + 96) * 1e-6
    assert cost["latency_s"]["A"] == pytest.approx(compute + total * 8 / 8e6 + 12 * 0.1)


def test_masked_site_with_identity_quadratic_and_scaled_channels():
    model = toy()
    site = sites(model)["2"]
    mask = torch.zeros(2, 4, 4)
    mask[0, :2] = 1  # 8 ReLUs kept in channel 0; channel 1 all replaced
    site.set_mask(mask, torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.3, 0.1]]))
    cost = layer(price(model, (1, 4, 4), NETS, P), "2")
    # 8 ReLUs; 8 identity pixels (free); 16 quadratic pixels
    assert cost["drelus"] == 8 and cost["secure_mults"] == 8 + 16
    assert cost["bytes"] == 100 * 8 + 20 * 16 and cost["rounds"] == 10 + 4
    site.set_mask(mask, torch.tensor([[0.0, 2.0, 0.0], [0.0, 1.0, 0.5]]))
    cost = layer(price(model, (1, 4, 4), NETS, P), "2")
    # channel 0's 8 replaced pixels are scaled by 2 (a truncation); channel 1 only shifts (free)
    assert cost["bytes"] == 100 * 8 + 9 * 8 and cost["rounds"] == 10 + 2
    site.set_mask(mask, torch.tensor([[0.0, 0.0, 3.0], [0.5, 2.0, 0.0]]))
    cost = layer(price(model, (1, 4, 4), NETS, P), "2")
    # channel 0: a constant (free); channel 1: quadratics whose truncation rounds cover everything
    assert cost["bytes"] == 100 * 8 + 20 * 16 and cost["rounds"] == 10 + 4


def test_patch_site_by_hand():
    model = toy()
    sites(model)["2"].set_patches([(3, 3), ZERO])
    cost = layer(price(model, (1, 4, 4), NETS, P), "2")
    # channel 0: ceil(4/3)^2 = 4 comparisons gate its 16 pixels; channel 1 is zeroed for free
    assert cost["drelus"] == 4 and cost["secure_mults"] == 16
    assert cost["bytes"] == 50 * 4 + 7 * 16 and cost["rounds"] == 5 + 3
    sites(model)["2"].set_patches([IDENTITY, IDENTITY])
    cost = layer(price(model, (1, 4, 4), NETS, P), "2")
    assert cost["bytes"] == 0 and cost["rounds"] == 0 and cost["drelus"] == 0


def test_preactivation_bn_is_an_affine_and_dual_bn_is_priced_once():
    wide = build_model("wrn22_8", num_classes=10, input_shape=(3, 32, 32))
    cost = price(wide, (3, 32, 32), NETS, P)
    kinds = {c["layer"]: c["kind"] for c in cost["per_layer"]}
    assert "layers.0.0.bn1" not in kinds, "the first block's BN follows the stem conv: folded"
    assert kinds["layers.0.1.bn1"] == "affine", "later pre-activation BNs follow residual sums, not convs"
    affines = [c for c in cost["per_layer"] if c["kind"] == "affine"]
    assert all(c["bytes"] == 11 * c["secure_mults"] for c in affines)
    narrow = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    plain = price(narrow, (1, 8, 8), NETS, P)
    dual = price(convert_dual_bn(narrow), (1, 8, 8), NETS, P)
    assert dual["comm_mb"] == plain["comm_mb"] and dual["rounds"] == plain["rounds"]


def test_securenn_profile_follows_the_papers_formula():
    profile = securenn_profile()
    per_drelu = 8 * math.ceil(math.log2(67)) + 19
    assert profile.relu_bytes == 8 * (per_drelu + 2 + 3)
    assert profile.compare_bytes == 8 * (per_drelu + 2)


def test_aby3_profile_comes_from_the_calibration_file():
    profile = aby3_profile()
    assert profile.relu_bytes > profile.compare_bytes > 0
    assert profile.relu_rounds > profile.compare_rounds
    model = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    cost = price(model, (1, 8, 8), SecureCostSettings(), profile)
    assert cost["drelus"] == 4608 and cost["profile"] == "aby3"
    assert cost["nonlinear_mb"] == pytest.approx(4608 * profile.relu_bytes / 1e6)


def test_unknown_profile_is_a_suite_error(write_suite, capsys):
    from benchbed.cli import main

    assert main(["validate", str(write_suite(secure_cost={"profile": "garbled"}))]) == 2
    assert "secure_cost.profile: unknown profile 'garbled'; installed: aby3, securenn" in capsys.readouterr().err
