"""The 2-party Cheetah profile against SPU's Cheetah: a small model with every site kind costs what
the calibrated profile predicts, per inference and for the session's setup (bytes, busiest party,
rounds measured on delayed links), and computes what the plaintext model computes."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("spu")

import torch  # noqa: E402

from benchbed.config import SecureCostSettings  # noqa: E402
from benchbed.model.sites import sites  # noqa: E402
from benchbed.secure.cost import price  # noqa: E402
from benchbed.secure.profiles import PROFILE_FILES, cheetah_profile  # noqa: E402
from benchbed.secure.measure import against_price, secure_inference  # noqa: E402
from conftest import build_model  # noqa: E402

# Cheetah's local HE work on these models jitters by tens of ms: a delay well above it (rounds read a few
# percent short as it shrinks, as undelayed parties contend for the CPU: within the checks' 10% and 3 rounds)
DELAY = 0.075
SHAPE = (1, 8, 8)


def _every_site_kind() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet_narrow", num_classes=10, input_shape=SHAPE, mean=[0.4], std=[0.3])
    g = torch.Generator().manual_seed(1)
    own = sites(model)
    own["layers.0.0.relu1"].set_mask((torch.rand(16, 8, 8, generator=g) < 0.3).float())  # SNL-like: identity bypass
    own["layers.0.0.relu2"].set_patches([(2, 2), (0, 0), (-1, -1), (1, 1), (3, 3), (4, 1), (2, 3), (8, 8)] * 2,
                                        torch.tensor([[0.05, 0.9, 0.1]] * 16), trainable=True)  # knapsack + DaPa
    own["layers.1.0.relu1"].set_mask((torch.rand(32, 4, 4, generator=g) < 0.3).float(),  # AutoReP-like
                                     torch.tensor([[0.05, 0.9, 0.1]] * 32), trainable=True)
    own["layers.1.0.relu2"].set_mask((torch.rand(32, 1, 1, generator=g) < 0.5).float())  # per channel
    model.train()
    with torch.no_grad():
        model(torch.rand(32, *SHAPE, generator=g))
    return model.eval()


def _checked(model: torch.nn.Module, images: torch.Tensor) -> tuple[dict, dict]:
    report = secure_inference(model.eval(), images, batch_size=1, protocol_name="cheetah", delay_s=DELAY)
    predicted = price(model, SHAPE, SecureCostSettings(), cheetah_profile())
    result = against_price("narrow", report, predicted)
    assert result["agree"], {name: c for name, c in result["checks"].items() if c["agree"] is False}
    return report, predicted


def test_cheetah_cost_model_matches_spu_on_every_site_kind():
    model = _every_site_kind()
    report, predicted = _checked(model, torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(2)))
    assert report["protocol"] == "cheetah" and report["parties"] == 2
    assert report["top1_agreement"] == 1.0 and report["max_logit_error"] < 0.05
    # the session's setup (HE keys, silent-OT state) is megabytes, once; an inference a fraction of it
    assert report["setup_bytes"] > 1e7 and predicted["phases"]["setup"]["mb"] > 10


def test_silent_ot_refills_in_two_kernels_are_one_per_party():
    """Large patches: few comparisons, then selects of every pixel. One party's silent-OT pool runs
    dry in a comparison, the other's in a select; each party still sends the same messages, which is
    what the price holds."""
    torch.manual_seed(0)
    model = build_model("resnet_narrow", num_classes=10, input_shape=SHAPE, mean=[0.4], std=[0.3])
    for site in sites(model).values():
        channels, height, width = site.shape
        site.set_patches([(4, 8) if height == 8 else (height, width)] * channels)
    _checked(model, torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(3)))


def test_polynomials_drawing_several_triple_batches():
    """A trained quadratic on every pixel: 9,216 secret products a run, 2.25 batches of 4,096 triples.
    A session draws whole batches and keeps the rest, so four warm runs draw 3, 3, 0 and 3 batches:
    what the price charges each inference, 2.25 batches offline, on average."""
    torch.manual_seed(0)
    model = build_model("resnet_narrow", num_classes=10, input_shape=SHAPE, mean=[0.4], std=[0.3])
    for site in sites(model).values():
        site.set_polynomial(torch.tensor([[0.05, 0.9, 0.1]] * site.shape[0]), trainable=True)
    report, predicted = _checked(model, torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(3)))
    profile = cheetah_profile()
    batches = predicted["phases"]["offline"]["mb"] * 1e6 / profile.beaver.batch.offline_bytes
    assert batches == pytest.approx(9216 / 4096)


def test_cheetah_profile_is_two_party_and_measured():
    data = json.loads(PROFILE_FILES["cheetah"].read_text())
    assert data["parties"] == 2 and data["measured_with"]["protocol"] == "CHEETAH"
    assert data["linear"]["measured"], "HE linear layers are priced as measured, per layer shape"
    assert all(data["checks"].values())
    profile = cheetah_profile()
    # a comparison by silent OT moves fewer bytes than ABY3's 108 B, but the HE keys cost megabytes once
    assert profile.compare.bytes < 108 and profile.setup_for(1024).bytes > 1e6
    assert profile.setup_for(10 ** 6).bytes >= profile.setup_for(1024).bytes
    assert profile.beaver is not None and profile.beaver.batch.offline_bytes > 1e6
