"""AutoAttack through the authors' package: its figures, its promises (the ε-ball, the caller's random
state, no gradient on the weights), the unreliable rule against hand-computed cases, and a model that
masks its gradients, which PGD cannot break and Square can."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from benchbed.robustness.autoattack_accuracy import AutoAttackSettings, autoattack_accuracy, reliability
from benchbed.robustness.pgd_accuracy import PGDSettings, pgd_accuracy
from conftest import load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", val_fraction=0.15)


class Linear(nn.Module):
    """A linear classifier on the pixels; ``quantise`` rounds its input to 4 levels first, which leaves
    it as accurate but with a gradient of zero everywhere (gradient masking, on purpose)."""

    def __init__(self, data, quantise: bool = False):
        super().__init__()
        x = data.train_x.float().div(255).flatten(1)
        torch.manual_seed(0)
        self.fc = nn.Linear(x.shape[1], data.num_classes)
        self.quantise = quantise
        optimiser = torch.optim.Adam(self.fc.parameters(), lr=0.05)
        for _ in range(150):
            optimiser.zero_grad()
            nn.functional.cross_entropy(self.fc(x), data.train_y).backward()
            optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    def forward(self, x):
        if self.quantise:
            x = torch.round(x * 4) / 4
        return self.fc(x.flatten(1))


def test_autoattack_is_no_weaker_than_pgd_and_keeps_its_promises(digits):
    model = Linear(digits).eval()
    before = torch.random.get_rng_state()
    settings = AutoAttackSettings(eps=0.1, attacks=["apgd-ce", "apgd-t", "square"], images=120, square_queries=200)
    result = autoattack_accuracy(model, digits, settings, 64, seed=0)
    assert torch.equal(torch.random.get_rng_state(), before)       # the package's manual_seed stays inside
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    found = result["autoattack"]
    assert found["max_linf_perturbation"] <= 0.1 + 1e-6
    after = found["accuracy_after"]
    assert list(after) == ["clean", "apgd-ce", "apgd-t", "square"]
    assert list(after.values()) == sorted(after.values(), reverse=True)  # each attack only removes images
    assert result["autoattack_accuracy"] == after["square"] < after["clean"]
    pgd = pgd_accuracy(model, digits, PGDSettings(eps=0.1, step=0.025, steps=20, images=120), 64, 0)["pgd_accuracy"]
    assert result["autoattack_accuracy"] <= pgd + 2 / 120
    # the same seed gives the same figures
    assert autoattack_accuracy(model, digits, settings, 64, seed=0)["autoattack_accuracy"] == result["autoattack_accuracy"]


def test_a_masked_gradient_fools_pgd_and_is_flagged(digits):
    model = Linear(digits, quantise=True).eval()
    pgd = pgd_accuracy(model, digits, PGDSettings(eps=0.2, step=0.05, steps=20, random_start=False, images=100), 64, 0)
    aa = autoattack_accuracy(model, digits, AutoAttackSettings(eps=0.2, attacks=["apgd-ce", "square"], images=100,
                                                               square_queries=300), 64, seed=0)
    after = aa["autoattack"]["accuracy_after"]
    assert pgd["pgd_accuracy"] == pgd["pgd"]["clean_accuracy_subset"]  # a zero gradient: PGD never moves
    assert after["apgd-ce"] > after["square"] + 0.2                     # the black-box attack does
    metrics = {**pgd, **aa}
    assert reliability(metrics) == {"robustness_unreliable": True}
    assert len(aa["autoattack"]["unreliable_reasons"]) == 2               # Square's drop, and far below PGD-20


def _metrics(pgd: float, after: dict[str, float], n: int = 400) -> dict:
    gradient = min(v for k, v in after.items() if k not in ("clean", "square"))
    final = min(after.values())
    return {"pgd_accuracy": pgd, "pgd": {"images": n}, "autoattack_accuracy": final,
            "autoattack": {"images": n, "accuracy_after": after, "square_drop": gradient - final}}


@dataclasses.dataclass
class Case:
    pgd: float
    after: dict
    unreliable: bool


@pytest.mark.parametrize("case", [
    Case(0.40, {"clean": 0.9, "apgd-ce": 0.39, "apgd-t": 0.38, "square": 0.38}, False),   # the usual: AA a bit lower
    Case(0.40, {"clean": 0.9, "apgd-ce": 0.39, "apgd-t": 0.38, "square": 0.3775}, True),  # Square broke 0.25 points
    Case(0.40, {"clean": 0.9, "apgd-ce": 0.39, "apgd-t": 0.38, "square": 0.379}, False),  # 0.1 points: within the check
    # 2 SE with n = 400 at p ~ 0.3-0.4: sqrt(.24/400 + .21/400) * 2 = 0.067; 5 + 6.7 points below PGD flags
    Case(0.40, {"clean": 0.9, "apgd-ce": 0.29, "apgd-t": 0.28, "square": 0.28}, True),
    Case(0.40, {"clean": 0.9, "apgd-ce": 0.30, "apgd-t": 0.29, "square": 0.29}, False),
])
def test_the_unreliable_rule_by_hand(case):
    metrics = _metrics(case.pgd, case.after)
    assert reliability(metrics) == {"robustness_unreliable": case.unreliable}
    assert metrics["autoattack"]["unreliable"] is case.unreliable


def test_the_standard_version_runs_with_autoattacks_standard_settings(digits, monkeypatch):
    """methods.md: pyautoattack 0.2.0 repackages fra31/auto-attack (a392200); its standard version is
    APGD-CE, APGD-T (9 target classes), FAB-T (9), Square with 5,000 queries, one restart each. Every
    attack's perturb is replaced by a recorder, so the package's own dispatch runs and each attack
    object is seen with the settings it has when benchbed calls it."""
    from benchbed.robustness import autoattack_accuracy as core

    calls, built = [], []

    def recorder(name, attack):
        def perturb(x, y):
            calls.append((name, {k: getattr(attack, k, None) for k in
                                 ("n_restarts", "n_iter", "n_target_classes", "n_queries", "loss", "targeted",
                                  "eps", "norm", "p_init")}))
            return x  # nothing broken: every image stands, so every attack runs
        return perturb

    class Recording(core.AutoAttack):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)
            for name in ("apgd", "apgd_targeted", "fab", "square"):
                getattr(self, name).perturb = recorder(name, getattr(self, name))

    monkeypatch.setattr(core, "AutoAttack", Recording)
    settings = AutoAttackSettings(images=40)
    assert settings.attacks == ["apgd-ce", "apgd-t", "fab-t", "square"] and settings.square_queries == 5000
    assert settings.eps == pytest.approx(8 / 255)
    result = autoattack_accuracy(Linear(digits).eval(), digits, settings, 64, seed=0)["autoattack"]
    assert len(built) == 1 and built[0].version == "standard" and built[0].norm == "Linf"
    assert result["version"] == "standard" and result["target_classes"] == 9 and result["square_queries"] == 5000
    assert result["library"] == "pyautoattack 0.2.0"
    assert list(result["accuracy_after"]) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    seen = dict(calls)  # one batch per attack: 40 images, batch 64
    assert [name for name, _ in calls] == ["apgd", "apgd_targeted", "fab", "square"]
    assert all(s["eps"] == pytest.approx(8 / 255) and s["norm"] == "Linf" for s in seen.values())
    assert seen["apgd"]["loss"] == "ce" and seen["apgd"]["n_restarts"] == 1 and seen["apgd"]["n_iter"] == 100
    assert seen["apgd_targeted"]["loss"] == "dlr-targeted" and seen["apgd_targeted"]["n_target_classes"] == 9
    assert seen["apgd_targeted"]["n_restarts"] == 1 and seen["apgd_targeted"]["n_iter"] == 100
    assert seen["fab"]["targeted"] is True and seen["fab"]["n_target_classes"] == 9
    assert seen["fab"]["n_restarts"] == 1 and seen["fab"]["n_iter"] == 100
    assert seen["square"]["n_queries"] == 5000 and seen["square"]["n_restarts"] == 1
    assert seen["square"]["p_init"] == pytest.approx(0.8)
