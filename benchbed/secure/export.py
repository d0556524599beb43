"""A benchbed model as a JAX function ``f(x, *weights)`` for SecretFlow SPU (``export``), under the
threat-model rules of ``benchbed.secure.lowering`` (which the price follows too):

- the server's weights are secret: they are positional arguments of the function, so SPU
  secret-shares them. Every BatchNorm that directly follows a conv is folded into that conv's
  weight and bias first (plaintext, on the server); a BN without a conv in front of it becomes a
  per-channel affine with a secret scale and shift;
- a polynomial that replaces ReLUs is a weight too when it was trained or is not the identity
  (AutoReP's quadratics): its coefficients are secret inputs, and every replaced pixel computes the
  full quadratic, so that nothing about their values shows in the program;
- the client's image is secret. Input normalisation (the ``Normalize`` layer) is done by the client
  in plaintext before sharing: ``f.preprocess(images)`` applies it, ``f`` itself starts after it;
- the architecture is public: ReLU masks, patch sizes and fixed (untrained) identity bypasses are
  numpy constants captured in the closure, so SPU compiles them in as public values.

The formulations are the cheap ones: a ReLU is ``maximum(x, 0)``; a masked site gathers its kept
pixels with public indices (free), ReLUs them, computes the other pixels' secret quadratic in Horner
form ``x·(c2·x + c1) + c0`` and puts everything back with one concatenate + inverse-permutation
gather (``.at[].set`` would compile to a slow loop); a patch site sum-pools (a mean would cost a
truncation), compares, broadcasts the gate with repeat and selects with ``where`` (multiplying by a
converted bool would cost a 64-bit b2a per pixel), with one comparison and one select for all its
patch sizes together; global average pooling before the classifier is a sum-pool with 1/(H·W)
folded into the linear weights. SPU runs ops one after the other, so a model's rounds add up along it.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.fx
from torch import nn

from benchbed.errors import BenchbedError
from benchbed.model.architectures import Normalize
from benchbed.model.sites import IDENTITY, ZERO, MaskedKernel, PatchKernel, ReLUKernel, ReLUSite
from benchbed.model.graph import bn_affine, folded_bn, is_batchnorm, single_user, trace
from benchbed.secure.lowering import secret_polynomial_channels


def _jax():
    try:
        import jax  # noqa: F401
        import jax.numpy as jnp
        from jax import lax
    except ImportError:
        raise BenchbedError("secure inference needs JAX and SecretFlow SPU: pip install 'benchbed[mpc]'") from None
    return jnp, lax


@dataclass
class _Step:
    node: str
    inputs: list[str]
    fn: Callable  # fn(weights, *input values) -> value


@dataclass
class _Program:
    steps: list[_Step] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    weight_names: list[str] = field(default_factory=list)
    input: str = ""
    output: str = ""
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def add_weight(self, name: str, value: np.ndarray | torch.Tensor) -> int:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().double().numpy()
        self.weights.append(np.ascontiguousarray(value, dtype=np.float32))
        self.weight_names.append(name)
        return len(self.weights) - 1


def _describe(node: torch.fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        m = modules[node.target]
        kind = type(m).__name__
        if type(m).__module__.startswith("torch.nn."):
            kind = f"nn.{kind}"
        return f"layer {kind} at {node.target!r}"
    if node.op == "call_function":
        name = getattr(node.target, "__name__", repr(node.target))
        module = getattr(node.target, "__module__", None) or ""
        return f"function {module + '.' if module else ''}{name}"
    if node.op == "call_method":
        return f"tensor method .{node.target}()"
    if node.op == "get_attr":
        return f"tensor attribute {node.target} used directly in forward"
    return f"{node.op} {node.target}"


def _unsupported(node: torch.fx.Node, modules: dict[str, nn.Module], why: str = "") -> BenchbedError:
    return BenchbedError(f"secure export does not support {_describe(node, modules)}"
                         + (f": {why}" if why else "")
                         + "; supported: ReLU sites, conv, linear, BatchNorm, adaptive average pooling, "
                           "residual adds, flatten")


def _shape(node: torch.fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise BenchbedError(f"secure export could not infer the shape at {node.name}")
    return tuple(meta.shape)


def _is_flatten(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_function" and node.target is torch.flatten:
        return _flatten_dims(node) == (1, -1)
    if node.op == "call_method" and node.target == "flatten":
        return _flatten_dims(node) == (1, -1)
    if node.op == "call_module" and isinstance(modules[node.target], nn.Flatten):
        m = modules[node.target]
        return (m.start_dim, m.end_dim) == (1, -1)
    return False


def _flatten_dims(node: torch.fx.Node) -> tuple[int, int]:
    args = list(node.args[1:]) + [None, None]
    start = node.kwargs.get("start_dim", args[0] if args[0] is not None else 0)
    end = node.kwargs.get("end_dim", args[1] if args[1] is not None else -1)
    return int(start), int(end)


def _plan(model: nn.Module, input_shape: Sequence[int]) -> _Program:
    jnp, lax = _jax()
    gm, modules = trace(model, input_shape)
    prog = _Program()
    nodes = list(gm.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise BenchbedError(f"secure export needs a model with one input, this one takes {len(placeholders)}")
    prog.input = placeholders[0].name
    alias: dict[str, str] = {}           # node -> node whose value it is (folded BN, normalisation, identity)
    linear_scale: dict[str, float] = {}  # linear node -> 1/(H·W) of the global pooling folded into it

    def ref(a: Any) -> str:
        if not isinstance(a, torch.fx.Node):
            raise BenchbedError(f"secure export expected a tensor argument, got {a!r}")
        return alias.get(a.name, a.name)

    def step(node: torch.fx.Node, inputs: list[Any], fn: Callable) -> None:
        prog.steps.append(_Step(node.name, [ref(a) for a in inputs], fn))

    for node in nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, torch.fx.Node):
                raise BenchbedError("secure export needs a model that returns one tensor of logits")
            prog.output = ref(out)
            continue
        if node.op == "call_module":
            m = modules[node.target]
            shape_in = _shape(node.args[0]) if node.args and isinstance(node.args[0], torch.fx.Node) else None
            if isinstance(m, Normalize):
                src = node.args[0]
                if src.op != "placeholder" or len(src.users) != 1 or prog.mean is not None:
                    raise BenchbedError("secure export needs Normalize to be the model's first layer: the client "
                                        "normalises its input in plaintext before secret-sharing it")
                prog.mean = m.mean.detach().cpu().double().numpy().reshape(1, -1, 1, 1)
                prog.std = m.std.detach().cpu().double().numpy().reshape(1, -1, 1, 1)
                alias[node.name] = src.name
            elif isinstance(m, nn.Conv2d):
                _plan_conv(prog, node, m, modules, alias, step, lax)
            elif is_batchnorm(m):
                if node.name in alias:  # folded into the conv in front of it
                    continue
                if shape_in is None or len(shape_in) != 4:
                    raise _unsupported(node, modules, f"BatchNorm on a tensor of shape {shape_in}")
                scale, shift = bn_affine(m)
                i = prog.add_weight(f"{node.target}.scale", scale.view(-1, 1, 1))
                j = prog.add_weight(f"{node.target}.shift", shift.view(-1, 1, 1))
                step(node, [node.args[0]], lambda w, x, i=i, j=j: x * w[i] + w[j])
            elif isinstance(m, nn.Linear):
                weight = m.weight.detach().cpu().double() * linear_scale.get(node.name, 1.0)
                i = prog.add_weight(f"{node.target}.weight", weight.t())
                if m.bias is not None:
                    j = prog.add_weight(f"{node.target}.bias", m.bias)
                    step(node, [node.args[0]], lambda w, x, i=i, j=j: x @ w[i] + w[j])
                else:
                    step(node, [node.args[0]], lambda w, x, i=i: x @ w[i])
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                _plan_pool(node, m, modules, shape_in, linear_scale, step)
            elif isinstance(m, ReLUSite):
                step(node, [node.args[0]], _site_fn(prog, m, node, shape_in, modules, jnp))
            elif isinstance(m, nn.ReLU):
                step(node, [node.args[0]], lambda w, x: jnp.maximum(x, 0))
            elif isinstance(m, (nn.Identity, nn.Dropout)):
                alias[node.name] = ref(node.args[0])
            elif isinstance(m, nn.Flatten):
                s, e = m.start_dim, m.end_dim
                step(node, [node.args[0]], lambda w, x, s=s, e=e: _flatten(jnp, x, s, e))
            else:
                raise _unsupported(node, modules)
        elif node.op in ("call_function", "call_method"):
            _plan_function(node, modules, alias, step, jnp)
        else:
            raise _unsupported(node, modules)
    return prog


def _plan_conv(prog: _Program, node, m: nn.Conv2d, modules, alias, step, lax) -> None:
    if m.padding_mode != "zeros":
        raise _unsupported(node, modules, f"padding_mode={m.padding_mode!r}")
    weight = m.weight.detach().cpu().double()
    bias = m.bias.detach().cpu().double() if m.bias is not None else None
    follower = folded_bn(node, modules)
    if follower is not None:
        scale, shift = bn_affine(modules[follower.target])
        weight = weight * scale.view(-1, 1, 1, 1)
        bias = shift if bias is None else bias * scale + shift
        alias[follower.name] = node.name
    if isinstance(m.padding, str):
        if m.padding == "valid":
            padding = [(0, 0), (0, 0)]
        else:  # "same" (stride 1): torch puts the extra pixel at the end
            padding = []
            for k, d in zip(m.kernel_size, m.dilation):
                total = d * (k - 1)
                padding.append((total // 2, total - total // 2))
    else:
        padding = [(p, p) for p in m.padding]
    i = prog.add_weight(f"{node.target}.weight", weight)
    j = prog.add_weight(f"{node.target}.bias", bias.view(-1, 1, 1)) if bias is not None else None
    stride, dilation, groups = tuple(m.stride), tuple(m.dilation), m.groups

    def conv(w, x, i=i, j=j):
        y = lax.conv_general_dilated(x, w[i], window_strides=stride, padding=padding, rhs_dilation=dilation,
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups)
        return y if j is None else y + w[j]

    step(node, [node.args[0]], conv)


def _plan_pool(node, m: nn.AdaptiveAvgPool2d, modules, shape_in, linear_scale, step) -> None:
    jnp, _ = _jax()
    if len(shape_in) != 4:
        raise _unsupported(node, modules, f"input of shape {shape_in}")
    _, c, height, width = shape_in
    out = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size, m.output_size)
    oh, ow = (height if out[0] is None else out[0]), (width if out[1] is None else out[1])
    if height % oh or width % ow:
        raise _unsupported(node, modules, f"a {height}x{width} map does not divide into {oh}x{ow} windows")
    kh, kw = height // oh, width // ow
    # Global pooling then flatten then linear: sum-pool and fold 1/(H·W) into the linear weights.
    fold = False
    flat = single_user(node)
    if (oh, ow) == (1, 1) and flat is not None and _is_flatten(flat, modules):
        lin = single_user(flat)
        if lin is not None and lin.op == "call_module" and isinstance(modules[lin.target], nn.Linear):
            linear_scale[lin.name] = 1.0 / (kh * kw)
            fold = True
    scale = None if fold else np.float32(1.0 / (kh * kw))

    def pool(w, x):
        n = x.shape[0]
        y = x.reshape(n, c, oh, kh, ow, kw).sum(axis=(3, 5))
        return y if scale is None else y * scale  # a public multiply costs one truncation

    step(node, [node.args[0]], pool)


def _flatten(jnp, x, start: int, end: int):
    nd = x.ndim
    start, end = start % nd, end % nd
    return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1:])


def _plan_function(node, modules, alias, step, jnp) -> None:
    target = node.target
    tensor_args = [a for a in node.args if isinstance(a, torch.fx.Node)]
    if target in (operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__iadd__"):
        if len(node.args) != 2 or node.kwargs:
            raise _unsupported(node, modules, "only a plain sum of two tensors")
        a, b = node.args
        if isinstance(a, torch.fx.Node) and isinstance(b, torch.fx.Node):
            step(node, [a, b], lambda w, x, y: x + y)
        elif isinstance(a, torch.fx.Node) and isinstance(b, (int, float)):
            step(node, [a], lambda w, x, b=float(b): x + np.float32(b))
        else:
            raise _unsupported(node, modules, "only a sum of tensors or a tensor and a number")
    elif target is torch.flatten or target == "flatten":
        s, e = _flatten_dims(node)
        step(node, [node.args[0]], lambda w, x, s=s, e=e: _flatten(jnp, x, s, e))
    elif target in ("view", "reshape") or target is torch.reshape:
        dims = node.args[1:] if target != torch.reshape else node.args[1]
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = dims[0]
        if any(isinstance(d, torch.fx.Node) for d in dims):
            # x.view(x.size(0), -1): the batch size is the only dynamic dimension we allow
            if not (isinstance(dims[0], torch.fx.Node) and dims[0].target == "size"
                    and dims[0].args[1:] == (0,) and not any(isinstance(d, torch.fx.Node) for d in dims[1:])):
                raise _unsupported(node, modules, "only x.view(x.size(0), ...) with constant sizes")
            rest = tuple(int(d) for d in dims[1:])
            step(node, [node.args[0]], lambda w, x, rest=rest: x.reshape((x.shape[0],) + rest))
        else:
            fixed = tuple(int(d) for d in dims)
            step(node, [node.args[0]], lambda w, x, fixed=fixed: x.reshape(fixed))
    elif target == "size":
        # only consumed by view/reshape above, which reads the batch size itself
        if any(u.target not in ("view", "reshape") and u.target is not torch.reshape for u in node.users):
            raise _unsupported(node, modules, "tensor sizes may only feed view/reshape")
        return
    elif target is torch.cat:
        tensors = node.args[0]
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        if not all(isinstance(t, torch.fx.Node) for t in tensors):
            raise _unsupported(node, modules, "only a concatenation of tensors")
        step(node, list(tensors), lambda w, *xs, dim=int(dim): jnp.concatenate(xs, axis=dim))
    elif target in ("contiguous",) or (target in ("clone",) and len(tensor_args) == 1):
        alias[node.name] = alias.get(node.args[0].name, node.args[0].name)
    else:
        raise _unsupported(node, modules)


# -- ReLU sites --------------------------------------------------------------------------------

def _site_fn(prog: _Program, site: ReLUSite, node, shape_in, modules, jnp) -> Callable:
    kernel = site.kernel
    if shape_in is None or len(shape_in) != 4:
        raise _unsupported(node, modules, f"a ReLU site on a tensor of shape {shape_in}")
    chw = tuple(shape_in[1:])
    if isinstance(kernel, ReLUKernel):
        return lambda w, x: jnp.maximum(x, 0)
    if isinstance(kernel, MaskedKernel):
        return _masked_fn(prog, str(node.target), kernel, chw, jnp)
    if isinstance(kernel, PatchKernel):
        return _patch_fn(prog, str(node.target), kernel, chw, jnp)
    raise BenchbedError(f"site {node.target} runs a {type(kernel).__name__}, which secure export does not know; "
                        "a method must freeze its sites to relu/masked/patch kernels")


def _masked_fn(prog: _Program, name: str, kernel: MaskedKernel, chw: tuple[int, int, int], jnp) -> Callable:
    """Kept pixels → ReLU, fixed identity pixels pass through, every other pixel → its channel's
    quadratic ``x·(c2·x + c1) + c0`` with secret coefficients (two secret products, two
    truncations); one concatenate + inverse gather puts the pixels back."""
    c, h, w = chw
    mask = kernel.mask.detach().cpu().expand(c, h, w).reshape(-1).numpy() != 0
    channel = np.repeat(np.arange(c), h * w)
    secret = secret_polynomial_channels(kernel)[channel]
    relu_idx = np.flatnonzero(mask).astype(np.int32)
    identity_idx = np.flatnonzero(~mask & ~secret).astype(np.int32)
    poly_idx = np.flatnonzero(~mask & secret).astype(np.int32)
    order = np.concatenate([relu_idx, identity_idx, poly_idx])
    if len(relu_idx) == len(order):
        return lambda w, x: jnp.maximum(x, 0)
    if len(identity_idx) == len(order):
        return lambda w, x: x
    inverse = np.argsort(order).astype(np.int32)
    poly_channel = channel[poly_idx].astype(np.int32)
    coeffs = prog.add_weight(f"{name}.coeffs", kernel.coeffs.detach().t()) if len(poly_idx) else None

    def masked(w, x):
        flat = x.reshape(x.shape[0], -1)
        parts = []
        if len(relu_idx):
            parts.append(jnp.maximum(flat[:, relu_idx], 0))
        if len(identity_idx):
            parts.append(flat[:, identity_idx])
        if len(poly_idx):
            c2, c1, c0 = (w[coeffs][k][poly_channel] for k in range(3))  # a public gather: free
            y = flat[:, poly_idx]
            parts.append(y * (c2 * y + c1) + c0)
        out = jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        return out[:, inverse].reshape(x.shape)

    return masked


def _patch_fn(prog: _Program, name: str, kernel: PatchKernel, chw: tuple[int, int, int], jnp) -> Callable:
    """Per (h, w) group of channels: sum-pool (zero-padded for ceil patches at the border) and repeat
    the sign over the patch. All groups share ONE comparison and ONE ``where``, so a site costs the
    rounds of one comparison and one select however many patch sizes it mixes. Linearized channels
    pass through, or compute their quadratic with secret coefficients as masked pixels do; zero
    channels become 0; one concatenate + inverse channel gather puts them back."""
    c, height, width = chw
    groups: dict[tuple[int, int], list[int]] = {}
    for ch, hw in enumerate(kernel.sizes.detach().cpu().tolist()):
        groups.setdefault(tuple(hw), []).append(ch)
    gated = []  # (patch h, patch w, grid h, grid w, channels)
    for (ph, pw), idx in sorted(groups.items()):
        if (ph, pw) not in (IDENTITY, ZERO):
            ph, pw = min(ph, height), min(pw, width)
            gated.append((ph, pw, -(-height // ph), -(-width // pw), len(idx)))
    gated_idx = np.asarray([ch for hw, idx in sorted(groups.items()) if hw not in (IDENTITY, ZERO) for ch in idx],
                           dtype=np.int32)
    linearized = np.asarray(groups.get(IDENTITY, []), dtype=np.int32)
    secret = secret_polynomial_channels(kernel)
    identity_idx, poly_idx = linearized[~secret[linearized]], linearized[secret[linearized]]
    zero_idx = np.asarray(groups.get(ZERO, []), dtype=np.int32)
    order = np.concatenate([gated_idx, identity_idx, poly_idx, zero_idx])
    coeffs = prog.add_weight(f"{name}.coeffs", kernel.coeffs.detach().t()) if len(poly_idx) else None
    inverse = np.argsort(order).astype(np.int32)
    permuted = not np.array_equal(order, np.arange(c))

    def gate_all(xs):
        n = xs.shape[0]
        sums, start = [], 0
        for ph, pw, gh, gw, k in gated:
            part = xs[:, start:start + k]
            if (gh * ph, gw * pw) != (height, width):
                part = jnp.pad(part, ((0, 0), (0, 0), (0, gh * ph - height), (0, gw * pw - width)))
            sums.append(part.reshape(n, k, gh, ph, gw, pw).sum(axis=(3, 5)).reshape(n, -1))
            start += k
        signs = (jnp.concatenate(sums, axis=1) if len(sums) > 1 else sums[0]) > 0  # one comparison
        gates, offset = [], 0
        for ph, pw, gh, gw, k in gated:
            g = signs[:, offset:offset + k * gh * gw].reshape(n, k, gh, gw)
            offset += k * gh * gw
            gates.append(jnp.repeat(jnp.repeat(g, ph, axis=2), pw, axis=3)[:, :, :height, :width])
        return jnp.concatenate(gates, axis=1) if len(gates) > 1 else gates[0]

    def patch(w, x):
        outs = []
        if len(gated_idx):
            # all of x only when the gated channels are all of them, in order (not when only ``order`` is)
            xs = x if np.array_equal(gated_idx, np.arange(c)) else x[:, gated_idx]
            outs.append(jnp.where(gate_all(xs), xs, 0))  # one select
        if len(identity_idx):
            outs.append(x[:, identity_idx])
        if len(poly_idx):
            c2, c1, c0 = (w[coeffs][k][poly_idx].reshape(1, -1, 1, 1) for k in range(3))  # a public gather: free
            y = x[:, poly_idx]
            outs.append(y * (c2 * y + c1) + c0)
        if len(zero_idx):
            xz = x[:, zero_idx]
            outs.append(xz - xz)  # a secret zero for free; a public zero map would be sealed at 24 B/pixel
        out = jnp.concatenate(outs, axis=1) if len(outs) > 1 else outs[0]
        return out[:, inverse] if permuted else out

    return patch


def export(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[Callable, list[np.ndarray]]:
    """JAX function ``f(x, *weights)`` computing the model's logits, and the model's weights (the
    secret inputs, BN folded). ``x`` is the client's input *after* the model's ``Normalize`` layer,
    which the client applies in plaintext: ``f.preprocess(images)`` does it in numpy.
    ``f.weight_names`` names the weights."""
    prog = _plan(model, tuple(input_shape))
    steps, output = prog.steps, prog.output
    first = prog.input

    def benchbed_model(x, *weights):
        env = {first: x}
        for s in steps:
            env[s.node] = s.fn(weights, *(env[i] for i in s.inputs))
        return env[output]

    mean, std = prog.mean, prog.std

    def preprocess(images) -> np.ndarray:
        x = images.detach().cpu().double().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, float)
        if mean is not None:
            x = (x - mean) / std
        return np.ascontiguousarray(x, dtype=np.float32)

    benchbed_model.preprocess = preprocess
    benchbed_model.weight_names = list(prog.weight_names)
    return benchbed_model, prog.weights
