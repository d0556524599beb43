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
from benchbed.secure.cost import Beaver, CostProfile, Linear, Op, SetupStep, expected_busiest_party, linear_key, price, triples_drawn
from benchbed.secure.profiles import PROFILE_FILES, aby3_profile, delphi_profile, profile_from_file, securenn_profile
from conftest import build_model

# Round numbers, so that every expected figure below can be checked by hand. Rank 0 sends half of a
# ReLU's bytes, rank 2 half of a linear layer's.
P = CostProfile("toy", "toy", parties=3, relu=Op(100, 10, seconds=1.1e-3, shares=(0.5, 0.25, 0.25)),
                compare=Op(50, 5, seconds=1e-3), select=Op(7, 3, seconds=1e-4), poly=Op(20, 4, seconds=2e-4),
                affine=Op(11, 6, seconds=1e-4),
                linear=Linear(per_output=Op(2, shares=(0.25, 0.25, 0.5)), per_layer=Op(0, 1),
                              per_mac=Op(seconds=1e-6)))
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
    # rank 0, the busiest, sends half of the ReLUs' bytes and a quarter of the linear layers'
    busiest = 0.25 * 64 + 0.5 * 3200 + 0.25 * 6
    assert cost["busiest_party_mb"] == pytest.approx(busiest / 1e6)
    assert cost["phases"]["online"]["party_mb"] == pytest.approx([busiest / 1e6, (16 + 800 + 1.5) / 1e6,
                                                                   (32 + 800 + 3) / 1e6])
    compute = 32 * 1e-3 + 32 * 1e-4 + (288 + 96) * 1e-6
    # parties send in parallel: the bandwidth term is the busiest party's bytes, not the total; a
    # round is a one-way message, half a round trip. A simulator's compute is shown, never added in.
    assert cost["network_latency_s"]["A"] == pytest.approx(busiest * 8 / 8e6 + 12 * 0.05)
    assert cost["latency_s"] == cost["network_latency_s"] and cost["compute_s"] == pytest.approx(compute)
    deployed = price(toy(), (1, 4, 4), NETS, replace(P, compute_kind="deployment"))
    assert deployed["latency_s"]["A"] == pytest.approx(compute + busiest * 8 / 8e6 + 12 * 0.05)
    assert cost["phases"]["offline"]["mb"] == cost["phases"]["setup"]["mb"] == 0


def test_masked_site_prices_every_polynomial_that_is_a_weight():
    model = toy()
    site = sites(model)["2"]
    mask = torch.zeros(2, 4, 4)
    mask[0, :2] = 1  # 8 ReLUs kept in channel 0; channel 1 all replaced
    site.set_mask(mask, torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.3, 0.1]]))
    cost = layer(price(model, (1, 4, 4), NETS, P), "2")
    # 8 ReLUs; channel 0's 8 fixed identity pixels are free; channel 1's 16 are secret quadratics
    assert cost["drelus"] == 8 and cost["secure_mults"] == 8 + 2 * 16
    # the ReLUs and the quadratics are independent branches: bytes add, rounds are the longer one's
    # (SPU runs them one after the other: rounds_spu)
    assert cost["bytes"] == 100 * 8 + 20 * 16 and cost["rounds"] == 10 and cost["rounds_spu"] == 10 + 4
    # a linear or a shift is a weight too: priced as the quadratic it is computed as
    site.set_mask(mask, torch.tensor([[0.0, 2.0, 0.0], [0.0, 1.0, 0.5]]))
    cost = layer(price(model, (1, 4, 4), NETS, P), "2")
    assert cost["bytes"] == 100 * 8 + 20 * (8 + 16) and cost["rounds"] == 10
    # a trained polynomial is a weight in every channel, the identity-valued one included
    site.set_mask(mask, torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]), trainable=True)
    cost = layer(price(model, (1, 4, 4), NETS, P), "2")
    assert cost["bytes"] == 100 * 8 + 20 * 24
    # an untrained identity bypass is architecture: free
    site.set_mask(mask)
    cost = layer(price(model, (1, 4, 4), NETS, P), "2")
    assert cost["bytes"] == 100 * 8 and cost["rounds"] == 10 and "rounds_spu" not in cost


