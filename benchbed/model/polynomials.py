"""Polynomial stand-ins for ReLU: DaPa (AutoReP's distribution-aware quadratic) in closed form, and
the ``bypass: dapa`` axis that gives any mask method's linearized pixels (masked or patch sites) that
quadratic, fitted per channel to the teacher's pre-activation statistics."""
from __future__ import annotations

import math

import torch
from torch import nn

from benchbed.model.passes import observe
from benchbed.model.sites import MaskedKernel, PatchKernel, ReLUSite, SiteKernel


def dapa_coefficients(mu: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The least-squares quadratic ``c2·x² + c1·x + c0`` to ReLU under x ~ N(mu, sigma²) (sigma: std).
    With z = mu/sigma and φ, Φ the standard normal pdf and cdf: c2 = φ(z)/(2σ), c1 = Φ(z) − z·φ(z),
    c0 = (mu² + σ²)·φ(z)/(2σ)."""
    mu, sigma = torch.as_tensor(mu, dtype=torch.float64), torch.as_tensor(sigma, dtype=torch.float64)
    sigma = sigma.clamp_min(1e-12)
    z = mu / sigma
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return pdf / (2 * sigma), cdf - z * pdf, (mu * mu + sigma * sigma) * pdf / (2 * sigma)


def input_statistics(model: nn.Module, sites: dict[str, ReLUSite], images: torch.Tensor,
                     batch_size: int = 256) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per site, the per-channel mean and standard deviation of what flows into it over ``images``."""
    sums = {n: [torch.zeros(s.shape[0], dtype=torch.float64), torch.zeros(s.shape[0], dtype=torch.float64), 0]
            for n, s in sites.items()}

    def hook(name: str):
        def record(module, inputs, output) -> None:
            x = inputs[0].detach().double().transpose(0, 1).flatten(1).cpu()
            sums[name][0] += x.sum(1)
            sums[name][1] += (x * x).sum(1)
            sums[name][2] += x.shape[1]
        return record

    observe(model, images, {site: hook(n) for n, site in sites.items()}, batch_size)
    stats = {}
    for name, (total, squares, count) in sums.items():
        mean = total / max(1, count)
        stats[name] = (mean, (squares / max(1, count) - mean * mean).clamp_min(0).sqrt())
    return stats


def dapa_bypass(model: nn.Module, teacher: nn.Module, images: torch.Tensor) -> list[str]:
    """Give the linearized pixels of every masked or patch site of ``model`` whose bypass is the
    identity the DaPa quadratic of the teacher's pre-activations at that site, per channel (trainable,
    as AutoReP trains its polynomials). Sites whose bypass already is another polynomial (AutoReP's
    own) keep it; zeroed patch channels stay zero. Returns the sites changed."""
    student_sites = {n: s for n, s in model.named_modules() if isinstance(s, ReLUSite)}
    targets = {n: s for n, s in student_sites.items() if _identity_bypass(s.kernel)}
    teacher_sites = {n: s for n, s in teacher.named_modules() if isinstance(s, ReLUSite) and n in targets}
    stats = input_statistics(teacher, teacher_sites, images)
    for name, site in targets.items():
        coeffs = torch.stack(dapa_coefficients(*stats[name]), 1).float()
        if isinstance(site.kernel, MaskedKernel):
            site.set_mask(site.kernel.mask.detach().cpu(), coeffs, trainable=True)
        else:
            site.set_patches(site.kernel.sizes.detach().cpu(), coeffs, trainable=True)
    return sorted(targets)


def _identity_bypass(kernel: SiteKernel) -> bool:
    """A masked or patch kernel with linearized pixels that compute the identity."""
    if isinstance(kernel, MaskedKernel):
        linearized = bool((kernel.mask == 0).any())
    elif isinstance(kernel, PatchKernel):
        linearized = bool(kernel.linearized().any())
    else:
        return False
    coeffs = kernel.coeffs.detach().cpu()
    return linearized and torch.equal(coeffs, torch.tensor([0.0, 1.0, 0.0]).expand_as(coeffs))
