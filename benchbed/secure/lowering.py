"""The threat-model rules that the price (``benchbed.secure.cost``) and the export to SPU
(``benchbed.secure.export``) both follow, in one place so that they cannot drift apart; no JAX here.

Semi-honest parties; the client's input and the server's weights are secret, the architecture is
public. Concretely:

- the model is read in eval mode (inference is what is priced and exported), through a ``torch.fx``
  trace that stops at the layers secure inference understands (``trace``);
- a BatchNorm that is the only user of the convolution in front of it is folded into that
  convolution's weights on the server, in plaintext (``folded_batchnorms``, ``bn_affine``); any other
  BatchNorm is a per-channel affine with a secret scale and shift;
- a polynomial that replaces ReLUs is a weight — secret — when it was trained or is not the identity;
  only a fixed identity bypass is architecture (``secret_polynomial_channels``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from benchbed.errors import BenchbedError, first_line
from benchbed.model.architectures import Normalize
from benchbed.model.dual_bn import DualBatchNorm2d
from benchbed.model.passes import eval_mode
from benchbed.model.sites import MaskedKernel, PatchKernel, ReLUSite

# The layers a trace stops at: secure inference prices and exports each as a whole.
LEAVES = (ReLUSite, Normalize, DualBatchNorm2d, nn.BatchNorm2d, nn.Conv2d, nn.Linear, nn.AdaptiveAvgPool2d)


class _Tracer(torch.fx.Tracer):
    """Stops at ``LEAVES``; other ``torch.nn`` layers stay leaves too, so that an unsupported one is
    reported by its module type."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAVES) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, input_shape: Sequence[int]) -> tuple[torch.fx.GraphModule, dict[str, nn.Module]]:
    """The model's fx graph with shapes, traced in eval mode; the model's own mode is restored."""
    with eval_mode(model):
        try:
            graph = _Tracer().trace(model)
        except Exception as exc:  # fx raises many types for data-dependent control flow
            raise BenchbedError(f"secure export cannot trace the model with torch.fx ({first_line(exc)})") from None
        gm = torch.fx.GraphModule(model, graph)
        param = next(iter(list(model.parameters()) + list(model.buffers())), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, *input_shape, device=device))
    return gm, dict(gm.named_modules())


def is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, (nn.BatchNorm2d, DualBatchNorm2d))


def bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``x·scale + shift`` (float64 on the CPU); a dual BN's clean copy."""
    if isinstance(bn, DualBatchNorm2d):
        bn = bn.clean
    if bn.running_mean is None or bn.running_var is None:
        raise BenchbedError("secure export needs BatchNorm running statistics (track_running_stats=True)")
    var = bn.running_var.detach().cpu().double()
    mean = bn.running_mean.detach().cpu().double()
    scale = 1.0 / torch.sqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().cpu().double()
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().cpu().double()
    return scale, shift


def single_user(node: torch.fx.Node) -> torch.fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def folded_bn(conv: torch.fx.Node, modules: dict[str, nn.Module]) -> torch.fx.Node | None:
    """The BatchNorm folded into ``conv``: one that is the conv's only user (a conv output that also
    feeds a residual sum must stay as it is)."""
    follower = single_user(conv)
    if (follower is not None and follower.op == "call_module" and is_batchnorm(modules[follower.target])
            and follower.args[0] is conv):
        return follower
    return None


def folded_batchnorms(model: nn.Module, input_shape: Sequence[int]) -> set[str]:
    """Names of the BatchNorm modules that are folded into the convolution in front of them."""
    gm, modules = trace(model, input_shape)
    folded = set()
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.Conv2d):
            bn = folded_bn(node, modules)
            if bn is not None:
                folded.add(str(bn.target))
    return folded


def secret_polynomial_channels(kernel: MaskedKernel | PatchKernel) -> np.ndarray:
    """Per channel, whether its polynomial is a weight: every channel of a trained polynomial, and the
    channels of a fixed one that are not the identity (0, 1, 0). Only fixed identity bypasses are
    architecture."""
    coeffs = kernel.coeffs.detach().cpu().float().numpy()
    if kernel.coeffs.requires_grad:
        return np.ones(len(coeffs), dtype=bool)
    return ~np.all(coeffs == np.asarray([0.0, 1.0, 0.0], dtype=np.float32), axis=1)
