"""DeepReDuce: stages and blocks read off site names, thinning, the configurations and the choice at
or under a budget, the stage ranking on a model whose critical stage is known by construction, the
criticality formula against hand computations, the protocol's defaults (cull, reshape, how the stage
trials train), channel halving, and the setup facts it reports."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
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
    info = result.info
    accuracy, scores = info["stage_accuracy"], info["criticality"]
    assert info["ranking"][0] == "b", scores
    assert accuracy["b"] > 0.95 and max(accuracy["a"], accuracy["c"]) < 0.8, accuracy
    assert info["linear_accuracy"] < 0.8, "the all-linear trial cannot tell |x1 - 1/2| either"
    assert info["stage_relus"] == {"a": 2, "b": 2, "c": 1}
    for stage, log in (("a", 1.098612), ("b", 1.098612), ("c", 0.693147)):  # ln 3, ln 3, ln 2
        assert scores[stage] == pytest.approx((accuracy[stage] - info["linear_accuracy"]) / log, rel=1e-5)
    assert info["kept_stages"] == ["b"] and drelu_count(student) == 2
    assert (info["cull"], info["reshape"], info["trials_from"], info["trials_distilled"]) == \
        ("skip", "none", "teacher", True), "matched compute: benchbed's defaults"
    assert ctx.clock.epochs_used <= 12.0


def test_criticality_formula_against_hand_computation():
    # C_k = (A_k - A_lin) / ln(1 + R_k), worked by hand: ln(1001) = 6.908755, ln(262145) = 12.476104,
    # ln(32769) = 10.397238
    assert dr.criticality_score(0.70, 0.40, 1000) == pytest.approx(0.30 / 6.908755, rel=1e-6)
    assert dr.criticality_score(0.70, 0.40, 1000) == pytest.approx(0.0434231, rel=1e-5)
    wide, narrow = dr.criticality_score(0.62, 0.30, 262_144), dr.criticality_score(0.60, 0.30, 32_768)
    assert wide == pytest.approx(0.0256479, rel=1e-5) and narrow == pytest.approx(0.0288538, rel=1e-5)
    assert narrow > wide, "fewer ReLUs buying nearly as much accuracy rank higher than accuracy alone says"
    assert dr.criticality_score(0.30, 0.30, 5) == 0.0 and dr.criticality_score(0.25, 0.30, 5) < 0


STAGE_ACCURACY = {"relu": 0.50, "layers.0": 0.70, "layers.1": 0.68, "layers.2": 0.60, dr.LINEAR: 0.40}


def _narrow_ctx(tmp_path, protocol, budget, options=None):
    g = torch.Generator().manual_seed(0)
    x = lambda n: torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)  # noqa: E731
    y = lambda n: torch.randint(0, 10, (n,), generator=g)  # noqa: E731
    data = TrainingData("toy", x(64), y(64), x(32), y(32), num_classes=10, mean=(0.0,), std=(1.0,),
                        crop_padding=0, flip=False)
    teacher = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8)).eval()
    return EntryContext.create(method="deepreduce", budget=budget, seed=0, data=data, teacher=teacher,
                               options=validate_options(dr.Options, options or {}), device=torch.device("cpu"),
                               epochs=10.0, workdir=tmp_path, log=lambda m: None, protocol=protocol)


@pytest.fixture
def fake_trials(monkeypatch):
    """Stage trials that return made-up accuracies at once, recording what each was given."""
    calls = []

    def fake_fit(model, ctx, recipe, *, budget_epochs=None, loss_fn=None, label="", **rest):
        stage = label.removeprefix(f"{ctx.method} criticality of ")
        calls.append(SimpleNamespace(stage=stage, model=model, loss_fn=loss_fn, budget_epochs=budget_epochs))
        return SimpleNamespace(best_val_accuracy=STAGE_ACCURACY[stage], epochs=recipe.epochs)

    monkeypatch.setattr(dr, "fit", fake_fit)
    return calls


def _hand_scores():
    relus = {"relu": 1024, "layers.0": 2048, "layers.1": 1024, "layers.2": 512}  # the narrow ResNet's stages
    return {s: (STAGE_ACCURACY[s] - STAGE_ACCURACY[dr.LINEAR]) / math.log(1 + r) for s, r in relus.items()}


def test_paper_protocol_defaults_prefix_and_reshape_and_trains_trials_from_scratch(tmp_path, fake_trials):
    ctx = _narrow_ctx(tmp_path, "paper", 256)
    student = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    student.load_state_dict(ctx.teacher.state_dict())
    info = dr.build_mask(ctx=ctx, model=student).info
    assert info["criticality"] == pytest.approx(_hand_scores())
    # by hand: layers.1 0.28/6.932 = 0.0404 > layers.0 0.30/7.625 = 0.0393 > layers.2 0.0321 > relu 0.0144
    assert info["ranking"] == ["layers.1", "layers.0", "layers.2", "relu"]
    assert (info["cull"], info["reshape"]) == ("prefix", "halve_channels")
    assert len(fake_trials) == 5 and fake_trials[-1].stage == dr.LINEAR, "four stages and the all-linear network"
    assert all(c.loss_fn is None for c in fake_trials), "cross-entropy: the paper distils only its final networks"
    teacher_conv = next(p for p in ctx.teacher.parameters() if p.dim() == 4)
    for call in fake_trials:
        assert not torch.equal(next(p for p in call.model.parameters() if p.dim() == 4), teacher_conv), "from scratch"
    assert all(torch.equal(next(a.model.parameters()), next(fake_trials[0].model.parameters()))
               for a in fake_trials), "the same fresh start for every trial"
    # layers.1 thinned is 512 DReLUs; the paper's prefix reaches 256 only by halving its channels
    assert (info["kept_stages"], info["reshaped"], info["drelus_used"]) == (["layers.1"], ["layers.1"], 256)
    assert drelu_count(student) == 256
    assert ctx.setup == {"criticality": ctx.setup["criticality"], "cull": "prefix", "stages_kept": "layers.1",
                         "stages_passed_over": "", "stages_reshaped": "layers.1"}
    assert ctx.setup["criticality"].startswith("benchbed (A_k - A_lin) / ln(1 + R_k)")
    assert "scratch" in ctx.setup["criticality"] and "cross-entropy" in ctx.setup["criticality"]
    assert info["setup"] == ctx.setup
    assert "approximation" in ctx.notes["deepreduce reshape"] and "channels halved" in ctx.notes["deepreduce"]


def test_matched_protocol_keeps_skip_and_names_the_stages_passed_over(tmp_path, fake_trials):
    ctx = _narrow_ctx(tmp_path, "matched", 256)
    student = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    info = dr.build_mask(ctx=ctx, model=student).info
    assert (info["cull"], info["reshape"], info["trials_from"], info["trials_distilled"]) == \
        ("skip", "none", "teacher", True)
    assert all(c.loss_fn is not None for c in fake_trials)
    # layers.1 (512 thinned) and layers.0 (1,024 thinned) do not fit; layers.2 thinned (256) does
    assert (info["kept_stages"], info["passed_over"], info["reshaped"], info["drelus_used"]) == \
        (["layers.2"], ["layers.1", "layers.0"], [], 256)
    assert (ctx.setup["cull"], ctx.setup["stages_kept"], ctx.setup["stages_passed_over"],
            ctx.setup["stages_reshaped"]) == ("skip", "layers.2", "layers.1,layers.0", "")
    assert "deepreduce reshape" not in ctx.notes and "teacher" in ctx.notes["deepreduce criticality"]
    assert drelu_count(student) == 256


def test_reshape_halves_the_drelus_of_a_stages_sites_and_lands_under_budget():
    model = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    sites = counted_sites(model)
    by_stage, sizes, halved = dr.stages(list(sites)), {n: s.numel for n, s in sites.items()}, dr.halved_sizes(sites)
    # half the channels of each site: 8·8·8, 16·4·4, 32·2·2
    assert halved == {"relu": 512, "layers.0.0.relu1": 512, "layers.0.0.relu2": 512, "layers.1.0.relu1": 256,
                      "layers.1.0.relu2": 256, "layers.2.0.relu1": 128, "layers.2.0.relu2": 128}
    ranking = ["layers.1", "layers.0", "layers.2", "relu"]
    plain = dr.configurations(ranking, by_stage, sizes, "first")
    reshaped = dr.configurations(ranking, by_stage, sizes, "first", halved)
    assert dr.choose(plain, 300).drelus == 0, "without reshaping the paper's prefix lands 300 on nothing"
    for budget in (256, 300, 600, 900, 1_100, 2_000):
        chosen = dr.choose(reshaped, budget)
        assert chosen.drelus <= budget and chosen.drelus >= dr.choose(plain, budget).drelus
        keep_only = {n for s in chosen.reshaped for n in by_stage[s]}
        dr.keep_only(model, set(chosen.sites), keep_only)
        assert drelu_count(model) == chosen.drelus <= budget
        for name in chosen.sites:
            want = halved[name] if name in keep_only else sizes[name]
            assert sites[name].drelus == want, (budget, name)
    chosen = dr.choose(reshaped, 256)
    assert (chosen.stages, chosen.thinned, chosen.reshaped, chosen.drelus) == (("layers.1",), True, ("layers.1",), 256)
    # a tie (layers.1 whole, 1,024 = layers.1 thinned + layers.0 thinned and halved) goes to no reshaping
    chosen = dr.choose(reshaped, 1_100)
    assert (chosen.stages, chosen.thinned, chosen.reshaped, chosen.drelus) == (("layers.1",), False, (), 1024)
    # the least critical kept stages are halved first: layers.1 thinned (512) + layers.0 and layers.2
    # thinned and halved (512 + 128)
    chosen = dr.choose(reshaped, 1_200)
    assert (chosen.stages, chosen.reshaped, chosen.drelus) == \
        (("layers.1", "layers.0", "layers.2"), ("layers.0", "layers.2"), 1152)
    dr.keep_only(model, set(chosen.sites), set(by_stage["layers.0"] + by_stage["layers.2"]))
    mask = sites["layers.0.0.relu2"].kernel.mask.flatten()
    assert mask[:8].eq(1).all() and mask[8:].eq(0).all(), "ReLUs on the first half of the channels, the rest linear"
    assert sites["layers.0.0.relu1"].drelus == 0 and sites["layers.1.0.relu2"].drelus == 512
    # cull: skip reshapes a stage only when it does not fit whole; at 300, layers.1 halved (256) fits,
    # and of the two configurations of 256 it is the one passing over no stage (not layers.2 thinned)
    skip = dr.passing_over(ranking, by_stage, sizes, "first", 300, halved)
    assert all(c.drelus <= 300 for c in skip)
    assert any(c.stages == ("layers.2",) and c.passed_over == ("layers.1", "layers.0") for c in skip)
    chosen = dr.choose(dr.configurations(ranking, by_stage, sizes, "first") + skip, 300)
    assert (chosen.stages, chosen.reshaped, chosen.passed_over, chosen.drelus) == \
        (("layers.1",), ("layers.1",), (), 256)
