"""DeepReDuce: stages and blocks read off site names, thinning, the configurations and the choice at
or under a budget, and the stage ranking on a model whose critical stage is known by construction."""
from __future__ import annotations

import torch
from torch import nn

import benchbed_plugins.deepreduce as dr
from benchbed.data.bundle import TrainingData
from benchbed.model.sites import ReLUSite, counted_sites, drelu_count, trace_shapes
from benchbed.plugin.types import EntryContext
from benchbed.run.suite import validate_options
from conftest import build_model

NARROW = ["relu", "layers.0.0.relu1", "layers.0.0.relu2", "layers.1.0.relu1", "layers.1.0.relu2",
          "layers.2.0.relu1", "layers.2.0.relu2"]


def test_stages_and_blocks_come_from_site_names():
    model = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    assert list(counted_sites(model)) == NARROW
    assert dr.stages(NARROW) == {"relu": ["relu"], "layers.0": NARROW[1:3], "layers.1": NARROW[3:5],
                                 "layers.2": NARROW[5:7]}
    assert dr.thinned(NARROW, "first") == ["relu", "layers.0.0.relu2", "layers.1.0.relu2", "layers.2.0.relu2"]
    assert dr.thinned(NARROW, "second") == ["relu", "layers.0.0.relu1", "layers.1.0.relu1", "layers.2.0.relu1"]
    assert dr.thinned(NARROW, "none") == NARROW


def test_configurations_and_the_choice_under_a_budget():
    by_stage = {"s1": ["s1.b.r1", "s1.b.r2"], "s2": ["s2.b.r1", "s2.b.r2"]}
    sizes = {"s1.b.r1": 100, "s1.b.r2": 100, "s2.b.r1": 10, "s2.b.r2": 10}
    configs = dr.configurations(["s1", "s2"], by_stage, sizes, "first")
    # k=0: nothing; k=1: s1 (200) and s1 thinned (100); k=2: all (220) and both thinned (110)
    assert [c.drelus for c in configs] == [0, 100, 110, 200, 220]
    assert dr.choose(configs, 150).drelus == 110 and dr.choose(configs, 150).thinned
    assert dr.choose(configs, 200) == next(c for c in configs if c.drelus == 200 and not c.thinned)
    assert dr.choose(configs, 50).drelus == 0, "below every configuration: the all-linear network"


def test_passing_over_a_stage_the_budget_cannot_hold():
    by_stage = {"s1": ["s1.b.r1", "s1.b.r2"], "s2": ["s2.b.r1", "s2.b.r2"], "s3": ["s3.b.r1", "s3.b.r2"]}
    sizes = {"s1.b.r1": 100, "s1.b.r2": 100, "s2.b.r1": 10, "s2.b.r2": 10, "s3.b.r1": 3, "s3.b.r2": 3}
    ranking = ["s1", "s2", "s3"]
    prefixes = dr.configurations(ranking, by_stage, sizes, "first")

    def both(budget):
        return dr.choose(prefixes, budget), dr.choose(prefixes + dr.passing_over(ranking, by_stage, sizes, "first",
                                                                                  budget), budget)

    paper, skip = both(50)
    assert paper.drelus == 0, "the k most critical stages: s1, thinned to 100, does not fit, so nothing does"
    assert (skip.stages, skip.thinned, skip.drelus, skip.passed_over) == (("s2", "s3"), False, 26, ("s1",))
    paper, skip = both(110)
    assert paper.drelus == skip.drelus == 110 and skip.stages == ("s1", "s2") and skip.thinned
    assert skip.passed_over == (), "s3 (3 thinned) did not fit either, but no kept stage ranks below it"
    paper, skip = both(100)
    assert paper == skip and (skip.stages, skip.thinned) == (("s1",), True), \
        "s1 thinned fills it, as s2 and s3 whole (26) would not; among equals the paper's choice"
    tie, order = dict(sizes, **{"s3.b.r1": 50, "s3.b.r2": 50}), ["s1", "s3", "s2"]  # s3 whole (100) = s1 thinned
    candidates = dr.configurations(order, by_stage, tie, "first") + dr.passing_over(order, by_stage, tie, "first", 100)
    assert any(c.drelus == 100 and c.passed_over == ("s1",) for c in candidates), "the tie is there"
    tied = dr.choose(candidates, 100)
    assert (tied.stages, tied.thinned, tied.passed_over) == (("s1",), True, ()), \
        "no stage passed over when the paper fits"
    paper, skip = both(1_000)
    assert paper == skip and paper.drelus == 226, "a budget that holds everything: the same choice"
    middle = ["s2", "s1", "s3"]
    skip = dr.choose(dr.passing_over(middle, by_stage, sizes, "first", 30), 30)
    assert (skip.stages, skip.drelus, skip.passed_over) == (("s2", "s3"), 26, ("s1",))
    assert dr.choose(dr.configurations(middle, by_stage, sizes, "first"), 30).drelus == 20
    # every stage set it builds contains the longest fitting prefix, so it never lands below the paper
    for budget in range(0, 240, 3):
        assert both(budget)[1].drelus >= both(budget)[0].drelus


