"""The core's compute meter against multiply-accumulates counted by hand: every kind of pass an entry can
run is charged at what it computes, however the model is called."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import vmap

from benchbed.train.compute import ComputeClock
from benchbed.train.meter import FORWARD_SHARE, Meter, forward_share_after, meter_entry
from conftest import build_model

SHAPE = (1, 8, 8)


def _model():
    torch.manual_seed(0)
    return build_model("resnet_narrow", num_classes=10, input_shape=SHAPE)


def _macs_by_hand(model, x: torch.Tensor | None = None) -> list[tuple[nn.Module, int]]:
    """(layer, multiply-accumulates on one image) of every conv and linear layer, in call order, from
    the layers' own sizes: a conv's output elements × in/groups × kh × kw, a linear's in × out."""
    found = []

    def hook(m, inputs, output):
        if isinstance(m, nn.Conv2d):
            per = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            found.append((m, output[0].numel() * per))
        else:
            found.append((m, m.in_features * m.out_features))

    model = copy.deepcopy(model)
    for m in model.modules():
        m._forward_hooks.clear()  # a meter's: this count is the test's own
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *SHAPE) if x is None else x[:1])
    for h in handles:
        h.remove()
    return found


def _metered(n_train: int = 100):
    model = _model()
    total = sum(m for _, m in _macs_by_hand(model))
    clock = ComputeClock(None, None, n_train)
    meter = Meter(clock, total)
    meter.watch(model, "student")
    return model, meter, clock, total


def test_a_training_pass_is_one_training_image_per_image():
    model, meter, clock, _ = _metered()
    model.train()(torch.rand(5, *SHAPE)).sum().backward()
    assert meter.total() == pytest.approx(5.0) and clock.usage == pytest.approx(5.0)
    assert meter.breakdown() == {"student training": 5.0}


def test_a_no_grad_forward_is_a_third_and_an_attack_step_two_thirds():
    model, meter, _, _ = _metered()
    with torch.no_grad():
        model(torch.rand(6, *SHAPE))
    assert meter.total() == pytest.approx(6 * FORWARD_SHARE)
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(3, *SHAPE, requires_grad=True)  # a PGD step: gradient to the input only
    model(x).sum().backward()
    assert meter.total() == pytest.approx(6 / 3 + 3 * 2 / 3)
    assert set(meter.breakdown()) == {"student forward", "student gradient"}


def test_calls_around_the_root_module_are_metered_too():
    """An own loop through ``model.forward``, a submodule or a deep copy is still counted."""
    model, meter, _, total = _metered()
    stage_input = torch.rand(4, 16, 8, 8)
    stage = sum(macs for _, macs in _macs_by_hand(model.layers[0], stage_input))
    with torch.no_grad():
        model.forward(torch.rand(2, *SHAPE))   # bypasses the root's hooks
        model.layers[0](stage_input)           # a stage alone
        copy.deepcopy(model)(torch.rand(1, *SHAPE))  # a copy keeps the meter
    assert meter.total() == pytest.approx((2 * total + 4 * stage + total) / (3 * total))


def test_vmapped_probes_count_every_probe():
    model, meter, _, total = _metered()
    x = torch.rand(4, *SHAPE)
    with torch.no_grad():
        vmap(lambda d: model.eval()(x + d))(torch.zeros(7, 4, *SHAPE))  # seven probes of four images each
    assert meter.total() == pytest.approx(7 * 4 * FORWARD_SHARE)


def test_the_share_after_a_site_is_the_macs_of_the_later_layers():
    model = _model()
    layers = _macs_by_hand(model)
    total = sum(m for _, m in layers)
    site = model.layers[2][0].relu2  # the last block's output ReLU: only the classifier runs after it
    fc = layers[-1][1]
    assert forward_share_after(model, SHAPE, site) == pytest.approx(fc / total)
    assert forward_share_after(model, SHAPE, model.relu) == pytest.approx((total - layers[0][1]) / total)


def test_the_teacher_is_metered_and_the_clock_can_be_rewritten_but_not_the_meter(make_ctx):
    ctx, student = make_ctx(None, epochs=1.0)
    n = len(ctx.data.train_y)
    with torch.no_grad():
        ctx.teacher(torch.rand(30, *SHAPE))
    assert ctx.clock.usage == pytest.approx(30 / 3)
    clock = ComputeClock(1.0, None, n)
    meter = meter_entry(clock, student, [ctx.teacher], SHAPE)
    student.train()(torch.rand(10, *SHAPE)).sum().backward()
    clock.usage = 0.0  # a plugin rewriting its clock
    assert meter.total() == pytest.approx(10.0) and clock.overrun(meter.total()) is None
    assert meter.intact()
    next(m for m in student.modules() if isinstance(m, nn.Conv2d))._forward_hooks.clear()
    assert not meter.intact(), "a plugin that removes the meter from a layer is caught"
    meter.stop()


def test_a_loop_past_the_budget_is_stopped_where_it_stands():
    from benchbed.errors import BudgetExceeded

    model = _model()
    clock = ComputeClock(0.1, None, 100)  # 10 training images, stopped past ~2% + 512
    meter = Meter(clock, sum(m for _, m in _macs_by_hand(model)))
    meter.watch(model, "student")
    with pytest.raises(BudgetExceeded, match="budget of 0.1"):
        for _ in range(100):
            model.train()(torch.rand(64, *SHAPE)).sum().backward()
    assert 522 <= meter.total() <= 522 + 64
