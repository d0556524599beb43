"""Models by name. Any plugin contributes architectures through the ``models`` hook (the core's
built-ins arrive the same way, ``benchbed.model.architectures``); a run builds every model, teachers
and checkpoints included, through the registry its plugins make."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from torch import nn

from benchbed.model.sites import trace_shapes
from benchbed.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """A named architecture. ``build(num_classes=, in_channels=, mean=, std=, stem_relu=)`` returns the
    model with every ReLU its own ``ReLUSite`` (``benchbed.api.convert_relus`` turns a model with
    ``nn.ReLU`` modules into one) and its input normalisation as its first layer."""

    name: str
    build: Callable[..., nn.Module]
    description: str = ""


class ModelRegistry(Registry[ModelSpec]):
    def __init__(self, entries: Iterable[tuple[str, ModelSpec]]):
        super().__init__("model", "models", entries)

    def build(self, name: str, *, num_classes: int, input_shape: Sequence[int], mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, stem_relu: bool = True) -> nn.Module:
        """Build model ``name`` and trace its site shapes for ``input_shape`` = (C, H, W).

        ``stem_relu``: keep the ReLU after the stem conv as a site (True, the knapsack and RLNet models)
        or build the model without it (False, the SNL and AutoReP models). The choice is kept in
        ``model.build_options`` so that a checkpoint rebuilds the same architecture."""
        spec = self[name]
        channels = input_shape[0]
        model = spec.build(num_classes=num_classes, in_channels=channels, mean=mean or [0.0] * channels,
                                       std=std or [1.0] * channels, stem_relu=stem_relu)
        model.build_options = {"stem_relu": stem_relu}
        trace_shapes(model, input_shape)
        return model
