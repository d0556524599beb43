"""Clean accuracy: the share of test images classified right, and the validation split's (what
checkpoints are selected on, recorded beside it). A metric like any other, contributed through the
``metrics`` hook, but measured on every entry whatever the suite turns on (``always``)."""
from __future__ import annotations

from torch import nn

from benchbed.config import Strict
from benchbed.data.bundle import DataBundle
from benchbed.robustness.registry import Metric
from benchbed.train.loop import accuracy


class CleanSettings(Strict):
    """Clean accuracy takes no settings: every test image, and the validation split."""


def _measure(model: nn.Module, data: DataBundle, settings: CleanSettings, batch_size: int, seed: int,
             progress) -> dict:
    progress("evaluating: clean and validation accuracy", 0, 1)
    return {"clean_accuracy": accuracy(model, data.test_x, data.test_y, batch_size),
            "val_accuracy": accuracy(model, data.val_x, data.val_y, batch_size), "clean": {"images": len(data.test_y)}}


CLEAN_METRIC = Metric(
    "clean", CleanSettings, _measure, columns={"clean_accuracy": "clean acc %"},
    sample_size=lambda result: result["clean"]["images"], always=True,
    # a forward of every test and validation image: ``benchbed plan`` charges it from the splits' sizes,
    # which a metric's cost does not see
    cost=lambda s, classes: (0.0, 0.0),
    description="clean test accuracy (and validation accuracy), measured on every entry")
