"""Robust training pieces shared by the robust teacher recipe and RLNet: AugMix on device batches,
PGD examples through the adversarial BatchNorm path, and the robust teacher's recipe and loss.

AugMix is torchvision's definition (``v2.AugMix``: its operations, magnitude bins, severity, width,
depth, Dirichlet/Beta mixing with alpha 1 and the truncation of the mix to uint8), drawn per image as
the authors' code does (one PIL image at a time): every image gets its own chains, operations,
magnitudes and mixing weights. It is computed batched: all chains of a batch at once, the geometric
operations (shears, translations, rotations) through one per-image affine grid with torchvision's
inverse matrices, the others on the images that drew them, once per distinct magnitude, through
torchvision's own operations. The draws come from the CPU generator (the global one by default)
whatever the device, so that no step waits on the device and a seed gives the same augmentation on
every device."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from benchbed.config import RobustTraining, TrainRecipe
from benchbed.model.dual_bn import bn_path
from benchbed.model.passes import eval_mode
from benchbed.robustness.attacks import pgd
from benchbed.train.devices import autocast

# The operations whose parameters are an affine map; the others run through torchvision's own op.
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
AUGMIX_ALPHA = 1.0  # torchvision's (and AugMix's) Dirichlet / Beta parameter


def augmix_ops(all_ops: bool) -> dict[str, tuple[Callable, bool]]:
    """AugMix's operations as torchvision defines them: name -> (magnitude bins(num_bins, height, width)
    or None, signed). Without ``all_ops`` (RLNet's code) brightness, color, contrast and sharpness are out."""
    return dict(v2.AugMix._AUGMENTATION_SPACE if all_ops else v2.AugMix._PARTIAL_AUGMENTATION_SPACE)


def _transform(settings: RobustTraining) -> v2.AugMix:
    return v2.AugMix(severity=settings.augmix_severity, mixture_width=settings.augmix_width,
                     chain_depth=settings.augmix_depth, alpha=AUGMIX_ALPHA, all_ops=settings.augmix_all_ops)


@dataclass
class AugMixPlan:
    """Every image's own AugMix draw for a batch of ``n``: chain ``c`` of image ``i`` applies operation
    ``names[ops[k, c, i]]`` with ``magnitudes[k, c, i]`` for ``k < depth[c, i]``, and the image becomes
    ``original[i]·x_i + Σ_c chains[c, i]·chain_c(x_i)`` (the chain weights sum to ``1 − original[i]``)."""

    names: tuple[str, ...]
    depth: torch.Tensor       # (width, n), long
    ops: torch.Tensor         # (max depth, width, n), long
    magnitudes: torch.Tensor  # (max depth, width, n), float64
    original: torch.Tensor    # (n,), float32
    chains: torch.Tensor      # (width, n), float32


def augmix_plan(n: int, height: int, width: int, settings: RobustTraining,
                generator: torch.Generator | None = None) -> AugMixPlan:
    """Draw AugMix's randomness for ``n`` images of ``height`` x ``width``, image by image, as
    ``v2.AugMix`` draws it for one image (on the CPU ``generator``, the global one by default)."""
    space = augmix_ops(settings.augmix_all_ops)
    names, chains = tuple(space), settings.augmix_width
    parameter_max = _transform(settings)._PARAMETER_MAX
    if settings.augmix_depth > 0:
        depth = torch.full((chains, n), settings.augmix_depth, dtype=torch.long)
    else:  # torchvision's stochastic depth: 1 to 3
        depth = torch.randint(1, 4, (chains, n), generator=generator)
    shape = (int(depth.max()) if n else 0, chains, n)
    ops = torch.randint(len(names), shape, generator=generator)
    bins = torch.randint(settings.augmix_severity, shape, generator=generator)
    table = torch.zeros(len(names), parameter_max, dtype=torch.float64)
    for row, (bins_fn, _) in enumerate(space.values()):
        values = bins_fn(parameter_max, height, width)
        if values is not None:
            table[row] = values.double()
    signed = torch.tensor([s for _, s in space.values()])
    flip = (torch.rand(shape, generator=generator) <= 0.5) & signed[ops]
    magnitudes = torch.where(flip, -table[ops, bins], table[ops, bins])
    alpha = torch.full((n, 2), AUGMIX_ALPHA)
    beta = torch._sample_dirichlet(alpha, generator=generator)
    mixing = torch._sample_dirichlet(torch.full((n, chains), AUGMIX_ALPHA), generator=generator)
    return AugMixPlan(names, depth, ops, magnitudes, beta[:, 0].contiguous(),
                      (mixing * beta[:, 1:]).T.contiguous())


def inverse_affine(names: tuple[str, ...], ops: torch.Tensor, magnitudes: torch.Tensor, height: int,
                   width: int) -> torch.Tensor:
    """(M, 2, 3) inverse affine matrices, in pixels about the image centre, of geometric operations
    ``names[ops]`` with ``magnitudes``, as torchvision's AugMix builds them (``F.affine`` with its shear
    about the top-left corner and whole-pixel translations, ``F.rotate`` about the centre)."""
    op_names = [names[i] for i in ops.tolist()]
    m = magnitudes.double()
    is_ = lambda *which: torch.tensor([o in which for o in op_names], dtype=torch.bool)  # noqa: E731
    zero = torch.zeros_like(m)
    shear_deg = torch.rad2deg(torch.atan(m))
    shear_x = torch.where(is_("ShearX"), shear_deg, zero)
    shear_y = torch.where(is_("ShearY"), shear_deg, zero)
    tx = torch.where(is_("TranslateX"), torch.trunc(m), zero)
    ty = torch.where(is_("TranslateY"), torch.trunc(m), zero)
    angle = torch.where(is_("Rotate"), -torch.remainder(m, 360.0), zero)  # rotate: -(angle % 360)
    corner = is_("ShearX", "ShearY")  # the shears' centre=[0, 0]: the top-left corner
    cx = torch.where(corner, torch.full_like(m, -width * 0.5), zero)
    cy = torch.where(corner, torch.full_like(m, -height * 0.5), zero)
    # torchvision's _get_inverse_affine_matrix (scale 1): C · RSS⁻¹ · C⁻¹ · T⁻¹
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.stack([m0, m1, m2, m3, m4, m5], 1).reshape(-1, 2, 3).float()


def _affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """uint8 ``images`` resampled bilinearly by per-image inverse matrices ``theta``, outside filled with 0,
    rounded back: torchvision's ``_affine_grid`` and ``_apply_grid_transform`` with one grid per image."""
    n, _, h, w = images.shape
    base = torch.empty(1, h, w, 3, device=images.device)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=images.device))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=images.device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2).div(torch.tensor([0.5 * w, 0.5 * h], device=images.device))
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(scaled).view(n, h, w, 2)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round_().to(images.dtype)


