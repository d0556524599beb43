"""RLNet — robust linearized networks (Sarkar, Kundu, Beerel, CVPR-W 2024, arXiv 2402.05521).

The model keeps dual BatchNorm (clean / adversarial copies, all other weights shared; a teacher
trained with the suite's ``teacher.robust`` recipe already has it, otherwise the copies start from
the teacher's statistics). ``build_mask`` gives every counted site a share of the budget from a
sensitivity profile (uniform by default) and keeps, in each site, the pixels where dropping the ReLU
changes the post-ReLU feature most, E|relu(x) − x| over training images. ``finetune`` trains with
γ·CE on clean, AugMix and adversarial inputs (each extra pass and attack step charged to the entry's
compute budget, so RLNet gets the same compute as every method, not more) + α·KL to the teacher's clean logits (T) + β·attention
transfer on the stage outputs; adversarial examples maximise KL(student ‖ teacher) (RSLAD) through
the adversarial BNs. ``evaluate`` reads clean and corruption accuracy through the clean BNs and PGD
through the adversarial BNs, and reports both paths' clean accuracy.
"""
from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from benchbed.api import (BenchbedError, EntryContext, EvaluationSettings, FinetuneResult, MaskResult, MethodInfo,
                          RobustTraining, Strict, TrainRecipe, adversarial, augmix, bn_path, convert_dual_bn,
                          counted_sites, evaluate_model, fit, has_dual_bn, hookimpl, kd_loss, stage_modules)


class Options(Strict):
    sensitivity: Literal["uniform"] | dict[str, float] = Field(
        "uniform", description="per-site weights of the kept fraction (site name → weight); uniform by default")
    mismatch_images: int = Field(512, ge=1, description="training images for ranking pixels")
    gamma: float = Field(0.5, ge=0, description="weight of the CE terms")
    alpha: float = Field(0.5, ge=0, description="weight of the KL to the teacher")
    beta: float = Field(1000.0, ge=0, description="weight of attention transfer")
    kd_temperature: float = Field(4.0, gt=0)
    robust: RobustTraining = Field(default_factory=RobustTraining)
    finetune: TrainRecipe = Field(
        default_factory=lambda: TrainRecipe(epochs=240, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                                            batch_size=128, schedule="cosine"),
        description="its epochs are cut to the entry's compute budget")


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(description="robust linearization: dual BN, mask by post-ReLU mismatch, finetune on clean, "
                                  "AugMix and RSLAD adversarial inputs with KL and attention transfer",
                      paper="Sarkar, Kundu, Beerel, CVPR-W 2024, arXiv:2402.05521", options=Options)


def allocate(sizes: dict[str, int], weights: dict[str, float], budget: int) -> dict[str, int]:
    """Split ``budget`` over sites in proportion to weight × size, never above a site's size, summing
    exactly to ``budget`` (largest remainders get the leftover units)."""
    counts = {n: 0 for n in sizes}
    open_sites, left = dict(sizes), budget
    while left > 0 and open_sites:
        total = sum(weights[n] * s for n, s in open_sites.items())
        if total == 0:
            raise BenchbedError("rlnet: every site with room left has sensitivity weight 0")
        share = {n: left * weights[n] * s / total for n, s in open_sites.items()}
        full = [n for n in open_sites if counts[n] + share[n] >= sizes[n]]
        if full:  # saturate these sites and spread the rest again
            for n in full:
                left -= sizes[n] - counts[n]
                counts[n] = sizes[n]
                del open_sites[n]
            continue
        floors = {n: math.floor(v) for n, v in share.items()}
        for n in open_sites:
            counts[n] += floors[n]
        rest = left - sum(floors.values())
        for n in sorted(open_sites, key=lambda n: (floors[n] - share[n], n))[:rest]:
            counts[n] += 1
        left = 0
    return counts


