"""PGD accuracy: L∞ PGD with random start in pixel space ([0, 1], before normalisation), in eval mode,
with two sanity checks recorded beside every result."""
from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from benchbed.config import Strict
from benchbed.data.bundle import DataBundle, eval_batches
from benchbed.robustness.attacks import pgd
from benchbed.robustness.registry import Metric


class PGDSettings(Strict):
    """L∞ PGD with random start, in pixel space before normalisation, in eval mode."""

    eps: float = Field(8 / 255, gt=0)
    step: float = Field(2 / 255, gt=0)
    steps: int = Field(20, ge=1)
    random_start: bool = True
    check_steps: int = Field(5, ge=1, description="a weaker attack the full one must not lose to (gradient masking)")
    images: int = Field(1000, ge=1, description="test images attacked")


def pgd_accuracy(model: nn.Module, data: DataBundle, settings: PGDSettings, batch_size: int, seed: int) -> dict:
    """PGD accuracy on the first ``settings.images`` test images, in eval mode, with two sanity checks:
    the attack never beats clean accuracy's upper bound, and the full attack is not weaker than a
    ``check_steps`` attack by more than two binomial standard errors (a sign of gradient masking)."""
    model.eval()
    x_all, y_all = data.test_x[:settings.images], data.test_y[:settings.images]
    generator = torch.Generator(device=y_all.device).manual_seed(seed)
    counts = torch.zeros(3, dtype=torch.long, device=y_all.device)  # clean, weak attack, full attack
    attack = dict(eps=settings.eps, step=settings.step, random_start=settings.random_start, generator=generator)
    for x, y in eval_batches(x_all, y_all, batch_size):
        with torch.no_grad():
            counts[0] += (model(x).argmax(1) == y).sum()
        for i, steps in ((1, settings.check_steps), (2, settings.steps)):
            adv = pgd(model, x, y, steps=steps, **attack)
            with torch.no_grad():
                counts[i] += (model(adv).argmax(1) == y).sum()
    n = len(y_all)
    clean, weak, full = (c / n for c in counts.tolist())
    noise = 2 * math.sqrt(max(weak * (1 - weak), 1 / n) / n)
    checks = {"adversarial_not_above_clean": full <= clean,
              "more_steps_not_weaker": full <= weak + noise}
    return {"pgd_accuracy": full,
            "pgd": {"eps": settings.eps, "step": settings.step, "steps": settings.steps, "images": n,
                    "random_start": settings.random_start, "clean_accuracy_subset": clean,
                    f"accuracy_{settings.check_steps}_steps": weak, "checks": checks,
                    "gradient_masking_suspected": not all(checks.values())}}


def _measure(model: nn.Module, data: DataBundle, settings: PGDSettings, batch_size: int, seed: int, progress) -> dict:
    progress(f"evaluating: PGD-{settings.steps} on {settings.images} images", 0, 1)
    return pgd_accuracy(model, data, settings, batch_size, seed)


PGD_METRIC = Metric(
    "pgd", PGDSettings, _measure,
    columns={"pgd_accuracy": "PGD acc %"}, sample_size=lambda result: result["pgd"]["images"], adversarial=True,
    # both attacks' steps (a forward and a backward to the input: two thirds of a training image), three forwards
    cost=lambda s, classes: (s.images * (s.steps + s.check_steps) * 2 / 3, s.images * 3),
    description="L∞ PGD with random start (defaults 8/255, 2/255, 20 steps) and its gradient-masking checks")