def apply_ops(images: torch.Tensor, names: tuple[str, ...], ops: torch.Tensor, magnitudes: torch.Tensor,
              active: torch.Tensor, transform: v2.AugMix) -> torch.Tensor:
    """One step of every chain: uint8 ``images[j]`` through operation ``names[ops[j]]`` at ``magnitudes[j]``
    where ``active[j]`` (CPU tensors), unchanged elsewhere."""
    out = images.clone()
    device = images.device
    move = lambda t: t.to(device, non_blocking=True)  # noqa: E731  (no wait on the device)
    geometric = torch.tensor([n in GEOMETRIC for n in names])
    chosen = torch.nonzero(active & geometric[ops]).flatten()
    if len(chosen):
        theta = inverse_affine(names, ops[chosen], magnitudes[chosen], images.shape[-2], images.shape[-1])
        where = move(chosen)
        out[where] = _affine(images[where], move(theta))
    for op, name in enumerate(names):
        if name in GEOMETRIC:
            continue
        members = active & (ops == op)
        for value in magnitudes[members].unique().tolist():
            where = move(torch.nonzero(members & (magnitudes == value)).flatten())
            out[where] = transform._apply_image_or_video_transform(
                images[where], name, value, interpolation=transform.interpolation, fill=transform._fill)
    return out


