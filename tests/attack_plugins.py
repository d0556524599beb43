"""Misbehaving method plugins, each a ``build_mask`` that attacks one published number from inside its
entry's own process (issue 38's cases). Every one is careless or clever, not a sandbox escape: it
patches what it can import, reads what it can find, writes where its entry writes, and exits."""
from __future__ import annotations

import copy
import gc
import os
import time

import torch
import torch.nn.functional as F

from benchbed.api import MaskResult, counted_sites


def _zero_masks(model) -> None:
    for site in counted_sites(model).values():
        site.set_mask(torch.zeros(site.shape))


def patch_counter(ctx, model):
    """Makes every DReLU count in its process read 0, and hands back the all-ReLU model."""
    import benchbed.model.sites as site_module
    import benchbed.run.scoring as scoring

    site_module.drelu_count = scoring.drelu_count = lambda *args, **kwargs: 0
    return MaskResult(model)


def patch_evaluation(ctx, model):
    """Makes the core's evaluation in its process answer 99.9% for anything, on a zero-mask model."""
    import benchbed.robustness.evaluate as evaluate
    import benchbed.run.scoring as scoring

    forged = lambda *args, **kwargs: {"clean_accuracy": 0.999, "val_accuracy": 0.999, "columns": {}}  # noqa: E731
    evaluate.evaluate_model = scoring.evaluate_model = forged
    _zero_masks(model)
    return MaskResult(model)


def write_own_result(status: str):
    """Writes its entry's result file itself — its status ``status``, 0 DReLUs, 99.9% — with the
    all-ReLU model as the checkpoint, and exits before the core can write anything."""

    def attack(ctx, model):
        from benchbed.model.checkpoint import checkpoint_payload

        data = ctx.data
        payload = checkpoint_payload(model, model_name="resnet_narrow", num_classes=data.num_classes,
                                     input_shape=data.input_shape, mean=data.mean, std=data.std)
        record = {"status": status, "drelus": 0, "relus": 0, "metrics": {"clean_accuracy": 0.999}, "entry": "forged",
                  "compute": {"used": {"epochs": 0.0, "seconds": 0.0}}}
        torch.save({"record": record, "payload": payload}, ctx.workdir / "result.pt")
        os._exit(0)

    return attack


def train_around_the_meter(cpu_seconds: float):
    """Trains a copy of its model whose layers' hooks it cleared (the meter's among them) until its process
    has used ``cpu_seconds`` of CPU time, and hands back the trained weights on a zero-mask model."""

    def attack(ctx, model):
        hidden = copy.deepcopy(model).train()
        for module in hidden.modules():
            module._forward_hooks.clear()
        optimizer = torch.optim.SGD(hidden.parameters(), lr=0.01)
        x = ctx.data.train_x[:64].float().div(255).contiguous(memory_format=torch.channels_last)
        y = ctx.data.train_y[:64]
        while time.process_time() < cpu_seconds:
            F.cross_entropy(hidden(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
        model.load_state_dict(hidden.state_dict())
        _zero_masks(model)
        return MaskResult(model)

    return attack


def test_split_objects() -> list:
    """What of its process's objects could be the test split: a bundle holding test images, or any tensor
    of the test split's shape (digits: 20% of each class of scikit-learn's 1,797 images)."""
    from benchbed.data.bundle import DataBundle

    test_images = 359
    objects = gc.get_objects()
    return [o for o in objects if isinstance(o, DataBundle) and len(o.test_y) > 0] + \
        [o for o in objects if isinstance(o, torch.Tensor) and o.dim() == 4 and o.shape[0] == test_images]


def look_for_the_test_split(before: set[int]):
    """Searches its process's objects for the test split and reports as its setup what it found that its
    process did not inherit from before the run (``before``: the ids of such objects then, a test's own)."""

    def attack(ctx, model):
        found = [o for o in test_split_objects() if id(o) not in before]
        ctx.setup["test_objects_found"] = len(found)
        _zero_masks(model)
        return MaskResult(model)

    return attack
