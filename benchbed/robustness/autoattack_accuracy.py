"""AutoAttack accuracy (Croce & Hein, ICML 2020) through its authors' package, ``pyautoattack``: the
standard ensemble (APGD-CE, APGD-T, FAB-T, Square) or any subset, L∞ at the suite's ε, in pixel
space before normalisation, in eval mode. PGD-20 stays the quick check; this is the one that
gradient masking — the risk of polynomial and partly linear networks — does not fool.

A result is flagged ``unreliable`` by a stated rule (``RELIABILITY_RULE``): when Square, which needs
no gradient, breaks images every gradient attack left standing (AutoAttack's own check), or when
AutoAttack's accuracy falls well below PGD-20's (the quick check was fooled)."""
from __future__ import annotations

import logging
import math
import time
from typing import Literal

from importlib.metadata import version

import torch
from pydantic import Field, field_validator
from pyautoattack import AutoAttack
from torch import nn

from benchbed.config import Strict
from benchbed.data.bundle import DataBundle, to_float
from benchbed.robustness.registry import Metric

STANDARD = ["apgd-ce", "apgd-t", "fab-t", "square"]
GRADIENT_FREE = {"square"}
SQUARE_DROP = 0.002           # AutoAttack's check_square_sr threshold (0.2 points)
PGD_GAP = 0.05                # "well below PGD-20": 5 points beyond two binomial standard errors
RELIABILITY_RULE = ("unreliable when Square lowers the accuracy the gradient attacks left by more than "
                    f"{100 * SQUARE_DROP:g} points (AutoAttack's own check), or when AutoAttack's accuracy is more "
                    f"than {100 * PGD_GAP:g} points plus two binomial standard errors below PGD-20's (the quick "
                    "attack was fooled)")
Attack = Literal["apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square"]


class AutoAttackSettings(Strict):
    """AutoAttack's standard version unless ``attacks`` names another subset (its ``custom`` version)."""

    eps: float = Field(8 / 255, gt=0)
    attacks: list[Attack] = Field(default_factory=lambda: list(STANDARD),
                                  description="run in this order; the standard version is apgd-ce, apgd-t, fab-t, square")
    images: int = Field(1000, ge=1, description="test images attacked")
    square_queries: int = Field(5000, ge=1, description="Square's query budget (AutoAttack's standard: 5,000)")

    @field_validator("attacks")
    @classmethod
    def _some(cls, attacks: list[str]) -> list[str]:
        if not attacks or len(set(attacks)) != len(attacks):
            raise ValueError("name each attack once, at least one")
        return attacks


def autoattack_accuracy(model: nn.Module, data: DataBundle, settings: AutoAttackSettings, batch_size: int,
                        seed: int) -> dict:
    """Robust accuracy on the first ``settings.images`` test images after each attack in turn (each one
    attacks only what the earlier ones left standing), with AutoAttack's seed fixed and the caller's
    random state untouched."""
    model.eval()
    x, y = to_float(data.test_x[:settings.images]), data.test_y[:settings.images]
    standard = settings.attacks == STANDARD
    requires = [p.requires_grad for p in model.parameters()]
    devices = [x.device.index or 0] if x.is_cuda else []
    logging.getLogger("auto-attack").setLevel(logging.ERROR)  # its per-batch chatter; the record keeps the figures
    with torch.random.fork_rng(devices=devices):
        try:
            for p in model.parameters():  # FAB calls backward(): no gradient may reach the weights
                p.requires_grad_(False)
            adversary = AutoAttack(model, norm="Linf", eps=settings.eps, seed=seed, device=x.device,
                                   version="standard" if standard else "custom",
                                   attacks=None if standard else list(settings.attacks))
            targets = max(1, min(9, data.num_classes - 1))
            adversary.apgd_targeted.n_target_classes = adversary.fab.n_target_classes = targets
            adversary.square.n_queries = settings.square_queries
            standing = _predict(model, x, batch_size) == y
            after = {"clean": float(standing.float().mean())}
            farthest, seconds = 0.0, {}
            # one attack at a time, each on the clean images the earlier ones left standing (the package's own
            # order and rule), so that the accuracy after each is on the record
            for attack in list(adversary.attacks_to_run):
                left, started = standing.nonzero().flatten(), time.perf_counter()
                if len(left):
                    adversary.attacks_to_run = [attack]
                    x_adv, _ = adversary.run_standard_evaluation(x[left], y[left], batch_size=batch_size)
                    standing[left] = _predict(model, x_adv, batch_size) == y[left]
                    farthest = max(farthest, float((x_adv - x[left]).abs().amax()))
                after[attack] = float(standing.float().mean())
                seconds[attack] = time.perf_counter() - started
        finally:
            for p, r in zip(model.parameters(), requires):
                p.requires_grad_(r)
    n = len(y)
    gradient = [after[a] for a in after if a not in GRADIENT_FREE and a != "clean"]
    final = min(after.values())
    square_drop = (min(gradient) - final) if gradient and GRADIENT_FREE & set(after) else 0.0
    return {"autoattack_accuracy": final,
            "autoattack": {"eps": settings.eps, "attacks": list(settings.attacks), "images": n,
                           "version": "standard" if standard else "custom", "target_classes": targets,
                           "square_queries": settings.square_queries, "accuracy_after": after,
                           "max_linf_perturbation": farthest, "seconds": seconds,
                           "square_drop": square_drop, "library": _library_version()}}


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def _library_version() -> str:
    return f"pyautoattack {version('pyautoattack')}"


