"""The threat-model rules that the price (``benchbed.secure.cost``) and the export to SPU
(``benchbed.secure.export``) both follow, in one place so that they cannot drift apart; no JAX here.

Semi-honest parties; the client's input and the server's weights are secret, the architecture is
public. Concretely:

- the model is read in eval mode (inference is what is priced and exported), through a ``torch.fx``
  trace that stops at the layers secure inference understands (``benchbed.model.graph.trace``);
- a BatchNorm that is the only user of the convolution in front of it is folded into that
  convolution's weights on the server, in plaintext (``folded_batchnorms``, ``graph.bn_affine``); any
  other BatchNorm is a per-channel affine with a secret scale and shift;
- a polynomial that replaces ReLUs is a weight — secret — when it was trained or is not the identity;
  only a fixed identity bypass is architecture (``secret_polynomial_channels``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from torch import nn

from benchbed.model.graph import folded_bn, trace
from benchbed.model.sites import MaskedKernel, PatchKernel


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
