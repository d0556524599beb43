"""A model as a graph of the layers benchbed reads as wholes (``torch.fx``), and the BatchNorm algebra
on it: which BatchNorm sits on a convolution alone, and its eval-mode affine. Secure export and
pricing read the graph (``benchbed.secure.lowering``), and evaluation folds BatchNorms into their
convolutions on a copy (``fold_batchnorms``): the same network, one pass fewer over every map."""
from __future__ import annotations

import copy
from collections import Counter
from typing import Sequence

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from benchbed.errors import BenchbedError, first_line
from benchbed.model.architectures import Normalize
from benchbed.model.dual_bn import DualBatchNorm2d
from benchbed.model.passes import eval_mode
from benchbed.model.sites import ReLUSite

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
            raise BenchbedError("torch.fx cannot trace the model, which secure export and pricing read "
                                f"({first_line(exc)})") from None
        gm = torch.fx.GraphModule(model, graph)
        param = next(iter(list(model.parameters()) + list(model.buffers())), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(torch.zeros(1, *input_shape, device=device, dtype=dtype))
        except Exception as exc:  # a shape or type the model does not take
            raise BenchbedError(f"the traced model does not run on an input of shape {tuple(input_shape)} "
                                f"({first_line(exc)})") from None
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


def fold_batchnorms(model: nn.Module, input_shape: Sequence[int]) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``model`` whose BatchNorms that sit alone on a convolution are folded into
    its weights (``w·scale``, ``b·scale + shift``) and replaced by identities, with how many were; the
    model itself when it cannot be traced (a third party's control flow), none folded. A dual BN
    (RLNet's) stays: a pass picks one of its two BatchNorms."""
    try:
        gm, modules = trace(model, input_shape)
    except BenchbedError:
        return model, 0
    calls = Counter(str(node.target) for node in gm.graph.nodes if node.op == "call_module")
    pairs = [(str(node.target), str(bn.target)) for node in gm.graph.nodes
             if node.op == "call_module" and isinstance(modules[node.target], nn.Conv2d)
             and calls[str(node.target)] == 1  # a conv called twice has two followers
             for bn in [folded_bn(node, modules)]
             if bn is not None and type(modules[bn.target]) is nn.BatchNorm2d
             and calls[str(bn.target)] == 1 and modules[bn.target].running_var is not None]
    folded = copy.deepcopy(model).eval()
    for conv_name, bn_name in pairs:
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        scale, shift = bn_affine(bn)  # float64 on the CPU
        weight = conv.weight.detach()
        bias = conv.bias.detach().cpu().double() if conv.bias is not None else torch.zeros_like(scale)
        conv.weight = nn.Parameter((weight.cpu().double() * scale.view(-1, 1, 1, 1)).to(weight), requires_grad=False)
        conv.bias = nn.Parameter((bias * scale + shift).to(weight), requires_grad=False)
        parent, _, child = bn_name.rpartition(".")
        setattr(folded.get_submodule(parent) if parent else folded, child, nn.Identity())
    return folded, len(pairs)
