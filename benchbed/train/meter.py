"""What an entry computes, counted by the core: every call of every convolution and linear layer of the
models it is handed (the student, and its copies of the teacher), however the call is made — the
model's ``__call__``, its ``forward``, a submodule, a deep copy, a batch under ``torch.func.vmap``.

The unit is the training-image equivalent: one forward and one backward of the whole student on one
image, three forwards' worth of multiply-accumulates. A layer call costs its multiply-accumulates
three times when its weights train (forward, backward to its input, backward to its weights), twice
when grad is on but only its input needs one (an attack's step), once otherwise. So a training step
is one training image per image, a no-grad forward of the whole model a third (``FORWARD_SHARE``), a
PGD step two thirds, a distillation pass of the teacher a third, and a forward of the part of the
network after a probed site its share of the model's multiply-accumulates. BatchNorm,
sites and element-wise work are not counted: the linear layers dominate and the rule is the same for
every method."""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import torch
from torch import nn

from benchbed.errors import BudgetExceeded
from benchbed.model.passes import probe_forward

METERED = (nn.Conv2d, nn.Linear)
# A forward of the whole model on one image, in training images (forward + both backwards).
FORWARD_SHARE = 1 / 3


def _true_numel(t: torch.Tensor) -> int:
    """Elements of ``t`` with every ``vmap`` dimension it hides: a vmapped call does all of them."""
    functorch = getattr(torch._C, "_functorch", None)
    while functorch is not None and functorch.is_batchedtensor(t):
        t = functorch.get_unwrapped(t)
    return t.numel()


def _macs_per_output(module: nn.Module) -> int:
    weight = module.weight
    return weight.numel() // weight.shape[0]


def forward_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward of ``model`` on one image of ``input_shape``."""
    total = [0]

    def count(module, inputs, output) -> None:
        total[0] += output.numel() // output.shape[0] * _macs_per_output(module)

    probe_forward(model, input_shape, {m: count for m in model.modules() if isinstance(m, METERED)})
    return total[0]


def macs_after(model: nn.Module, input_shape: Sequence[int], module: nn.Module) -> int:
    """Multiply-accumulates of the layers that run after ``module`` in one forward: what a probe at
    ``module`` re-runs at most (a layer that runs later but does not read its output, such as a
    block's shortcut, is counted too: a plan on it errs on the safe side)."""
    order: list[int] = []

    def mark(m, inputs, output) -> None:
        order.append(-1)

    def count(m, inputs, output) -> None:
        order.append(output.numel() // output.shape[0] * _macs_per_output(m))

    hooks: dict[nn.Module, Callable] = {m: count for m in model.modules() if isinstance(m, METERED)}
    hooks[module] = mark
    probe_forward(model, input_shape, hooks)
    return sum(order[order.index(-1) + 1:]) if -1 in order else 0


def forward_share_after(model: nn.Module, input_shape: Sequence[int], module: nn.Module) -> float:
    """The share of a forward's multiply-accumulates that runs after ``module``: what the meter charges a
    probe that re-runs the network from there, as a fraction of a whole forward."""
    return macs_after(model, input_shape, module) / max(1, forward_macs(model, input_shape))


class Meter:
    """Counts the work of the watched models into ``clock`` and into a tally of its own, which the core
    reads (a plugin that rewrites the clock does not rewrite the tally). ``unit_macs``: the
    multiply-accumulates of one forward of the student on one image."""

    def __init__(self, clock, unit_macs: int):
        self.clock = clock
        self.unit = 3 * max(1, unit_macs)
        self._tally: dict[str, float] = defaultdict(float)
        self._handles: list[tuple[nn.Module, torch.utils.hooks.RemovableHandle]] = []
        self.active = True

    def total(self) -> float:
        return sum(self._tally.values())

    def breakdown(self) -> dict[str, float]:
        """Training images by what was computed (``student training``, ``teacher forward``, …)."""
        return {kind: round(v, 3) for kind, v in sorted(self._tally.items())}

    def watch(self, model: nn.Module, role: str) -> None:
        for module in model.modules():
            if isinstance(module, METERED):
                self._handles.append((module, module.register_forward_hook(self._hook(role))))

    def _hook(self, role: str) -> Callable:
        def count(module, inputs, output) -> None:
            if not self.active or not isinstance(output, torch.Tensor):
                return
            grad = torch.is_grad_enabled()
            weights = grad and module.weight.requires_grad
            to_input = grad and bool(inputs) and isinstance(inputs[0], torch.Tensor) and inputs[0].requires_grad
            factor = 3 if weights else 2 if to_input else 1
            units = _true_numel(output) * _macs_per_output(module) * factor / self.unit
            kind = f"{role} {'training' if weights else 'gradient' if to_input else 'forward'}"
            self._tally[kind] += units
            self.clock.usage += units
            limit = self.clock.hard_limit()
            if limit is not None and self.total() > limit:
                raise BudgetExceeded(f"used {self.total() / self.clock.train_size:.2f} epochs of training against a "
                                     f"budget of {self.clock.epochs:g} and was stopped")
        return count

    def intact(self) -> bool:
        """Whether every hook is still on its layer (a plugin that removed one evaded the meter)."""
        return all(handle.id in module._forward_hooks for module, handle in self._handles)

    def stop(self) -> None:
        self.active = False
        for _, handle in self._handles:
            handle.remove()
        self._handles.clear()


def meter_entry(clock, student: nn.Module, teachers: Sequence[nn.Module], input_shape: Sequence[int]) -> Meter:
    """The meter of one entry: everything the student and the entry's teachers compute, in training
    images of the student, counted into ``clock``."""
    meter = Meter(clock, forward_macs(student, input_shape))
    meter.watch(student, "student")
    for teacher in teachers:
        meter.watch(teacher, "teacher")
    return meter