def reliability(metrics: dict) -> dict:
    """The ``unreliable`` flag of an evaluation that ran AutoAttack, by ``RELIABILITY_RULE``, with its reasons."""
    found = metrics.get("autoattack")
    if not found:
        return {}
    reasons = []
    if found["square_drop"] > SQUARE_DROP:
        reasons.append(f"Square broke {100 * found['square_drop']:.2f} points the gradient attacks left")
    pgd, aa = metrics.get("pgd_accuracy"), metrics["autoattack_accuracy"]
    if pgd is not None:
        n_pgd, n_aa = metrics["pgd"]["images"], found["images"]
        noise = 2 * math.sqrt(max(pgd * (1 - pgd), 1 / n_pgd) / n_pgd + max(aa * (1 - aa), 1 / n_aa) / n_aa)
        if aa < pgd - PGD_GAP - noise:
            reasons.append(f"AutoAttack {100 * aa:.2f}% is {100 * (pgd - aa):.2f} points below PGD-20's {100 * pgd:.2f}%")
    found["unreliable"] = bool(reasons)
    found["unreliable_reasons"] = reasons
    found["rule"] = RELIABILITY_RULE
    return {"robustness_unreliable": bool(reasons)}


# gradient steps per image of each attack's standard setting (FAB takes two gradients a step), per target
STEPS = {"apgd-ce": 100, "apgd-dlr": 100, "apgd-t": 100, "fab": 200, "fab-t": 200}
TARGETED = {"apgd-t", "fab-t"}


def upper_cost(settings: AutoAttackSettings, classes: int) -> tuple[float, float]:
    """(training images, forwards) if every image survived every attack — the plan's upper bound; each
    attack runs only on what the earlier ones left, so a model that is not robust costs far less."""
    targets = max(1, min(9, classes - 1))
    steps = sum(STEPS[a] * (targets if a in TARGETED else 1) for a in settings.attacks if a in STEPS)
    forwards = settings.square_queries * ("square" in settings.attacks) + len(settings.attacks) + 1
    return settings.images * steps * 2 / 3, settings.images * forwards


def _measure(model: nn.Module, data: DataBundle, settings: AutoAttackSettings, batch_size: int, seed: int,
             progress) -> dict:
    progress(f"evaluating: AutoAttack ({', '.join(settings.attacks)}) on {settings.images} images", 0, 1)
    return autoattack_accuracy(model, data, settings, batch_size, seed)


AUTOATTACK_METRIC = Metric(
    "autoattack", AutoAttackSettings, _measure,
    columns={"autoattack_accuracy": "AutoAttack acc %"}, sample_size=lambda result: result["autoattack"]["images"],
    adversarial=True, judge=reliability, cost=lambda s, classes: upper_cost(s, classes),
    description="AutoAttack (APGD-CE, APGD-T, FAB-T, Square; the authors' pyautoattack) and its unreliable flag")