def augmix(x: torch.Tensor, settings: RobustTraining, generator: torch.Generator | None = None) -> torch.Tensor:
    """torchvision's AugMix on a float batch in [0, 1], every image with its own chains (see the module
    docstring); randomness from the CPU ``generator`` (the global torch one by default)."""
    n, _, h, w = x.shape
    if n == 0:
        return x
    transform = _transform(settings)
    plan = augmix_plan(n, h, w, settings, generator)
    as_bytes = (x * 255).round().to(torch.uint8)
    width = settings.augmix_width
    chains = as_bytes.repeat(width, 1, 1, 1)  # chain c of image i at c·n + i
    depth = plan.depth.flatten()
    for k in range(plan.ops.shape[0]):
        chains = apply_ops(chains, plan.names, plan.ops[k].flatten(), plan.magnitudes[k].flatten(), depth > k,
                           transform)
    weights = lambda t: t.to(x.device, non_blocking=True).view(-1, 1, 1, 1)  # noqa: E731
    mix = weights(plan.original) * as_bytes
    for c, chain in enumerate(chains.split(n)):
        mix.add_(weights(plan.chains[c]) * chain)
    return mix.to(torch.uint8).to(x.dtype) / 255  # truncated to uint8, as torchvision's AugMix does


def adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: RobustTraining, objective=None) -> torch.Tensor:
    """PGD examples through the adversarial BN path, generated in eval mode so that the attack's
    forward passes leave the BatchNorm statistics alone."""
    extra = {} if objective is None else {"objective": objective}
    with eval_mode(model), bn_path(model, "adv"):
        return pgd(model, x, y, eps=settings.eps, step=settings.step, steps=settings.pgd_steps, **extra)


def teacher_parts(n: int, settings: RobustTraining) -> tuple[slice, slice, slice]:
    """The images of a batch of ``n`` that the robust teacher's clean, AugMix and PGD views train on.
    ``halves`` (the default, the authors' ``helper/loops_robust.py``): the first half is used clean and,
    the same images, as AugMix; the second half becomes PGD examples. ``thirds``: three disjoint parts."""
    if settings.teacher_split == "halves":
        half = n // 2
        return slice(0, half), slice(0, half), slice(half, n)
    third = n // 3
    return slice(0, third), slice(third, 2 * third), slice(2 * third, n)


def robust_teacher_cost(settings: RobustTraining, batch_size: int = 128) -> float:
    """Training images per image drawn, the first plan's estimate of a robust teacher step (the core's
    meter counts the real cost and ``fit`` re-plans on it): a training pass of each view's part, and
    per PGD step a forward and a backward to the input (two thirds of a training pass) of the PGD part."""
    clean, mixed, attacked = (len(range(batch_size)[part]) / batch_size for part in teacher_parts(batch_size, settings))
    return clean + mixed + attacked * (1 + settings.pgd_steps * 2 / 3)


def robust_teacher_recipe(recipe: TrainRecipe, settings: RobustTraining) -> TrainRecipe:
    """The robust teacher's recipe: the suite's teacher ``recipe`` with the authors' learning rate
    (``teacher_lr``; None keeps the suite's) and its epochs times ``teacher_epochs_factor`` (the
    authors' 240 robust epochs against the standard teacher's 160)."""
    changes = {"epochs": recipe.epochs * settings.teacher_epochs_factor}
    if settings.teacher_lr is not None:
        changes["lr"] = settings.teacher_lr
    return TrainRecipe.model_validate({**recipe.model_dump(), **changes})


StepLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def robust_teacher_loss(model: nn.Module, settings: RobustTraining) -> StepLoss:
    """The robust teacher's per-batch loss, a ``step_loss(x, y)`` for ``fit``: the batch split as
    ``teacher_parts`` says, the mean of CE on the clean part and on AugMix of its part (both through
    the clean BNs) and on PGD examples of its part (L∞ ``eps``, ``step``, ``pgd_steps``, random start;
    made and trained through the adversarial BNs)."""

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        clean_part, mixed_part, adv_part = teacher_parts(len(y), settings)
        mixed_x = augmix(x[mixed_part], settings)
        adv_x = adversarial(model, x[adv_part], y[adv_part], settings)
        with autocast(x.device):
            clean = model(x[clean_part])
            mixed = model(mixed_x)
            with bn_path(model, "adv"):
                attacked = model(adv_x)
        return (F.cross_entropy(clean.float(), y[clean_part]) + F.cross_entropy(mixed.float(), y[mixed_part])
                + F.cross_entropy(attacked.float(), y[adv_part])) / 3

    return loss