def test_a_sites_branches_share_their_rounds():
    """256 ReLUs + 768 quadratics in one site: bytes add, rounds = max(ReLU branch, polynomial branch)
    in every profile, SPU's serial figure kept apart; a whole model's rounds and latency follow."""
    model = toy()
    mask = torch.zeros(2, 4, 4)
    mask[0] = 1  # 16 ReLUs, 16 quadratic pixels
    sites(model)["2"].set_mask(mask, torch.tensor([[0.1, 0.9, 0.05]] * 2), trainable=True)
    slow_poly = replace(P, poly=Op(20, 14))  # the polynomial branch the longer one
    cost = price(model, (1, 4, 4), NETS, slow_poly)
    site = layer(cost, "2")
    assert site["bytes"] == 100 * 16 + 20 * 16 and site["rounds"] == 14 and site["rounds_spu"] == 24
    assert cost["rounds"] == 1 + 14 + 1 and cost["rounds_spu"] == 1 + 24 + 1
    busiest = cost["busiest_party_mb"] * 1e6
    assert cost["latency_s"]["A"] == pytest.approx(busiest * 8 / 8e6 + 16 * 0.05)
    # a patch site: compare then select is one chain, the linearized channel's quadratic another
    sites(model)["2"].set_patches([(3, 3), IDENTITY], torch.tensor([[0.0, 1.0, 0.0], [0.1, 0.9, 0.05]]),
                                  trainable=True)
    patch = layer(price(model, (1, 4, 4), NETS, slow_poly), "2")
    assert patch["rounds"] == max(5 + 3, 14) and patch["rounds_spu"] == 5 + 3 + 14
    patch = layer(price(model, (1, 4, 4), NETS, P), "2")
    assert patch["rounds"] == max(5 + 3, 4) and patch["rounds_spu"] == 5 + 3 + 4


def test_a_call_is_priced_at_its_size():
    """Where a protocol computes large calls another way (SPU's Cheetah multiplies calls of 16,384 or
    more directly), a primitive's ``by_call`` step prices a call by its size; below it, the base price."""
    model = toy()
    sites(model)["2"].set_polynomial(torch.tensor([[0.1, 0.9, 0.05]] * 2), trainable=True)  # 32 pixels in one call
    stepped = replace(P, poly=Op(20, 4, by_call=((32, Op(50, 9)), (1000, Op(70, 1)))))
    site = layer(price(model, (1, 4, 4), NETS, stepped), "2")
    assert site["bytes"] == 50 * 32 and site["rounds"] == 9
    site = layer(price(model, (1, 4, 4), NETS, replace(P, poly=Op(20, 4, by_call=((33, Op(50, 9)),)))), "2")
    assert site["bytes"] == 20 * 32 and site["rounds"] == 4
    assert Op.of({"bytes": 1, "by_call": [{"from_call": 9, "bytes": 3}, {"from_call": 5, "bytes": 2}]}).at(7).bytes == 2
    cheetah = profile_from_file("cheetah")
    assert cheetah.poly.at(16_383).bytes == cheetah.poly.bytes < 100
    assert cheetah.poly.at(16_384).bytes == pytest.approx(442.7, abs=0.5), "measured: 442.7 B per pixel"
    assert cheetah.beaver.batch.offline_rounds > 0, "triple generation takes offline rounds"


