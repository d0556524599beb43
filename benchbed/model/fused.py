"""Fused forward and backward passes of the standard site kernels.

Written out because eager PyTorch would otherwise build the kernels' formulas from five to eight
full-size elementwise operations a pass, each with its own temporaries, and autograd would keep several
of them for the backward pass; on a CPU the sites of a small model then cost as much as its
convolutions (``benchbed bench``). Here a masked site is two passes each way (``relu`` and ``lerp``),
gates are floats (boolean elementwise kernels are about ten times slower on a CPU), and a polynomial's
coefficients get a gradient only when they train. The
formulas are the kernels' own; ``tests/test_fused_kernels.py`` checks every gradient against autograd on
the unfused formula in float64.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gated(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x`` times a 0/1 gate (broadcast to ``x``) that carries no gradient. The gate is cast to ``x``'s
    float type: on a CPU, elementwise kernels on booleans run about ten times slower than on floats."""
    return x * gate.to(x.dtype)


class _MaskedIdentity(torch.autograd.Function):
    """``lerp(x, relu(x), mask)`` = ``mask·relu(x) + (1−mask)·x``: two passes each way, ``x`` saved."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.to(x.dtype)
        ctx.save_for_backward(x, mask)
        return torch.lerp(x, F.relu(x), mask)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, mask = ctx.saved_tensors
        return torch.lerp(grad, torch.ops.aten.threshold_backward(grad, x, 0), mask), None


def masked_identity(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask·relu(x) + (1−mask)·x`` for a 0/1 mask broadcast over the batch: ReLU on the kept pixels,
    identity elsewhere."""
    return _MaskedIdentity.apply(x, mask)


class _MaskedPolynomial(torch.autograd.Function):
    """``lerp(p(x), relu(x), mask)`` with ``p(x) = c2·x² + c1·x + c0`` per channel, coefficients (C, 3)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        mask = mask.to(x.dtype)
        ctx.save_for_backward(x, mask, coeffs)
        return torch.lerp(polynomial(coeffs, x), F.relu(x), mask)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, mask, coeffs = ctx.saved_tensors
        c2, c1, _ = _channel_views(coeffs.to(x.dtype))
        grad_x = grad_coeffs = None
        if ctx.needs_input_grad[0]:
            slope = torch.addcmul(c1, c2, x, value=2.0)
            grad_x = torch.lerp(grad * slope, torch.ops.aten.threshold_backward(grad, x, 0), mask)
        if ctx.needs_input_grad[2]:
            g0 = grad * (1 - mask)
            g1 = g0 * x
            grad_coeffs = torch.stack([(g1 * x).sum((0, 2, 3)), g1.sum((0, 2, 3)), g0.sum((0, 2, 3))],
                                      1).to(coeffs.dtype)
        return grad_x, None, grad_coeffs


def _channel_views(c: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(c2, c1, c0) of (C, 3) coefficients, each shaped to broadcast over (N, C, H, W)."""
    return tuple(c[:, i].view(1, -1, 1, 1) for i in range(3))


def polynomial(coeffs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``c2·x² + c1·x + c0`` per channel of ``x`` (N, C, H, W), coefficients (C, 3), in ``x``'s type."""
    c2, c1, c0 = _channel_views(coeffs.to(x.dtype))
    return torch.addcmul(c0, torch.addcmul(c1, c2, x), x)


def masked_polynomial(x: torch.Tensor, mask: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """ReLU where the 0/1 ``mask`` (broadcast over the batch) is 1, the channel's polynomial elsewhere."""
    return _MaskedPolynomial.apply(x, mask, coeffs)


def patch_sums(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Each (h, w) patch's sum per channel, border patches cut by the map: a depthwise convolution with a
    kernel of ones (three times faster than ``avg_pool2d`` on a CPU), on the map padded with zeros."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % h, -width % w
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    ones = torch.ones(x.shape[1], 1, h, w, dtype=x.dtype, device=x.device)
    return F.conv2d(x, ones, stride=(h, w), groups=x.shape[1])


def upsample_gate(gate: torch.Tensor, h: int, w: int, height: int, width: int) -> torch.Tensor:
    """Each patch's value over its ``h``×``w`` pixels, cut to the map: a broadcast and one copy, where
    ``repeat_interleave`` twice would copy twice."""
    n, c, rows, cols = gate.shape
    full = gate.view(n, c, rows, 1, cols, 1).expand(n, c, rows, h, cols, w).reshape(n, c, rows * h, cols * w)
    return full if (rows * h, cols * w) == (height, width) else full[..., :height, :width]
