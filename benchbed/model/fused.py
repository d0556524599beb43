"""Fused forward and backward passes of the standard site kernels.

Written out because eager PyTorch would otherwise build the kernels' formulas from five to eight
full-size elementwise operations a pass, each with its own temporaries, and autograd would keep several
of them for the backward pass; on a CPU the sites of a small model then cost as much as its
convolutions (``benchbed bench``). Here a masked site is one pass forward (a ``clamp`` at a per-pixel
floor) and two back, gates are floats (boolean elementwise kernels are about ten times slower on a CPU),
masks and gates take the activation's memory layout (``broadcast_like``), and a polynomial's
coefficients get a gradient only when they train. The
formulas are the kernels' own; ``tests/test_fused_kernels.py`` checks every gradient against autograd on
the unfused formula in float64.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is laid out channels_last (and not also contiguous, as a map of one pixel is)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def broadcast_like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-pixel (C, H, W) or per-channel (C, 1, 1) tensor, or one of ``x``'s shape, in ``x``'s float
    type and memory layout, shaped to broadcast over ``x``'s batch. The harness runs channels_last
    (``benchbed.data.bundle.to_float``), and on a CPU an elementwise kernel whose operands disagree in
    layout runs four to seven times slower."""
    t = t.to(x.dtype)
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.shape[-2:] != (1, 1) and channels_last(x):
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def gated(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x`` times a 0/1 gate (broadcast to ``x``) that carries no gradient. The gate is cast to ``x``'s
    float type: on a CPU, elementwise kernels on booleans run about ten times slower than on floats."""
    return x * broadcast_like(gate, x)


class _MaskedIdentity(torch.autograd.Function):
    """``mask·relu(x) + (1−mask)·x`` = ``max(x, floor)`` with a floor of 0 on the kept pixels and −∞
    elsewhere: one pass forward; back, the gradient passes where ``x − floor > 0``, two passes."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        floor = broadcast_like(torch.where(mask > 0, 0.0, float("-inf")), x)  # on the mask, not the batch
        ctx.save_for_backward(x, floor)
        return torch.clamp(x, min=floor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, floor = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, x - floor, 0), None


def masked_identity(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask·relu(x) + (1−mask)·x`` for a 0/1 mask broadcast over the batch: ReLU on the kept pixels,
    identity elsewhere."""
    return _MaskedIdentity.apply(x, mask)


class _MaskedPolynomial(torch.autograd.Function):
    """``lerp(p(x), relu(x), mask)`` with ``p(x) = c2·x² + c1·x + c0`` per channel, coefficients (C, 3);
    ``p(x)`` alone when there is no mask (a site that is all polynomial)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor | None, coeffs: torch.Tensor) -> torch.Tensor:
        if mask is None:
            ctx.save_for_backward(x, coeffs)
            return polynomial(coeffs, x)
        mask = broadcast_like(mask, x)
        ctx.save_for_backward(x, coeffs, mask)
        return torch.lerp(polynomial(coeffs, x), F.relu(x), mask)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, coeffs, *masked = ctx.saved_tensors
        c2, c1, _ = _channel_views(coeffs, x)
        grad_x = grad_coeffs = None
        if ctx.needs_input_grad[0]:
            slope = torch.addcmul(c1, c2, x, value=2.0)
            grad_x = grad * slope
            if masked:
                grad_x = torch.lerp(grad_x, torch.ops.aten.threshold_backward(grad, x, 0), masked[0])
        if ctx.needs_input_grad[2]:
            g0 = grad * (1 - masked[0]) if masked else grad
            g1 = g0 * x
            grad_coeffs = torch.stack([(g1 * x).sum((0, 2, 3)), g1.sum((0, 2, 3)), g0.sum((0, 2, 3))],
                                      1).to(coeffs.dtype)
        return grad_x, None, grad_coeffs


def _channel_views(c: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(c2, c1, c0) of (C, 3) coefficients in ``x``'s type, each shaped to broadcast over ``x`` (N, C, H, W).
    On a channels_last ``x`` they are expanded to per-pixel maps in its layout: a (1, C, 1, 1) operand
    against a channels_last map runs up to 2.6x slower on a CPU (the fewer the channels, the slower)."""
    views = tuple(c.to(x.dtype)[:, i].view(1, -1, 1, 1) for i in range(3))
    if channels_last(x):
        views = tuple(v.expand(1, -1, *x.shape[-2:]).contiguous(memory_format=torch.channels_last) for v in views)
    return views


def polynomial(coeffs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``c2·x² + c1·x + c0`` per channel of ``x`` (N, C, H, W), coefficients (C, 3), in ``x``'s type."""
    c2, c1, c0 = _channel_views(coeffs, x)
    return torch.addcmul(c0, torch.addcmul(c1, c2, x), x)


def masked_polynomial(x: torch.Tensor, mask: torch.Tensor | None, coeffs: torch.Tensor) -> torch.Tensor:
    """ReLU where the 0/1 ``mask`` (broadcast over the batch) is 1, the channel's polynomial elsewhere;
    the polynomial everywhere when ``mask`` is None."""
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


def upsample_gate(gate: torch.Tensor, h: int, w: int, height: int, width: int,
                  nhwc: bool = False) -> torch.Tensor:
    """Each patch's value over its ``h``×``w`` pixels, cut to the map: a broadcast and one copy, where
    ``repeat_interleave`` twice would copy twice; written channels_last (``nhwc``) when the map is (see
    ``broadcast_like``)."""
    n, c, rows, cols = gate.shape
    if nhwc:
        per_pixel = gate.permute(0, 2, 3, 1).reshape(n, rows, 1, cols, 1, c).expand(n, rows, h, cols, w, c)
        full = per_pixel.reshape(n, rows * h, cols * w, c).permute(0, 3, 1, 2)
    else:
        full = gate.view(n, c, rows, 1, cols, 1).expand(n, c, rows, h, cols, w).reshape(n, c, rows * h, cols * w)
    return full if (rows * h, cols * w) == (height, width) else full[..., :height, :width]