def test_polynomial_coefficients_public_or_secret():
    """Public coefficients (both parties know them) make a quadratic one secret product, secret ones
    two; a suite may price either way per profile, and Delphi's own is public: 32 B and one round
    online, one triple (192 B) offline, 24 B of the client's storage per pixel."""
    model = toy()
    sites(model)["2"].set_polynomial(torch.tensor([[0.1, 0.9, 0.05]] * 2), trainable=True)
    both = replace(P, poly_public=Op(9, 2))
    secret = price(model, (1, 4, 4), NETS, both)
    public = price(model, (1, 4, 4), SecureCostSettings(networks=NETS.networks,
                                                        polynomial_coefficients={"toy": "public"}), both)
    assert (secret["coefficients"], public["coefficients"]) == ("secret", "public")
    assert layer(secret, "2")["bytes"] == 20 * 32 and layer(public, "2")["bytes"] == 9 * 32
    assert layer(secret, "2")["secure_mults"] == 64 and layer(public, "2")["secure_mults"] == 32
    delphi = price(model, (1, 4, 4), NETS, delphi_profile())
    site = layer(delphi, "2")
    assert delphi["coefficients"] == "public" and delphi["compute_kind"] == "deployment"
    assert site["online"] == {"bytes": 32 * 32, "rounds": 1} and site["offline"]["bytes"] == 192 * 32
    assert delphi["client_storage_mb"] * 1e6 == pytest.approx(24 * 32)


def test_a_suite_prices_coefficients_only_of_its_profiles(write_suite, capsys):
    path = write_suite(secure_cost={"profiles": ["aby3"], "polynomial_coefficients": {"delphi": "public"}})
    assert main(["validate", str(path)]) == 2
    assert "secure_cost.polynomial_coefficients.delphi, line 28: not one of this suite's profiles (aby3)" in capsys.readouterr().err


def test_the_busiest_party_is_the_largest_expected_load():
    """One definition everywhere: each party's mean bytes over runs, then the largest — not the mean of
    each run's largest (a helper party drawn per call makes a run's busiest a sample)."""
    assert expected_busiest_party([[10, 5, 5], [5, 10, 5]]) == 7.5
    assert expected_busiest_party([4, 1]) == 4


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
    assert cost["bytes"] == 50 * 4 + 7 * 16 + 20 * 16 and cost["rounds"] == 5 + 3


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
    assert p.relu.bytes == 8 * (83 + 5) == 704
    assert p.compare.bytes == 8 * (83 + 2) and p.select.bytes == 8 * 3
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
    """A 2PC profile prices a layer shape it measured as measured, others by its formula; its setup is
    paid once per session, apart from the inference, by the size of the largest comparison call (one
    more OT instance from 20 elements here), and the elementwise product's keys only by a model that
    multiplies secrets."""
    model = toy()
    conv = model[0]
    key = linear_key(conv, (1, 4, 4))
    assert key == "conv 1x4x4 -> 2 k3x3 s1 p1"
    p = CostProfile("2pc", "2pc", parties=2, relu=Op(10, 2), compare=Op(5, 1), select=Op(5, 1), poly=Op(3, 2),
                    affine=Op(1, 1),
                    linear=Linear(per_output=Op(2), per_layer=Op(1000, 3),
                                  measured={key: {"bytes": 4321, "rounds": 4, "shares": [3000 / 4321, 1321 / 4321]}}),
                    setup=(SetupStep(0, Op(50_000, 40)), SetupStep(20, Op(80_000, 60))), mult_setup=Op(7_000, 5))
    cost = price(model, (1, 4, 4), NETS, p)
    assert (layer(cost, "0")["bytes"], layer(cost, "0")["rounds"]) == (4321, 4)
    assert layer(cost, "4")["bytes"] == 1000 + 2 * 3
    setup = cost["phases"]["setup"]
    assert setup["mb"] * 1e6 == pytest.approx(80_000) and setup["rounds"] == 60, "32 ReLUs in one call: >= 20"
    assert cost["comm_mb"] * 1e6 == pytest.approx(4321 + 1006 + 10 * 32)
    assert cost["rounds"] == 4 + 3 + 2
    assert cost["busiest_party_mb"] * 1e6 == pytest.approx(3000 + (1006 + 320) / 2)
    busiest = (3000 + (1006 + 320) / 2) * 8 / 8e6
    assert cost["latency_s"]["A"] == pytest.approx(busiest + 9 * 0.05), "the setup is in no inference"
    assert setup["latency_s"]["A"] == pytest.approx(40_000 * 8 / 8e6 + 60 * 0.05)
    sites(model)["2"].set_mask(torch.zeros(2, 1, 1), torch.tensor([[0.1, 0.2, 0.3]] * 2))
    setup = price(model, (1, 4, 4), NETS, p)["phases"]["setup"]
    assert setup["mb"] * 1e6 == pytest.approx(57_000) and setup["rounds"] == 45, "no comparison; one product"


