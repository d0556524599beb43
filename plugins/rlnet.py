"""RLNet — robust linearized networks (Sarkar, Kundu, Beerel, CVPR-W 2024, arXiv 2402.05521).

The model keeps dual BatchNorm (clean / adversarial copies, all other weights shared; a teacher
trained with the robust recipe already has it, otherwise the copies start from the teacher's
statistics). Every counted site gets a share of the budget — uniform, the authors' per-layer
sensitivity lists for ResNet-18 (``sensitivity: authors``), or weights per site.

Every training step splits its batch as the authors' code does (``helper/loops_robust.py``): one half
is used clean and, the same images, as AugMix, both through the clean BNs; the other half becomes PGD
examples that maximise KL(teacher's clean logits ‖ student) at T (RSLAD), through the adversarial BNs.
The loss is ``γ·(CE_clean + CE_augmix + CE_adv)/3 + α·(KL_clean + KL_augmix + KL_adv)/3`` with every
KL to the teacher's logits on the clean images, and in stage 2 ``+ β·(AT_clean + AT_augmix)/2``:
attention transfer on the stage outputs, the clean view's to the teacher on the clean images and the
AugMix view's to the teacher on the AugMix images. Stage 1 has no attention term (the authors'
``rslad+ce``). The core meters every pass (views, attack steps, teacher passes) and every schedule is
planned over the steps the budget pays for at that price. One difference, by design: the AugMix view
is AugMix of the half's own crop and flip, where the authors crop their AugMix copy anew.

Stage 1 (``mask_method: training``, the paper's): the student trains with its mask, starting from a
random one of the allocated size; under ``compute: paper`` it starts, as the authors' code does, from
freshly initialised weights (its 150 epochs afford that), under matched compute from the teacher's
(``mask_training_from`` says otherwise), and the record says which. After every epoch each site keeps
the positions where the student's post-ReLU features differed most from the teacher's (summed
|teacher − student| over the clean half of the epoch) — exactly its allocated count (the authors'
strict threshold keeps one fewer). ``one_shot`` ranks positions once instead, by E|relu(x) − x| on
the all-ReLU model. Stage 2 (``finetune``) trains with the last mask frozen.

The paper's defaults are the defaults: the robust dual-BN teacher and the authors' per-layer
sensitivity lists, made for the 17 sites of ResNet-18 with its stem ReLU; on a stem-free ResNet-18 they
serve without their stem entry (the other shares renormalise), and on any other model they are an error
(``sensitivity: uniform`` or per-site weights say what to use). The entry reports which shares it used
(``shares``) and its PGD steps (``pgd_steps``). The core evaluates a dual-BN
model as the paper does: clean and corruption accuracy through the clean BNs, PGD through the
adversarial BNs, and both paths' clean accuracy.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from benchbed.api import (FORWARD_SHARE, BenchbedError, Claim, ClaimSide, Condition, EntryContext, FinetuneResult, MaskResult,
                          MethodInfo, RobustTraining, Strict, TrainRecipe, adversarial, augmix, bn_path,
                          convert_dual_bn, counted_sites, fit, has_dual_bn, hookimpl, kd_loss, observe)
from benchbed.api import sites as all_sites  # every site of a model by name (``sites`` names locals here)
from benchbed.api import stage_modules, top_k

# The authors' per-site kept fractions for ResNet-18 on CIFAR-100 (stem, then the 16 block ReLUs in
# order), by the budget they were made for (sensitivity_list.yaml of sreetamasarkar/rlnet).
AUTHORS_SENSITIVITY: dict[int, list[float]] = {
    25_000: [0.004, 0.01, 0.01, 0.01, 0.011, 0.027, 0.038, 0.04, 0.042, 0.102, 0.124, 0.126, 0.13, 0.28, 0.30, 0.30,
             0.30],
    50_000: [0.02, 0.025, 0.03, 0.025, 0.025, 0.05, 0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 0.25, 0.5, 0.6, 0.6, 0.6],
    82_000: [0.01, 0.11, 0.14, 0.19, 0.21, 0.03, 0.03, 0.03, 0.03, 0.1, 0.14, 0.19, 0.34, 0.35, 0.76, 0.83, 0.85],
    100_000: [0.00967, 0.0313, 0.036, 0.04236, 0.0466, 0.12, 0.165, 0.172, 0.188, 0.45555, 0.5505, 0.56, 0.583, 1.0,
              1.0, 1.0, 1.0],
    120_000: [0.012, 0.040, 0.046, 0.055, 0.060, 0.155, 0.214, 0.223, 0.244, 0.59, 0.714, 0.726, 0.756, 1.0, 1.0, 1.0,
              1.0],
}
# The site shapes those lists are for: ResNet-18 on 32x32 with its stem ReLU. Without it (``stem_relu:
# false``, SNL's and AutoReP's model) the same lists serve without their stem entry.
RESNET18_SHAPES = ([(64, 32, 32)] * 5 + [(128, 16, 16)] * 4 + [(256, 8, 8)] * 4 + [(512, 4, 4)] * 4)


class Options(Strict):
    teacher: Literal["standard", "robust"] = Field(
        "robust", description="the teacher to distil from: RLNet's robust dual-BN one (the paper's), or the suite's")
    mask_method: Literal["training", "one_shot"] = Field(
        "training", description="training: the mask is re-derived every epoch of stage 1 from the teacher-student "
                                "post-ReLU mismatch (paper); one_shot: ranked once on the all-ReLU model")
    sensitivity: Literal["uniform", "authors"] | dict[str, float] = Field(
        "authors", description="per-site share of the budget: the authors' lists for ResNet-18 on 32x32 (the one "
                               "nearest the budget, scaled to it; without its stem entry on a stem-free ResNet-18; "
                               "an error on other models), uniform, or weights by site name")
    mismatch_images: int = Field(512, ge=1, description="one_shot: training images for ranking positions")
    gamma: float = Field(0.5, ge=0, description="weight of the CE terms")
    alpha: float = Field(0.5, ge=0, description="weight of the KL terms to the teacher")
    beta: float = Field(1000.0, ge=0, description="weight of attention transfer")
    kd_temperature: float = Field(4.0, gt=0)
    robust: RobustTraining = Field(default_factory=RobustTraining)
    mask_training_from: Literal["scratch", "teacher"] | None = Field(
        None, description="stage 1's start: freshly initialised weights (the authors' code), or the teacher's; by "
                          "default scratch under `compute: paper` and the teacher under matched compute")
    mask_training_attention: bool = Field(False, description="attention transfer in stage 1 too (the authors' "
                                                             "stage 1 has none)")
    mask_share: float = Field(150 / 390, gt=0, lt=1, description="training: largest share of the compute for "
                                                                 "stage 1 (the paper: 150 of 390 epochs)")
    mask_training: TrainRecipe = Field(
        default_factory=lambda: TrainRecipe(epochs=150, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=False,
                                            weight_decay=5e-4, batch_size=128, schedule="constant"),
        description="stage 1 (training mask method): the authors' lr 0.05, constant")
    finetune: TrainRecipe = Field(
        default_factory=lambda: TrainRecipe(epochs=240, optimizer="sgd", lr=0.01, momentum=0.9, nesterov=False,
                                            weight_decay=5e-4, batch_size=128, schedule="step",
                                            milestones=[150 / 240, 180 / 240, 210 / 240], gamma=0.1),
        description="stage 2, mask frozen; its epochs are cut to the entry's compute budget")


# The published recipe (CIFAR-100 ResNet-18): the robust dual-BN teacher, 150 epochs of mask training
# with the authors' sensitivity lists, 240 epochs of stage 2.
PAPER_RECIPE = {
    "teacher": "robust", "mask_method": "training", "sensitivity": "authors", "gamma": 0.5, "alpha": 0.5,
    "beta": 1000.0, "kd_temperature": 4.0,
    "robust": {"eps": 8 / 255, "step": 2 / 255, "pgd_steps": 7, "augmix_severity": 3, "augmix_width": 3,
               "augmix_depth": -1, "augmix_all_ops": False},
    "mask_training": {"epochs": 150},
    "finetune": {"epochs": 240},
}


# The paper's figures come from its robust dual-BN teacher, its per-layer budget shares (the authors'
# sensitivity lists) and PGD-7 adversarial training.
PGD_STEPS_STATED = 7
SETUP = (Condition("RLNet's robust dual-BN teacher", "observed.teacher", "==", "robust"),
         Condition("a dual-BN student", "observed.dual_bn", "==", True),
         Condition("the authors' per-layer budget shares", "options.sensitivity", "==", "authors"),
         Condition(f"PGD-{PGD_STEPS_STATED} adversarial training", "options.robust.pgd_steps", ">=", PGD_STEPS_STATED))

CLAIMS = [Claim("rlnet_triple_win", "RLNet beats the best non-robust linearized method (by clean accuracy) at each "
                "budget on PGD, corruption and clean accuracy alike",
                "RLNet, Sarkar, Kundu, Beerel, CVPR-W 2024 (abstract)", a=ClaimSide("rlnet"), versus="best",
                metric=("pgd_accuracy", "corruption_accuracy", "clean_accuracy"),
                quote="Compared with the SoTA non-robust linearized models at similar ReLU budgets, RLNet achieves an "
                      "improvement in adversarial accuracy of up to ~47%, in naturally perturbed accuracy of up to "
                      "~16.4%, while improving clean image accuracy up to ~1.5%")]


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(description="robust linearization: dual BN, mask from the teacher-student post-ReLU mismatch, "
                                  "training on clean, AugMix and RSLAD adversarial thirds with KL and attention transfer",
                      paper="Sarkar, Kundu, Beerel, CVPR-W 2024, arXiv:2402.05521", options=Options,
                      paper_recipe=PAPER_RECIPE, teacher=lambda options: options.teacher,
                      produces=frozenset({"masked"}), claims=CLAIMS,
                      setup=SETUP)


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


def site_weights(ctx: EntryContext, sites: dict) -> tuple[dict[str, float], str]:
    """Per-site weights of the allocation and a description of where they come from."""
    opts: Options = ctx.options
    if opts.sensitivity == "uniform":
        return {n: 1.0 for n in sites}, "uniform"
    if opts.sensitivity == "authors":
        shapes = [tuple(s.shape) for s in sites.values()]
        if shapes not in (RESNET18_SHAPES, RESNET18_SHAPES[1:]):
            raise BenchbedError(f"rlnet: the authors' sensitivity lists are for ResNet-18 on 32x32 images, not this "
                                f"model's {len(sites)} sites; set `sensitivity: uniform` or give per-site weights")
        nearest = min(AUTHORS_SENSITIVITY, key=lambda b: abs(math.log(b / max(1, ctx.budget))))
        source = f"authors' {nearest // 1000}K list"
        if shapes == RESNET18_SHAPES:
            return dict(zip(sites, AUTHORS_SENSITIVITY[nearest])), source
        return dict(zip(sites, AUTHORS_SENSITIVITY[nearest][1:])), f"{source} without the stem entry"
    unknown = set(opts.sensitivity) - set(sites)
    if unknown:
        raise BenchbedError(f"rlnet: sensitivity names unknown sites {sorted(unknown)[:3]}")
    return {n: opts.sensitivity.get(n, 0.0) for n in sites}, "per-site weights"


def relu_mismatch(model, sites: dict, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per pixel, E|relu(x) − x| = E|min(x, 0)| of each site's input over ``images`` (clean BN path)."""
    totals = {n: torch.zeros(s.shape, device=images.device) for n, s in sites.items()}

    def accumulate(name: str):
        def hook(module, inputs, output) -> None:
            totals[name] += inputs[0].float().clamp(max=0).abs().sum(0)
        return hook

    with bn_path(model, "clean"):
        observe(model, images, {site: accumulate(n) for n, site in sites.items()}, batch_size)
    return {n: t / len(images) for n, t in totals.items()}


