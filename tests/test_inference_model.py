"""Evaluation runs a copy of the model with its BatchNorms folded into their convolutions: the same
outputs as the model itself (float64, every site kind, a dual BN left as it is), the model itself
untouched, and a model that torch.fx cannot trace evaluated as it is."""
from __future__ import annotations

import torch
from torch import nn

from benchbed.model.dual_bn import DualBatchNorm2d, bn_path, convert_dual_bn
from benchbed.model.graph import fold_batchnorms
from benchbed.model.sites import IDENTITY, sites
from benchbed.robustness.evaluate import inference_model
from conftest import build_model

SHAPE = (1, 8, 8)


def _trained_statistics(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters away from their defaults, so that a wrong fold shows."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, *SHAPE, generator=g))
    return model.eval().double()


def _every_site_kind() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet_narrow", num_classes=10, input_shape=SHAPE, mean=[0.4], std=[0.3])
    own = sites(model)
    g = torch.Generator().manual_seed(1)
    own["layers.0.0.relu1"].set_mask((torch.rand(16, 8, 8, generator=g) < 0.3).float())
    own["layers.0.0.relu2"].set_patches([(2, 2), IDENTITY, (4, 1), (1, 1)] * 4, torch.randn(16, 3, generator=g))
    own["layers.1.0.relu1"].set_polynomial(torch.randn(32, 3, generator=g) * 0.1)
    return _trained_statistics(model)


def test_the_folded_copy_computes_what_the_model_does():
    model = _every_site_kind()
    x = torch.randn(5, *SHAPE, dtype=torch.float64)
    expected = model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, count = fold_batchnorms(model, SHAPE)
    assert count == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), expected, rtol=1e-10, atol=1e-10)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the model itself is untouched"
    assert not any(p.requires_grad for p in folded.parameters() if p.dim() == 4), "folded weights are not trained"
    ready, _ = inference_model(model, SHAPE)
    torch.testing.assert_close(ready(x.contiguous(memory_format=torch.channels_last)), expected, rtol=1e-10, atol=1e-10)


def test_dual_batchnorms_stay_and_still_switch_paths():
    model = convert_dual_bn(_every_site_kind())
    for m in model.modules():
        if isinstance(m, DualBatchNorm2d):
            m.adv.running_mean += 0.5  # the two paths differ
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    folded, count = fold_batchnorms(model, SHAPE)
    assert count == 0 and sum(isinstance(m, DualBatchNorm2d) for m in folded.modules()) > 0
    for path in ("clean", "adv"):
        with bn_path(model, path), bn_path(folded, path):
            torch.testing.assert_close(folded(x), model(x))


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)

    def forward(self, x):
        return self.bn(self.conv(x)) if x.sum() > 0 else x  # torch.fx cannot trace a branch on a value


def test_a_model_torch_fx_cannot_trace_is_evaluated_as_it_is():
    model = _DataDependent().eval()
    folded, count = fold_batchnorms(model, SHAPE)
    assert folded is model and count == 0