def test_offline_and_online_phases_and_the_clients_storage():
    """Offline work runs per inference before the input: its layers do not wait for each other (its
    rounds are the longest call's), online rounds add up; latency per inference is both, and the
    client keeps the offline phase's storage."""
    p = CostProfile("gc", "gc", parties=2, relu=Op(10, 2, offline_bytes=100, offline_rounds=3, storage_bytes=90,
                                                   shares=(1.0, 0.0), offline_shares=(0.75, 0.25)),
                    input=Op(1, 1, shares=(0.0, 1.0)),
                    linear=Linear(he_slots=8, ciphertext=Op(offline_bytes=1000, offline_rounds=2)))
    cost = price(toy(), (1, 4, 4), NETS, p)
    offline, online = cost["phases"]["offline"], cost["phases"]["online"]
    # conv: 3x3 kernel x ceil(16 / 8) input blocks + ceil(32 / 8) output blocks; linear: ceil(32 / 8) + 1
    ciphertexts = 9 * 2 + 4 + 4 + 1
    assert offline["mb"] * 1e6 == pytest.approx(100 * 32 + 1000 * ciphertexts)
    assert offline["rounds"] == 3, "the ReLUs' circuits and the HE preprocessing run side by side"
    assert online["mb"] * 1e6 == pytest.approx(10 * 32 + 16) and online["rounds"] == 2 + 1
    assert cost["rounds"] == 3 + 3 and cost["client_storage_mb"] * 1e6 == pytest.approx(90 * 32)
    assert offline["party_mb"][0] * 1e6 == pytest.approx(75 * 32 + 500 * ciphertexts)
    assert cost["latency_s"]["A"] == pytest.approx(offline["latency_s"]["A"] + online["latency_s"]["A"])
    assert online["latency_s"]["A"] == pytest.approx(320 * 8 / 8e6 + 3 * 0.05)


def test_delphi_prices_resnet18_as_its_published_runs_measured():
    """CryptoNite's artifact (kvgarimella/cryptonite) measured Delphi on ResNet-18 at 32x32 with
    557,056 ReLUs: 11.00 GB offline (garbled circuits 9.51 GB, OT 1.12 GB, HE 0.37 GB) and 664.5 MB
    online. The profile's per-ReLU and per-ciphertext figures rebuild both totals within 1%."""
    model = build_model("resnet18_cifar", num_classes=10, input_shape=(3, 32, 32))
    cost = price(model, (3, 32, 32), SecureCostSettings(), delphi_profile())
    assert cost["drelus"] == 557_056
    assert cost["phases"]["offline"]["mb"] == pytest.approx(11_000, rel=0.01)
    assert cost["phases"]["online"]["mb"] == pytest.approx(664.5, rel=0.01)
    assert cost["phases"]["setup"]["mb"] == pytest.approx(33.18, rel=0.01)
    assert cost["client_storage_mb"] == pytest.approx(557_056 * 18_248 / 1e6, rel=0.01)


def test_calibrated_profiles_come_from_their_files():
    profile = aby3_profile()
    assert profile.relu.bytes > profile.compare.bytes > 0 and profile.parties == 3
    assert profile.relu.rounds > profile.compare.rounds
    model = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    cost = price(model, (1, 8, 8), SecureCostSettings(), profile)
    assert cost["drelus"] == 4608 and cost["profile"] == "aby3"
    assert cost["nonlinear_mb"] == pytest.approx(4608 * profile.relu.bytes / 1e6)
    assert cost["busiest_party_mb"] < 0.4 * cost["comm_mb"]
    assert PROFILE_FILES["cheetah"].exists(), "benchbed calibrate --protocol cheetah writes it"


def test_unknown_profile_is_a_suite_error(write_suite, capsys):
    assert main(["validate", str(write_suite(secure_cost={"profiles": ["aby3", "garbled"]}))]) == 2
    err = capsys.readouterr().err
    assert "secure_cost.profiles.1, line " in err and "unknown profile 'garbled'; installed: aby3, cheetah, delphi, securenn" in err