class CriticalMiddle(nn.Module):
    """Three stages on 2-pixel inputs. Stage ``a`` and ``c`` see only positive inputs (their ReLUs act as
    identities); stage ``b`` computes relu(x1 − ½) and relu(½ − x1), whose sum |x1 − ½| decides the class.
    Only ``b``'s ReLUs matter, by construction."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.conv_b, self.conv_c, self.head = (nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1),
                                                            nn.Conv2d(2, 1, 1), nn.Conv2d(1, 2, 1))
        self.a = nn.ModuleDict({"block": nn.ModuleDict({"relu": ReLUSite()})})
        self.b = nn.ModuleDict({"block": nn.ModuleDict({"relu": ReLUSite()})})
        self.c = nn.ModuleDict({"block": nn.ModuleDict({"relu": ReLUSite()})})
        with torch.no_grad():
            self.conv_a.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            self.conv_a.bias.fill_(2.0)
            self.conv_b.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]).view(2, 2, 1, 1))
            self.conv_b.bias.copy_(torch.tensor([-2.5, 2.5]))
            self.conv_c.weight.fill_(1.0)
            self.conv_c.bias.fill_(2.0)
            self.head.weight.copy_(torch.tensor([0.0, 20.0]).view(2, 1, 1, 1))
            self.head.bias.copy_(torch.tensor([0.0, -20 * 2.25]))

    def forward(self, x):
        h = self.a["block"]["relu"](self.conv_a(x))
        h = self.b["block"]["relu"](self.conv_b(h))
        h = self.c["block"]["relu"](self.conv_c(h))
        return self.head(h).flatten(1)


def _toy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, 256, (n, 2, 1, 1), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    y = ((x[:, 0, 0, 0].float() / 255 - 0.5).abs() > 0.25).long()
    return x, y


def test_criticality_finds_the_critical_stage(tmp_path):
    teacher = CriticalMiddle().eval()
    trace_shapes(teacher, (2, 1, 1))
    for p in teacher.parameters():
        p.requires_grad_(False)
    train_x, train_y = _toy_data(2048, 0)
    val_x, val_y = _toy_data(512, 1)
    data = TrainingData("toy", train_x, train_y, val_x, val_y, num_classes=2, mean=(0.0, 0.0), std=(1.0, 1.0),
                        crop_padding=0, flip=False)
    options = validate_options(dr.Options, {"criticality": {"epochs": 2, "batch_size": 128, "lr": 0.001},
                                            "criticality_share": 0.5})
    ctx = EntryContext.create(method="deepreduce", budget=2, seed=0, data=data, teacher=teacher, options=options,
                              device=torch.device("cpu"), epochs=12.0, workdir=tmp_path, log=lambda m: None)
    student = CriticalMiddle()
    trace_shapes(student, (2, 1, 1))
    result = dr.build_mask(ctx=ctx, model=student)
    scores = result.info["criticality"]
    assert result.info["ranking"][0] == "b", scores
    assert scores["b"] > 0.95 and max(scores["a"], scores["c"]) < 0.8, scores
    assert result.info["kept_stages"] == ["b"] and drelu_count(student) == 2
    assert ctx.clock.epochs_used <= 12.0
