"""How the core looks into a model without training it: an eval-mode context that restores the
model's own mode whatever happens, forward hooks attached for one block, and batched no-grad passes
with them. Site tracing, DaPa statistics, mismatch ranking, distortion probes and the secure-cost
trace all read a model through these."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

Hook = Callable[[nn.Module, tuple, object], object]


@torch.no_grad()
@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; its own mode is restored afterwards, whatever happens."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def forward_hooks(hooks: Mapping[nn.Module, Hook]) -> Iterator[None]:
    """``hooks`` (module -> forward hook ``hook(module, inputs, output)``) attached for the block only."""
    handles = [m.register_forward_hook(h) for m, h in hooks.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def observe(model: nn.Module, images: torch.Tensor, hooks: Mapping[nn.Module, Hook], batch_size: int = 256) -> None:
    """Eval-mode, no-grad forward passes of ``images`` in batches of ``batch_size`` with ``hooks``
    attached: what the core reads off a model for statistics over a set of images."""
    with eval_mode(model), forward_hooks(hooks):
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])


def probe_forward(model: nn.Module, input_shape: Sequence[int], hooks: Mapping[nn.Module, Hook] | None = None) -> None:
    """One eval-mode, no-grad forward pass of a zero image of ``input_shape`` with ``hooks``: how the
    core reads a model's structure."""
    param = next(model.parameters())
    observe(model, torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype), hooks or {})