def top_positions(scores: torch.Tensor, count: int) -> torch.Tensor:
    """0/1 mask of one site's ``count`` highest scores (earlier positions win ties)."""
    return top_k({"site": scores}, count)["site"]


def attention(features: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis attention map: channel mean of squared activations, L2-normalised."""
    return F.normalize(features.float().pow(2).mean(1).flatten(1), dim=1)


def transfer(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Attention-transfer loss summed over the stages."""
    return sum((attention(s) - attention(t)).pow(2).mean() for s, t in zip(student, teacher))


class Recorder:
    """Outputs of ``modules`` on the forward passes made while ``on``: a list in call order, or a dict
    by name when ``modules`` is a dict."""

    def __init__(self, modules):
        self.named = isinstance(modules, dict)
        self.outputs: Any = {} if self.named else []
        self.on = False
        items = modules.items() if self.named else enumerate(modules)
        self.handles = [m.register_forward_hook(lambda mod, i, o, key=key: self._hook(key, o)) for key, m in items]

    def _hook(self, key, output) -> None:
        if not self.on:
            return
        if self.named:
            self.outputs[key] = output
        else:
            self.outputs.append(output)

    def take(self, fn: Callable[[], Any]) -> tuple[Any, Any]:
        self.outputs, self.on = ({} if self.named else []), True
        try:
            return fn(), self.outputs
        finally:
            self.on = False

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def cost_per_image(opts: Options, attention: bool) -> float:
    """Training images per image drawn, the first plan's estimate (the core's meter counts the real
    cost and the loop re-plans on it): half the batch trains clean and as AugMix, the other half as PGD
    examples (three training passes of half a batch), each attack step a forward and a backward to the
    input of that half, the teacher's forward of the batch, and with attention transfer its forward of
    the AugMix half."""
    return 1.5 + opts.robust.pgd_steps * (2 / 3) * 0.5 + FORWARD_SHARE + (FORWARD_SHARE / 2 if attention else 0.0)


def robust_step(ctx: EntryContext, model, attention: bool, on_clean_sites: Callable[[dict, dict], None] | None = None):
    """The per-batch loss of both stages (see the module docstring), as the authors' code computes it:
    half the batch clean and, the same images, as AugMix (clean BNs); the other half as RSLAD PGD examples
    (adversarial BNs); CE and KL to the teacher's clean logits on every view, and with ``attention`` the
    attention transfer of the clean view to the teacher on the clean images and of the AugMix view to
    the teacher on the AugMix images. ``on_clean_sites(student, teacher)`` receives the counted sites'
    outputs on the clean half by site name, for stage 1's mismatch."""
    opts: Options = ctx.options
    teacher, temperature = ctx.teacher, opts.kd_temperature
    student_stages, teacher_stages = Recorder(stage_modules(model)), Recorder(stage_modules(teacher))
    student_sites = teacher_sites = None
    if on_clean_sites is not None:
        names = list(counted_sites(model))
        student_sites = Recorder(counted_sites(model))
        teacher_sites = Recorder({n: s for n, s in all_sites(teacher).items() if n in names})

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        half = len(y) // 2
        clean_part, adv_part = slice(0, half), slice(half, len(y))
        mixed_x = augmix(x[clean_part], opts.robust)
        with torch.no_grad(), ctx.autocast:
            if teacher_sites is not None:
                teacher_sites.on = True
            try:
                target, t_stages = teacher_stages.take(lambda: teacher(x))
            finally:
                if teacher_sites is not None:
                    teacher_sites.on = False
            t_mixed = teacher_stages.take(lambda: teacher(mixed_x))[1] if attention else None
        with ctx.autocast:
            if student_sites is not None:
                student_sites.on = True
            try:
                clean, s_clean = student_stages.take(lambda: model(x[clean_part]))
            finally:
                if student_sites is not None:
                    student_sites.on = False
            mixed, s_mixed = student_stages.take(lambda: model(mixed_x))
        adv = adversarial(model, x[adv_part], y[adv_part], opts.robust,
                          objective=lambda out, _y, _x: kd_loss(out, target[adv_part], temperature))
        with bn_path(model, "adv"), ctx.autocast:
            attacked = model(adv)
        if on_clean_sites is not None:
            with torch.no_grad():
                on_clean_sites(student_sites.outputs, {n: t[clean_part] for n, t in teacher_sites.outputs.items()})
            student_sites.outputs, teacher_sites.outputs = {}, {}
        views = [(clean, y[clean_part], target[clean_part]), (mixed, y[clean_part], target[clean_part]),
                 (attacked, y[adv_part], target[adv_part])]
        ce = sum(F.cross_entropy(out.float(), labels) for out, labels, _ in views) / 3
        kl = sum(kd_loss(out, goal, temperature) for out, _, goal in views) / 3
        total = opts.gamma * ce + opts.alpha * kl
        if attention:
            at = (transfer(s_clean, [t[clean_part] for t in t_stages]) + transfer(s_mixed, t_mixed)) / 2
            total = total + opts.beta * at
        return total

    def remove() -> None:
        for r in (student_stages, teacher_stages, student_sites, teacher_sites):
            if r is not None:
                r.remove()

    return loss, remove


@hookimpl
def build_mask(ctx: EntryContext, model) -> MaskResult:
    opts: Options = ctx.options
    if not has_dual_bn(model):
        convert_dual_bn(model.cpu()).to(ctx.device)
    sites = counted_sites(model)
    weights, source = site_weights(ctx, sites)
    ctx.report_setup("shares", source)
    ctx.report_setup("pgd_steps", opts.robust.pgd_steps)
    counts = allocate({n: s.numel for n, s in sites.items()}, weights, ctx.budget)
    info: dict[str, Any] = {"kept_per_site": counts, "allocation": source, "mask_method": opts.mask_method}
    if opts.mask_method == "one_shot":
        n_images = min(opts.mismatch_images, len(ctx.data.train_y))
        if not ctx.clock.fits(n_images):
            raise BenchbedError("rlnet: no compute budget left to rank pixels")
        mismatch = relu_mismatch(model, sites, ctx.sample_train_images(n_images))
        for name, site in sites.items():
            site.set_mask(top_positions(mismatch[name], counts[name]))
        return MaskResult(model, {**info, "mismatch_images": n_images})
    return MaskResult(model, {**info, **train_mask(ctx, model, sites, counts)})


def train_mask(ctx: EntryContext, model, sites: dict, counts: dict[str, int]) -> dict:
    """Stage 1: train with the mask, re-deriving it after every epoch from the summed |teacher − student|
    post-ReLU features on the clean images; starts from a random mask of the allocated sizes (and, by
    default, from freshly initialised weights)."""
    opts: Options = ctx.options
    generator = torch.Generator().manual_seed(ctx.seed)
    # The paper's stage 1 starts from random weights, affordable in its 150 epochs; under matched compute
    # (a few epochs of the same budget every other method gets) it starts from the teacher's weights
    start = opts.mask_training_from or ("scratch" if ctx.protocol == "paper" else "teacher")
    if start != "scratch":
        ctx.notes["rlnet"] = ("stage 1 started from the teacher's weights (the protocol's adaptation: the paper "
                              "trains it from scratch for 150 epochs)")
    if start == "scratch":
        torch.manual_seed(ctx.seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    for name, site in sites.items():
        site.set_mask(top_positions(torch.rand(site.shape, generator=generator), counts[name]))
    totals = {n: torch.zeros(s.shape, device=ctx.device) for n, s in sites.items()}

    def accumulate(student: dict, teacher: dict) -> None:
        for name in totals:
            totals[name] += (teacher[name].float() - student[name].float()).abs().sum(0)

    changes: list[float] = []

    def after_epoch(epoch: int, val_acc: float) -> bool:
        moved = 0
        for name, site in sites.items():
            new = top_positions(totals[name], counts[name]).to(site.kernel.mask.device)
            moved += int((new != site.kernel.mask).sum())
            site.kernel.mask.copy_(new)
            totals[name].zero_()
        changes.append(moved / max(1, sum(counts.values())))
        return False

    attention = opts.mask_training_attention
    loss, remove = robust_step(ctx, model, attention, on_clean_sites=accumulate)
    try:
        result = fit(model, ctx, opts.mask_training, step_loss=loss, cost_per_image=cost_per_image(opts, attention),
                     budget_epochs=ctx.search_epochs(opts.mask_share), select_on_val=False, on_epoch_end=after_epoch,
                     label=f"{ctx.method} mask training", part="mask_training")
    finally:
        remove()
    return {"mask_epochs": round(result.epochs, 4), "mask_training_from": start,
            "mask_updates": len(changes), "moved_share_per_update": [round(c, 4) for c in changes]}


@hookimpl
def finetune(ctx: EntryContext, model) -> FinetuneResult:
    opts: Options = ctx.options
    if not has_dual_bn(model):  # another method's mask: give it RLNet's dual BN from its own statistics
        convert_dual_bn(model.cpu()).to(ctx.device)
    ctx.report_setup("pgd_steps", opts.robust.pgd_steps)
    loss, remove = robust_step(ctx, model, attention=True)
    try:
        result = fit(model, ctx, opts.finetune, step_loss=loss, cost_per_image=cost_per_image(opts, True),
                     label=f"{ctx.method} finetune", part="finetune")
    finally:
        remove()
    return FinetuneResult(model, result.summary())