def test_triples_are_paid_per_inference_in_proportion():
    """A session draws triples in batches and keeps the rest for the next inference: an inference pays
    the batches' offline price in proportion to the triples it uses (products of at least
    ``direct_min`` elements take none). By hand, T = 100: a quadratic over 32 pixels is two products
    of 32, so 64 triples, 0.64 of a batch."""
    beaver = Beaver(100, Op(offline_bytes=1000, offline_rounds=4), direct_min=200)
    assert triples_drawn([32, 32, 250], beaver) == 64 and triples_drawn([32], None) == 0
    model = toy()
    sites(model)["2"].set_polynomial(torch.tensor([[0.1, 0.9, 0.05]] * 2), trainable=True)
    cost = price(model, (1, 4, 4), NETS, replace(P, beaver=beaver, mult_setup=Op(500, 2)))
    assert cost["phases"]["offline"]["mb"] * 1e6 == pytest.approx(640) and cost["phases"]["offline"]["rounds"] == 4
    assert cost["phases"]["setup"]["mb"] * 1e6 == pytest.approx(500) and cost["phases"]["setup"]["rounds"] == 2


def test_a_max_pool_is_a_tree_of_relus():
    """max(a, b) = b + ReLU(a − b): a 3x3 window takes 8 ReLUs in ceil(log2 9) = 4 sequential calls. By
    hand: 2 channels pooled from 4x4 to 2x2 (stride 2, padding 1) are 8 outputs, 64 ReLUs."""
    model = convert_relus(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(),
                                        nn.MaxPool2d(3, stride=2, padding=1), nn.Flatten(), nn.Linear(8, 3)), (1, 4, 4))
    cost = price(model, (1, 4, 4), NETS, P)
    pool = layer(cost, "2")
    assert (pool["kind"], pool["drelus"], pool["bytes"], pool["rounds"]) == ("maxpool", 64, 100 * 64, 4 * 10)
    assert cost["drelus"] == 32 + 64 and cost["nonlinear_mb"] * 1e6 == pytest.approx(100 * 96)


def test_resnet50_imagenet_is_the_torchvision_layout():
    """The 2PC systems' ResNet-50 (v1.5): 25,557,032 parameters as torchvision's, 9,608,704 ReLUs and a
    3x3 max-pool over 64x56x56 outputs."""
    import torchvision

    model = build_model("resnet50_imagenet", num_classes=1000, input_shape=(3, 224, 224))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in torchvision.models.resnet50().parameters())
    cost = price(model, (3, 224, 224), NETS, P)
    assert cost["drelus"] == 9_608_704 + 64 * 56 * 56 * 8


def test_prices_beside_the_published_figures(tmp_path, capsys):
    """`benchbed prices`: every published figure beside benchbed's price of the same model, profile and
    network, and SNL's ResNet-18 masks under every profile. Delphi's profile rebuilds its source's totals."""
    from benchbed.files import read_json

    assert main(["prices", "--json", str(tmp_path / "prices.json")]) == 0
    out = capsys.readouterr().out
    assert "| system" in out and "benchbed / published" in out and "Sources:" in out
    rows = read_json(tmp_path / "prices.json")
    delphi = [r for r in rows["published"] if r["system"] == "Delphi"]
    assert len(delphi) == 2 and all(r["ratio"] == pytest.approx(1, abs=0.01) for r in delphi)
    cheetah = [r for r in rows["published"] if r["system"] == "Cheetah"]
    assert {r["unit"] for r in cheetah} == {"MB", "s"} and all(r["ours"] > 0 for r in cheetah)
    snl = {(r["model"].split(", ")[-1], r["profile"]): r for r in rows["linearized"]}
    assert snl[("12.9K ReLUs kept", "aby3")]["drelus"] == 12_900
    for profile in ("aby3", "cheetah", "delphi", "securenn"):
        assert (snl[("12.9K ReLUs kept", profile)]["mb"] < snl[("49.4K ReLUs kept", profile)]["mb"]
                < snl[("all ReLUs", profile)]["mb"])
