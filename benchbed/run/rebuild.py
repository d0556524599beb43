"""A suite's model and its checkpoint payload, both ways: a new model of the suite (``new_model``), the
payload saved of one (``payload``), and the model the core rebuilds from a payload with its own
architecture and kernels (``rebuilt``), refused unless it is the suite's model on this dataset
(``expectations``). The teachers, the entries and their scoring all go through here, so that what is
measured is always what was saved."""
from __future__ import annotations

import torch
from torch import nn

from benchbed.config import Suite
from benchbed.data.bundle import DataBundle
from benchbed.model.checkpoint import checkpoint_payload, model_from_payload
from benchbed.model.registry import ModelRegistry


def new_model(suite: Suite, data: DataBundle, models: ModelRegistry) -> nn.Module:
    return models.build(suite.model.name, num_classes=data.num_classes, input_shape=data.input_shape,
                        mean=data.mean, std=data.std, stem_relu=suite.model.stem_relu)


def payload(model: nn.Module, suite: Suite, data: DataBundle) -> dict:
    """The checkpoint payload of a model of this suite."""
    return checkpoint_payload(model, model_name=suite.model.name, num_classes=data.num_classes,
                              input_shape=data.input_shape, mean=data.mean, std=data.std)


def expectations(suite: Suite, data: DataBundle) -> dict:
    """What a payload must match to be a model of this suite on this dataset."""
    return dict(expect_model=suite.model.name, expect_classes=data.num_classes, expect_input_shape=data.input_shape,
                expect_mean=data.mean, expect_std=data.std)


def rebuilt(saved: dict, suite: Suite, data: DataBundle, models: ModelRegistry, device: torch.device,
            source: str) -> nn.Module:
    """The suite's model rebuilt from ``saved`` by the core, in eval mode on ``device``; ``source`` names
    it in errors."""
    return model_from_payload(saved, source, models=models, **expectations(suite, data)).to(device).eval()
