"""The fused site kernels against the unfused formulas, in float64: outputs and every gradient."""
import torch
import torch.nn.functional as F

from benchbed.model.fused import gated, masked_identity, masked_polynomial, upsample_gate
from benchbed.model.sites import IDENTITY, ZERO, MaskedKernel, PatchKernel


def _input(shape=(3, 4, 7, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    x = torch.where(x.abs() < 1e-3, 0.5, x)  # away from ReLU's kink, where the two sides' gradients differ
    return x.requires_grad_(), g


def _grads(out, inputs, g):
    weight = torch.randn(out.shape, generator=g, dtype=out.dtype)
    return torch.autograd.grad((out * weight).sum(), inputs)


def test_masked_identity_matches_the_blend_formula():
    x, g = _input()
    mask = torch.rand(4, 7, 6, generator=g) < 0.4
    ours = masked_identity(x, mask)
    reference = mask * F.relu(x) + (~mask) * x
    assert torch.equal(ours, reference)
    state = g.get_state()
    (a,) = _grads(ours, [x], g)
    g.set_state(state)
    (b,) = _grads(reference, [x], g)
    assert torch.allclose(a, b)


def test_masked_polynomial_matches_autograd_on_the_formula_for_x_and_coefficients():
    x, g = _input()
    mask = torch.rand(4, 1, 1, generator=g) < 0.5  # per channel, broadcast
    coeffs = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ours = masked_polynomial(x, mask, coeffs)
    c2, c1, c0 = (coeffs[:, i].view(1, -1, 1, 1) for i in range(3))
    reference = torch.where(mask, F.relu(x), c2 * x * x + c1 * x + c0)
    assert torch.allclose(ours, reference)
    state = g.get_state()
    ours_grads = _grads(ours, [x, coeffs], g)
    g.set_state(state)
    reference_grads = _grads(reference, [x, coeffs], g)
    for a, b in zip(ours_grads, reference_grads):
        assert torch.allclose(a, b)
    assert torch.autograd.gradcheck(lambda x, c: masked_polynomial(x, mask, c), (x, coeffs))


def test_the_polynomial_without_a_mask_matches_autograd_on_the_formula():
    x, g = _input()
    coeffs = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    c2, c1, c0 = (coeffs[:, i].view(1, -1, 1, 1) for i in range(3))
    ours, reference = masked_polynomial(x, None, coeffs), c2 * x * x + c1 * x + c0
    assert torch.allclose(ours, reference)
    state = g.get_state()
    ours_grads = _grads(ours, [x, coeffs], g)
    g.set_state(state)
    for a, b in zip(ours_grads, _grads(reference, [x, coeffs], g)):
        assert torch.allclose(a, b)
    assert torch.autograd.gradcheck(lambda x, c: masked_polynomial(x, None, c), (x, coeffs))


def test_an_all_polynomial_site_takes_the_mask_free_path_until_its_mask_moves():
    x, g = _input()
    coeffs = torch.randn(4, 3, generator=g, dtype=torch.float64)
    kernel = MaskedKernel(torch.zeros(4, 1, 1), coeffs).double()
    blend = masked_polynomial(x, kernel.mask, kernel.coeffs)
    assert torch.allclose(kernel(x), blend)
    kernel.mask[1] = 1  # moved in place (RLNet moves masks): asked again, the ReLU comes back
    assert torch.allclose(kernel(x), masked_polynomial(x, kernel.mask, kernel.coeffs))
    assert torch.equal(kernel(x)[:, 1], F.relu(x)[:, 1])


def test_gated_passes_gradient_only_through_open_pixels():
    x, g = _input()
    gate = torch.rand(x.shape, generator=g) < 0.5
    (grad,) = torch.autograd.grad(gated(x, gate).sum(), [x])
    assert torch.equal(grad, gate.double())


def test_upsample_gate_is_repeat_interleave_cut_to_the_map():
    for h, w, height, width in [(2, 2, 6, 8), (3, 2, 7, 7), (1, 4, 3, 13)]:
        g = torch.rand(2, 3, -(-height // h), -(-width // w)) < 0.5  # one value per patch, border ones cut
        expected = g.repeat_interleave(h, 2).repeat_interleave(w, 3)[..., :height, :width]
        assert torch.equal(upsample_gate(g, h, w, height, width), expected)


def _patch_reference(x, sizes, coeffs):
    """Channel by channel and patch by patch, with explicit loops."""
    out = torch.empty_like(x)
    _, channels, height, width = x.shape
    for c in range(channels):
        h, w = sizes[c]
        if (h, w) == ZERO:
            out[:, c] = 0
        elif (h, w) == IDENTITY:
            c2, c1, c0 = coeffs[c]
            out[:, c] = c2 * x[:, c] ** 2 + c1 * x[:, c] + c0
        else:
            for top in range(0, height, h):
                for left in range(0, width, w):
                    patch = x[:, c, top:top + h, left:left + w]
                    out[:, c, top:top + h, left:left + w] = patch * (patch.mean((1, 2)) > 0).view(-1, 1, 1)
    return out


def test_patch_kernel_with_mixed_groups_matches_a_loop_per_patch():
    x, g = _input((2, 6, 7, 9))
    sizes = [(2, 2), IDENTITY, (3, 2), ZERO, (2, 2), (7, 9)]
    coeffs = torch.randn(6, 3, generator=g, dtype=torch.float64)
    for kernel_coeffs in (None, coeffs):
        kernel = PatchKernel(sizes, kernel_coeffs).double()
        used = torch.tensor([0.0, 1.0, 0.0]).repeat(6, 1) if kernel_coeffs is None else coeffs
        ours = kernel(x)
        reference = _patch_reference(x.detach(), sizes, used.double())
        assert torch.allclose(ours, reference)
        (grad,) = torch.autograd.grad(ours.sum(), [x])
        open_pixels = (reference != 0) | (x.detach() == 0)
        lin = torch.tensor([s == IDENTITY for s in sizes]).view(1, -1, 1, 1)
        slope = torch.where(lin, 2 * used[:, 0].double().view(1, -1, 1, 1) * x.detach()
                            + used[:, 1].double().view(1, -1, 1, 1), open_pixels.double())
        assert torch.allclose(grad, slope)


def test_patch_kernel_with_one_group_takes_the_whole_map_path():
    x, _ = _input((2, 3, 8, 8))
    kernel = PatchKernel([(2, 4)] * 3).double()
    assert torch.allclose(kernel(x), _patch_reference(x.detach(), [(2, 4)] * 3, None))


def test_masked_kernel_notices_coefficients_loaded_in_place():
    kernel = MaskedKernel(torch.zeros(2, 1, 1))
    x = torch.randn(1, 2, 3, 3)
    assert torch.equal(kernel(x), x)  # identity polynomial: the fast path
    state = kernel.state_dict()
    state["coeffs"] = torch.tensor([[0.5, 0.0, 1.0], [0.0, 2.0, 0.0]])
    kernel.load_state_dict(state)
    expected = torch.stack([0.5 * x[:, 0] ** 2 + 1.0, 2.0 * x[:, 1]], 1)
    assert torch.allclose(kernel(x), expected)


def test_kernels_keep_bf16():
    x = torch.randn(2, 3, 4, 4).bfloat16()
    mask = torch.rand(3, 4, 4) < 0.5
    assert MaskedKernel(mask.float())(x).dtype == torch.bfloat16
    assert MaskedKernel(mask.float(), torch.randn(3, 3))(x).dtype == torch.bfloat16
    assert PatchKernel([(2, 2), IDENTITY, ZERO], torch.randn(3, 3))(x).dtype == torch.bfloat16


def _channels_last_case(kernel, x):
    """The kernel on ``x`` laid out channels_last: the same values and input gradient as on the contiguous
    ``x``, and the output in the input's layout (masks and gates follow it)."""
    dense = x.detach().clone().requires_grad_()
    last = x.detach().clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    out_dense, out_last = kernel(dense), kernel(last)
    assert torch.allclose(out_dense, out_last)
    assert out_last.is_contiguous(memory_format=torch.channels_last)
    weight = torch.randn(x.shape, dtype=x.dtype)
    (a,) = torch.autograd.grad((out_dense * weight).sum(), [dense])
    (b,) = torch.autograd.grad((out_last * weight).sum(), [last])
    assert torch.allclose(a, b)


def test_kernels_agree_on_channels_last_maps():
    x, g = _input((2, 6, 7, 9))
    mask = (torch.rand(6, 7, 9, generator=g) < 0.5).double()
    coeffs = torch.randn(6, 3, generator=g, dtype=torch.float64)
    _channels_last_case(lambda v: masked_identity(v, mask), x)
    _channels_last_case(lambda v: masked_polynomial(v, mask, coeffs), x)
    _channels_last_case(lambda v: masked_polynomial(v, None, coeffs), x)
    _channels_last_case(lambda v: gated(v, mask), x)
    _channels_last_case(PatchKernel([(2, 2)] * 6).double(), x)
    _channels_last_case(PatchKernel([(2, 2), IDENTITY, (3, 2), ZERO, (2, 2), (7, 9)], coeffs).double(), x)


def test_upsample_gate_in_channels_last_order_is_the_same_gate():
    g = torch.rand(2, 3, 4, 5) < 0.5
    dense = upsample_gate(g, 2, 2, 7, 9)
    last = upsample_gate(g.contiguous(memory_format=torch.channels_last), 2, 2, 7, 9, nhwc=True)
    assert torch.equal(dense, last)
    assert last.stride(1) == 1  # channels innermost