@torch.no_grad()
def relu_mismatch(model, sites: dict, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per pixel, E|relu(x) − x| = E|min(x, 0)| of each site's input over ``images`` (clean BN path)."""
    totals = {n: torch.zeros(s.shape, device=images.device) for n, s in sites.items()}

    def accumulate(name: str):
        def hook(module, inputs, output) -> None:
            totals[name] += inputs[0].float().clamp(max=0).abs().sum(0)
        return hook

    handles = [site.register_forward_hook(accumulate(n)) for n, site in sites.items()]
    was_training = model.training
    model.eval()
    try:
        with bn_path(model, "clean"):
            for start in range(0, len(images), batch_size):
                model(images[start:start + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: t / len(images) for n, t in totals.items()}


@hookimpl
def build_mask(ctx: EntryContext, model) -> MaskResult:
    opts: Options = ctx.options
    if ctx.budget is None:
        raise BenchbedError("rlnet needs a ReLU budget")
    if not has_dual_bn(model):
        convert_dual_bn(model.cpu()).to(ctx.device)
    sites = counted_sites(model)
    weights = ({n: 1.0 for n in sites} if opts.sensitivity == "uniform"
               else {n: opts.sensitivity.get(n, 0.0) for n in sites})
    if opts.sensitivity != "uniform" and set(opts.sensitivity) - set(sites):
        raise BenchbedError(f"rlnet: sensitivity names unknown sites {sorted(set(opts.sensitivity) - set(sites))[:3]}")
    counts = allocate({n: s.numel for n, s in sites.items()}, weights, ctx.budget)
    n_images = min(opts.mismatch_images, len(ctx.data.train_y))
    if not ctx.clock.allows_forward(n_images):
        raise BenchbedError("rlnet: no compute budget left to rank pixels")
    mismatch = relu_mismatch(model, sites, ctx.sample_train_images(n_images))
    for name, site in sites.items():
        flat = torch.zeros(site.numel)
        flat[torch.sort(mismatch[name].flatten().cpu(), descending=True, stable=True).indices[:counts[name]]] = 1
        site.set_mask(flat.view(site.shape))
    return MaskResult(model, {"kept_per_site": counts, "mismatch_images": n_images})


def attention(features: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis attention map: channel mean of squared activations, L2-normalised."""
    return F.normalize(features.float().pow(2).mean(1).flatten(1), dim=1)


def _capture(modules) -> tuple[list, list]:
    store: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda mod, i, o: store.append(o)) for m in modules]
    return store, handles


@hookimpl
def finetune(ctx: EntryContext, model) -> FinetuneResult:
    opts: Options = ctx.options
    teacher, temperature = ctx.teacher, opts.kd_temperature
    stages = stage_modules(model)
    student_stages, student_handles = _capture(stages)
    teacher_stages, teacher_handles = _capture(stage_modules(teacher))

    def loss(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # The latest forward pass of the student is the one that produced ``logits``.
        clean_features = student_stages[len(student_stages) - len(stages):]
        teacher_stages.clear()
        with torch.no_grad():
            target = teacher(x)
        transfer = sum((attention(s) - attention(t)).pow(2).mean() for s, t in zip(clean_features, teacher_stages))
        # Beyond the clean batch the budget already charged: the AugMix pass, every attack step and
        # the adversarial pass each cost about one training batch.
        ctx.clock.charge(len(y) * (2 + opts.robust.pgd_steps))
        mixed = model(augmix(x, opts.robust))
        adv = adversarial(model, x, y, opts.robust, objective=lambda out, _y, _x: kd_loss(out, target, temperature))
        with bn_path(model, "adv"):
            attacked = model(adv)
        student_stages.clear()
        ce = (F.cross_entropy(logits.float(), y) + F.cross_entropy(mixed.float(), y)
              + F.cross_entropy(attacked.float(), y)) / 3
        kl = (kd_loss(logits, target, temperature) + kd_loss(attacked, target, temperature)) / 2
        return opts.gamma * ce + opts.alpha * kl + opts.beta * transfer

    try:
        result = fit(model, ctx, opts.finetune, loss_fn=loss, label=f"{ctx.method} finetune")
    finally:
        for h in student_handles + teacher_handles:
            h.remove()
    return FinetuneResult(model, result.summary())


@hookimpl
def evaluate(ctx: EntryContext, model, settings: EvaluationSettings) -> dict[str, Any]:
    with bn_path(model, "clean"):
        metrics = evaluate_model(model, ctx.data, settings, ctx.seed, metrics=("clean", "val", "corruptions"))
    with bn_path(model, "adv"):
        adv = evaluate_model(model, ctx.data, settings, ctx.seed, metrics=("clean", "pgd"))
    metrics["clean_accuracy_adv_bn"] = adv.pop("clean_accuracy")
    metrics.update(adv)
    metrics["bn_paths"] = {"clean_and_corruptions": "clean", "pgd": "adv"}
    return metrics
