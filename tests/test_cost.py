"""The cost model's arithmetic on hand-computed cases, for every site kind, layer type and profile."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from benchbed.cli import main
from benchbed.config import SecureCostSettings
from benchbed.model.architectures import WideResNet
from benchbed.model.dual_bn import convert_dual_bn
from benchbed.model.sites import IDENTITY, ZERO, convert_relus, sites, trace_shapes
from benchbed.secure.cost import (PROFILE_FILES, CostProfile, aby3_profile, beaver_batches, linear_key, price,
                                  securenn_profile)
from conftest import build_model

# Round numbers, so that every expected figure below can be checked by hand.
P = CostProfile("toy", "toy", relu_bytes=100, relu_rounds=10, compare_bytes=50, compare_rounds=5, select_bytes=7,
                select_rounds=3, poly_bytes=20, poly_rounds=4, affine_bytes=11, affine_rounds=6,
                linear_bytes_per_output=2, linear_rounds=1, seconds_per_comparison=1e-3, seconds_per_mult=1e-4,
                seconds_per_mac=1e-6, busiest_share={"relu": 0.5, "linear": 0.25})
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
    # the busiest party sends half of the ReLUs' bytes and a quarter of the linear layers'
    busiest = 0.25 * 64 + 0.5 * 3200 + 0.25 * 6
    assert cost["busiest_party_mb"] == pytest.approx(busiest / 1e6)
    compute = 32 * 1e-3 + 32 * 1e-4 + (288 + 96) * 1e-6
    # parties send in parallel: the bandwidth term is the busiest party's bytes, not the total
    assert cost["latency_s"]["A"] == pytest.approx(compute + busiest * 8 / 8e6 + 12 * 0.1)


def test_masked_site_prices_every_polynomial_that_is_a_weight():
    model = toy()
    site = sites(model)["2"]
    mask = torch.zeros(2, 4, 4)
    mask[0, :2] = 1  # 8 ReLUs kept in channel 0; channel 1 all replaced
    site.set_mask(mask, torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.3, 0.1]]))
    cost = layer(price(model, (1, 4, 4), NETS, P), "2")
    # 8 ReLUs; channel 0's 8 fixed identity pixels are free; channel 1's 16 are secret quadratics
    assert cost["drelus"] == 8 and cost["secure_mults"] == 8 + 2 * 16
    assert cost["bytes"] == 100 * 8 + 20 * 16 and cost["rounds"] == 10 + 4
    # a linear or a shift is a weight too: priced as the quadratic it is computed as
    site.set_mask(mask, torch.tensor([[0.0, 2.0, 0.0], [0.0, 1.0, 0.5]]))
    cost = layer(price(model, (1, 4, 4), NETS, P), "2")
    assert cost["bytes"] == 100 * 8 + 20 * (8 + 16) and cost["rounds"] == 10 + 4
    # a trained polynomial is a weight in every channel, the identity-valued one included
    site.set_mask(mask, torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]), trainable=True)
    cost = layer(price(model, (1, 4, 4), NETS, P), "2")
    assert cost["bytes"] == 100 * 8 + 20 * 24
    # an untrained identity bypass is architecture: free
    site.set_mask(mask)
    cost = layer(price(model, (1, 4, 4), NETS, P), "2")
    assert cost["bytes"] == 100 * 8 and cost["rounds"] == 10


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
    # a linearized channel given a quadratic (bypass: dapa) prices its 16 pixels as replaced pixels
    sites(model)["2"].set_patches([(3, 3), IDENTITY], torch.tensor([[0.0, 1.0, 0.0], [0.1, 0.9, 0.05]]), trainable=True)
    cost = layer(price(model, (1, 4, 4), NETS, P), "2")
    assert cost["drelus"] == 4 and cost["secure_mults"] == 16 + 2 * 16
    assert cost["bytes"] == 50 * 4 + 7 * 16 + 20 * 16 and cost["rounds"] == 5 + 3 + 4


def test_batchnorm_folds_only_into_a_conv_whose_only_user_it_is():
    wide = build_model("wrn22_8", num_classes=10, input_shape=(3, 32, 32))
    kinds = {c["layer"]: c["kind"] for c in price(wide, (3, 32, 32), NETS, P)["per_layer"]}
    assert "layers.0.0.bn1" not in kinds, "the stem conv feeds only the first BN (the shortcut projects its ReLU)"
    assert kinds["layers.0.1.bn1"] == "affine", "later pre-activation BNs follow residual sums, not convs"
    torch.manual_seed(0)
    same_width = WideResNet(10, 1, num_classes=10, in_channels=1, mean=[0.4], std=[0.3])
    trace_shapes(same_width, (1, 8, 8))
    cost = price(same_width, (1, 8, 8), NETS, P)
    bn1 = layer(cost, "layers.0.0.bn1")
    # 16 → 16 channels: the stem conv's output also feeds the identity shortcut, so its BN stays
    assert bn1["kind"] == "affine" and bn1["bytes"] == 11 * 16 * 64 and bn1["rounds"] == 6
    narrow = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    plain = price(narrow, (1, 8, 8), NETS, P)
    dual = price(convert_dual_bn(narrow), (1, 8, 8), NETS, P)
    assert dual["comm_mb"] == plain["comm_mb"] and dual["rounds"] == plain["rounds"]


def test_securenn_matches_the_authors_pricing():
    """yg320/secure_inference: DReLU 8·log_p + 24 − 5 elements with log_p = 8, a general
    multiplication 5, a conv 2 per input + 2 per weight + 1 per output; 8-byte elements."""
    p = securenn_profile()
    assert p.relu_bytes == 8 * (83 + 5) == 704
    assert p.compare_bytes == 8 * (83 + 2) and p.select_bytes == 8 * 3
    model = toy()
    cost = price(model, (1, 4, 4), NETS, p)
    # conv: 16 inputs, 18 weights, 32 outputs; linear: 32 inputs, 96 weights, 3 outputs
    assert layer(cost, "0")["bytes"] == 8 * (2 * 16 + 2 * 18 + 32) == 800
    assert layer(cost, "4")["bytes"] == 8 * (2 * 32 + 2 * 96 + 3)
    assert layer(cost, "2")["bytes"] == 704 * 32
    sites(model)["2"].set_patches([(2, 2), (4, 4)])  # 4 + 1 DReLUs gate 32 pixels
    assert layer(price(model, (1, 4, 4), NETS, p), "2")["bytes"] == 8 * (5 * 85 + 32 * 3)
    sites(model)["2"].set_mask(torch.zeros(2, 1, 1), torch.tensor([[0.1, 0.2, 0.3]] * 2), trainable=True)
    assert layer(price(model, (1, 4, 4), NETS, p), "2")["bytes"] == 32 * 2 * 5 * 8  # two multiplications


def test_measured_linear_layers_and_one_time_setups():
    """A 2PC profile prices a layer shape it measured as measured, others by its formula; its setups
    are paid once, the elementwise-product one only by a model that multiplies secrets."""
    model = toy()
    conv = model[0]
    key = linear_key(conv, (1, 4, 4))
    assert key == "conv 1x4x4 -> 2 k3x3 s1 p1"
    p = CostProfile("2pc", "2pc", relu_bytes=10, relu_rounds=2, compare_bytes=5, compare_rounds=1, select_bytes=5,
                    select_rounds=1, poly_bytes=3, poly_rounds=2, affine_bytes=1, affine_rounds=1,
                    linear_bytes_per_output=2, linear_bytes_per_layer=1000, linear_rounds=3, parties=2,
                    constant_bytes=50_000, constant_rounds=40, mult_setup_bytes=7_000, mult_setup_rounds=5,
                    linear_measured={key: {"bytes": 4321, "busiest_bytes": 3000, "rounds": 4}})
    cost = price(model, (1, 4, 4), NETS, p)
    assert (layer(cost, "0")["bytes"], layer(cost, "0")["rounds"]) == (4321, 4)
    assert layer(cost, "4")["bytes"] == 1000 + 2 * 3
    assert layer(cost, "setup")["bytes"] == 50_000 and layer(cost, "setup")["rounds"] == 40
    assert cost["comm_mb"] * 1e6 == pytest.approx(4321 + 1006 + 10 * 32 + 50_000)
    assert cost["rounds"] == 4 + 3 + 2 + 40
    assert cost["busiest_party_mb"] * 1e6 == pytest.approx(3000 + (1006 + 320 + 50_000) / 2)
    sites(model)["2"].set_mask(torch.zeros(2, 1, 1), torch.tensor([[0.1, 0.2, 0.3]] * 2))
    cost = price(model, (1, 4, 4), NETS, p)
    assert layer(cost, "setup")["bytes"] == 57_000 and layer(cost, "setup")["rounds"] == 45


def test_calibrated_profiles_come_from_their_files():
    profile = aby3_profile()
    assert profile.relu_bytes > profile.compare_bytes > 0 and profile.parties == 3
    assert profile.relu_rounds > profile.compare_rounds
    model = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    cost = price(model, (1, 8, 8), SecureCostSettings(), profile)
    assert cost["drelus"] == 4608 and cost["profile"] == "aby3"
    assert cost["nonlinear_mb"] == pytest.approx(4608 * profile.relu_bytes / 1e6)
    assert cost["busiest_party_mb"] < 0.4 * cost["comm_mb"]
    assert PROFILE_FILES["cheetah"].exists(), "benchbed calibrate --protocol cheetah writes it"


def test_unknown_profile_is_a_suite_error(write_suite, capsys):
    assert main(["validate", str(write_suite(secure_cost={"profiles": ["aby3", "garbled"]}))]) == 2
    assert ("secure_cost.profiles.1: unknown profile 'garbled'; installed: aby3, cheetah, securenn"
            in capsys.readouterr().err)


def test_triples_are_drawn_in_batches_as_spus_cheetah_draws_them():
    """A product of n takes n triples from the cache; a cache short of n first gains ceil(n/T)
    batches of T (by hand, T = 100)."""
    p = replace(P, beaver_batch_triples=100, beaver_batch_bytes=1000, beaver_batch_rounds=4)
    assert beaver_batches([32, 32], p) == 1, "one batch of 100 serves both"
    assert beaver_batches([32, 32, 60], p) == 2, "36 left < 60: one more batch (136), 76 left"
    assert beaver_batches([250], p) == 3 and beaver_batches([100, 1], p) == 2
    assert beaver_batches([250], replace(p, beaver_direct_min=200)) == 0, "large products skip the triples"
    assert beaver_batches([250], P) == 0, "a protocol without triples on demand"
    model = toy()
    sites(model)["2"].set_polynomial(torch.tensor([[0.1, 0.9, 0.05]] * 2), trainable=True)  # 2 products of 32
    setup = layer(price(model, (1, 4, 4), NETS, replace(p, mult_setup_bytes=500, mult_setup_rounds=2)), "setup")
    assert setup["bytes"] == 500 + 1000 and setup["rounds"] == 2 + 4


def test_products_are_counted_in_forward_order():
    """Sites of 32 and 48 replaced pixels, the second defined first: four products in forward order,
    32, 32, 48, 48. With T = 20, by hand: 2 batches (8 left), 2 (16), 3 (28), 3 (40) = 10; the
    definition order (48, 48, 32, 32) would draw 3 + 3 + 2 + 0 = 8."""
    class TwoSites(nn.Module):
        def __init__(self):
            super().__init__()
            self.late, self.early = nn.ReLU(), nn.ReLU()
            self.conv1, self.conv2 = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 3, 3, padding=1)

        def forward(self, x):
            return self.late(self.conv2(self.early(self.conv1(x)))).flatten(1)

    model = convert_relus(TwoSites(), (1, 4, 4))
    named = sites(model)
    named["early"].set_polynomial(torch.tensor([[0.1, 0.9, 0.05]] * 2), trainable=True)
    named["late"].set_polynomial(torch.tensor([[0.1, 0.9, 0.05]] * 3), trainable=True)
    p = replace(P, beaver_batch_triples=20, beaver_batch_bytes=1000, beaver_batch_rounds=4)
    assert layer(price(model, (1, 4, 4), NETS, p), "setup")["bytes"] == 10 * 1000
