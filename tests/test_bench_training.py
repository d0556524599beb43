"""Speed of the harness's training loop against a plain hand-written loop on the same model and data.

Both train resnet_narrow on digits for three epochs (batch 64, SGD, no augmentation) and measure
validation accuracy after every epoch, as model selection needs; the harness adds its compute
clock, lr schedule, device-side batching and best-epoch bookkeeping. Compare the two in the
benchmark table (group ``training-loop``)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from benchbed.config import TrainRecipe
from benchbed.train.loop import fit
from benchbed.train.session import Session
from conftest import build_model, load_dataset

BATCH = 64
EPOCHS = 3


@pytest.fixture(scope="module")
def data():
    return dataclasses.replace(load_dataset("digits"), crop_padding=0, flip=False)


def _model(data):
    torch.manual_seed(0)
    return build_model("resnet_narrow", num_classes=10, input_shape=data.input_shape, mean=data.mean, std=data.std)


def harness_epoch(data):
    model = _model(data)
    ctx = Session.create(data, torch.device("cpu"), seed=0)
    fit(model, ctx, TrainRecipe(epochs=EPOCHS, lr=0.05, batch_size=BATCH, schedule="constant", nesterov=False))


def plain_epoch(data):
    model = _model(data)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x_all, y_all = data.train_x.float() / 255, data.train_y
    x_val = data.val_x.float() / 255
    for _ in range(EPOCHS):
        order = torch.randperm(len(y_all))
        model.train()
        for start in range(0, len(y_all) - BATCH + 1, BATCH):
            idx = order[start:start + BATCH]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            (model(x_val).argmax(1) == data.val_y).float().mean().item()


@pytest.mark.benchmark(group="training-loop")
def test_harness_training_loop(benchmark, data):
    benchmark.pedantic(harness_epoch, args=(data,), rounds=8, warmup_rounds=1)


@pytest.mark.benchmark(group="training-loop")
def test_plain_training_loop(benchmark, data):
    benchmark.pedantic(plain_epoch, args=(data,), rounds=8, warmup_rounds=1)
