"""ReLU sites: every ReLU of a model is a named module whose behaviour a method can switch.

A site holds a *kernel* that decides what it computes. The standard kernels are the only ones
that counting, pricing, checkpoints and export understand:

- ``ReLUKernel``    plain ReLU: one DReLU per pixel;
- ``MaskedKernel``  per-pixel or per-channel 0/1 mask: kept pixels go through ReLU, the others
                    through a per-channel polynomial ``c2·x² + c1·x + c0`` (identity by default);
                    a site that is all polynomial is a mask of zeros with coefficients;
- ``PatchKernel``   per channel a patch size: the sign of each patch's mean (one DReLU per patch)
                    gates every pixel of the patch; a channel may also be zero, or linearized:
                    its pixels go through the channel's polynomial (identity by default).

A method may install a kernel of its own while it searches (e.g. SNL's continuous alphas), but it
must freeze every site into a standard kernel before it hands the model back.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchbed.errors import BenchbedError
from benchbed.model.fused import (channels_last, gated, masked_identity, masked_polynomial, patch_sums, polynomial,
                                  upsample_gate)
from benchbed.model.passes import probe_forward

Shape = tuple[int, int, int]

IDENTITY = (0, 0)
ZERO = (-1, -1)


def patch_gate(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``x · 1[mean of its (h, w) patch > 0]`` on every channel of ``x`` (N, C, H, W); patches at the
    borders are cut by the map. The gate carries no gradient."""
    return gated(x, patch_signs(x, h, w))


def patch_signs(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The 0/1 gate of ``patch_gate`` in ``x``'s type: per pixel, whether its patch's mean is positive."""
    height, width = x.shape[-2:]
    h, w = min(h, height), min(w, width)
    with torch.no_grad():
        # The sign of the mean is the sign of the sum, so the border divisor is irrelevant.
        signs = (patch_sums(x, h, w) > 0).to(x.dtype)
        return upsample_gate(signs, h, w, height, width, nhwc=channels_last(x))


def patch_drelus(height: int, width: int, h: int, w: int) -> int:
    """DReLUs of one channel of an ``height``×``width`` map cut into (h, w) patches."""
    return math.ceil(height / min(h, height)) * math.ceil(width / min(w, width))


def _polynomial(coeffs: torch.Tensor | None, channels: int, trainable: bool) -> nn.Parameter:
    """Per-channel ``(c2, c1, c0)`` of ``c2·x² + c1·x + c0`` (identity when None), trained only where
    the method says so (AutoReP's quadratics), so that an identity bypass stays an identity."""
    if coeffs is None:
        coeffs = torch.tensor([0.0, 1.0, 0.0]).repeat(channels, 1)
    if coeffs.shape != (channels, 3):
        raise BenchbedError(f"polynomial coefficients must be (C,3)=({channels},3), got {tuple(coeffs.shape)}")
    return nn.Parameter(coeffs.detach().clone().float(), requires_grad=trainable)


class _CachedCheck:
    """A yes/no question about a tensor, asked again only after the tensor changes in place (a
    checkpoint's ``load_state_dict``, RLNet moving a mask), so that it costs no host sync a step."""

    def __init__(self, question: Callable[[torch.Tensor], bool]) -> None:
        self._question = question
        self._key: tuple[int, int] | None = None
        self._answer = False

    def __call__(self, t: torch.Tensor) -> bool:
        key = (t._version, t.data_ptr())
        if key != self._key:
            self._key = key
            self._answer = bool(self._question(t))
        return self._answer


def _is_fixed_identity(coeffs: torch.Tensor) -> bool:
    """Whether a kernel's polynomial is the identity and stays so (not trained): the fast path."""
    return not coeffs.requires_grad and torch.equal(
        coeffs.detach(), torch.tensor([0.0, 1.0, 0.0], device=coeffs.device).expand_as(coeffs))


def _is_all_zero(mask: torch.Tensor) -> bool:
    return not bool(mask.any())


class SiteKernel(nn.Module):
    """What a site computes, and what it costs on a map of ``shape`` = (C, H, W)."""

    kind: str = "custom"
    standard: bool = False

    def relus(self, shape: Shape) -> int:
        """Pixels whose output goes through a comparison-gated nonlinearity."""
        raise BenchbedError(f"kernel {type(self).__name__} has no ReLU count; freeze it first")

    def drelus(self, shape: Shape) -> int:
        """Secure comparisons (DReLUs) one image needs at this site."""
        raise BenchbedError(f"kernel {type(self).__name__} has no DReLU count; freeze it first")

    def poly_pixels(self, shape: Shape) -> int:
        """Pixels that go through a polynomial with a square term (one secure multiplication each)."""
        return 0

    def spec(self) -> dict:
        """Primitive/tensor description from which ``apply_site_specs`` rebuilds this kernel."""
        raise BenchbedError(f"kernel {type(self).__name__} cannot be saved; freeze it first")


class ReLUKernel(SiteKernel):
    kind = "relu"
    standard = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)

    def relus(self, shape: Shape) -> int:
        return math.prod(shape)

    drelus = relus

    def spec(self) -> dict:
        return {"kind": self.kind}


class MaskedKernel(SiteKernel):
    """``mask·relu(x) + (1−mask)·p(x)``, mask of shape (C,H,W) or (C,1,1), p per channel."""

    kind = "masked"
    standard = True

    def __init__(self, mask: torch.Tensor, coeffs: torch.Tensor | None = None, trainable: bool = False):
        super().__init__()
        if mask.dim() != 3:
            raise BenchbedError(f"a site mask must be (C,H,W) or (C,1,1), got shape {tuple(mask.shape)}")
        self.register_buffer("mask", (mask != 0).to(torch.float32))
        self.coeffs = _polynomial(coeffs, mask.shape[0], trainable)  # the mask never trains
        self._identity = _CachedCheck(_is_fixed_identity)
        self._no_relu = _CachedCheck(_is_all_zero)

    @property
    def per_channel(self) -> bool:
        return self.mask.shape[1:] == (1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The mask is read every pass: a method may move it in place (RLNet).
        if self._identity(self.coeffs):
            return masked_identity(x, self.mask)
        # a site that is all polynomial has no ReLU to compute and blend away
        return masked_polynomial(x, None if self._no_relu(self.mask) else self.mask, self.coeffs)

    def _kept(self, shape: Shape) -> int:
        return int(self.mask.expand(shape).sum().item())

    def relus(self, shape: Shape) -> int:
        return self._kept(shape)

    drelus = relus

    def poly_pixels(self, shape: Shape) -> int:
        square = (self.coeffs[:, 0] != 0).float().view(-1, 1, 1)
        return int(((1 - self.mask) * square).expand(shape).sum().item())

    def spec(self) -> dict:
        return {"kind": self.kind, "mask": self.mask.detach().cpu(), "coeffs": self.coeffs.detach().cpu(),
                "trainable": self.coeffs.requires_grad}


class PatchKernel(SiteKernel):
    """One DReLU per patch: ``x · 1[mean(x over patch) > 0]`` broadcast over the patch.

    ``sizes[c]`` is ``(h, w)`` for channel c, ``IDENTITY`` = (0, 0) to remove its ReLU (its pixels
    then go through the channel's polynomial ``coeffs[c]``, the identity by default), or ``ZERO`` =
    (-1, -1) to zero the channel. Border patches are cut by the map (ceil division). The gate carries
    no gradient; gradients pass to x through the multiplication.
    """

    kind = "patch"
    standard = True

    def __init__(self, sizes: Sequence[tuple[int, int]] | torch.Tensor, coeffs: torch.Tensor | None = None,
                 trainable: bool = False):
        super().__init__()
        sizes = torch.as_tensor(sizes, dtype=torch.long).reshape(-1, 2)
        for h, w in sizes.tolist():
            if not ((h >= 1 and w >= 1) or (h, w) in (IDENTITY, ZERO)):
                raise BenchbedError(f"patch size ({h},{w}) is neither h,w >= 1, identity (0,0) nor zero (-1,-1)")
        self.register_buffer("sizes", sizes)
        self.coeffs = _polynomial(coeffs, len(sizes), trainable)
        groups: dict[tuple[int, int], list[int]] = {}
        for c, hw in enumerate(map(tuple, sizes.tolist())):
            groups.setdefault(hw, []).append(c)
        # The channels sorted by patch size, so that each size's channels are one slice of the sorted map.
        by_size = sorted(groups.items())
        order = [c for _, channels in by_size for c in channels]
        bounds = itertools.accumulate((len(channels) for _, channels in by_size), initial=0)
        self._groups = [(hw, start, stop) for (hw, _), (start, stop) in zip(by_size, itertools.pairwise(bounds))]
        self.register_buffer("_order", torch.tensor(order), persistent=False)
        self.register_buffer("_unorder", torch.argsort(torch.tensor(order)), persistent=False)
        self._identity = _CachedCheck(_is_fixed_identity)
        linearized = (sizes == torch.tensor(IDENTITY)).all(1)
        self._any_linearized = bool(linearized.any())
        self.register_buffer("_linearized", linearized.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One 0/1 gate for the whole map, then one gated pass over ``x``. With several patch sizes the gate
        is filled on the channels sorted by size, one slice per size, and put back in channel order: two
        gathers in all, where one per size would copy the map's channels out and back once per size."""
        if len(self._groups) == 1 and self._groups[0][0] not in (IDENTITY, ZERO):
            gate = patch_signs(x, *self._groups[0][0])
        else:
            with torch.no_grad():
                grouped = x.detach()[:, self._order]
                gate = torch.empty_like(grouped)
                for (h, w), start, stop in self._groups:
                    if (h, w) in (IDENTITY, ZERO):
                        gate[:, start:stop].fill_(float((h, w) == IDENTITY))
                    else:
                        gate[:, start:stop].copy_(patch_signs(grouped[:, start:stop], h, w))
                gate = gate[:, self._unorder]
        out = gated(x, gate)
        if not self._any_linearized or self._identity(self.coeffs):
            return out
        return torch.where(self._linearized, polynomial(self.coeffs, x), out)

    def _per_channel(self, shape: Shape) -> Iterator[tuple[tuple[int, int], int]]:
        _, height, width = shape
        for h, w in self.sizes.tolist():
            yield (h, w), 0 if (h, w) in (IDENTITY, ZERO) else patch_drelus(height, width, h, w)

    def relus(self, shape: Shape) -> int:
        _, height, width = shape
        return sum(height * width for hw, _ in self._per_channel(shape) if hw not in (IDENTITY, ZERO))

    def drelus(self, shape: Shape) -> int:
        return sum(n for _, n in self._per_channel(shape))

    def linearized(self) -> torch.Tensor:
        """Per channel, whether its ReLU was removed (its pixels go through the polynomial)."""
        return self._linearized.view(-1)

    def poly_pixels(self, shape: Shape) -> int:
        _, height, width = shape
        return height * width * int((self.linearized() & (self.coeffs[:, 0] != 0)).sum())

    def spec(self) -> dict:
        return {"kind": self.kind, "sizes": self.sizes.detach().cpu(), "coeffs": self.coeffs.detach().cpu(),
                "trainable": self.coeffs.requires_grad}


STANDARD_KERNELS = (ReLUKernel, MaskedKernel, PatchKernel)


class ReLUSite(nn.Module):
    """One ReLU of a model. Its name is its module path; ``role`` marks the stem ReLU."""

    def __init__(self, role: str = "body"):
        super().__init__()
        self.role = role
        self.counted = True
        self.shape: Shape | None = None
        self.kernel: SiteKernel = ReLUKernel()
        # Moves with .to()/.cuda() so that a kernel switched in later lands on the model's device.
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shape is None:
            self.shape = tuple(x.shape[1:])
        return self.kernel(x)

    def _require_shape(self) -> Shape:
        if self.shape is None:
            raise BenchbedError("site shape unknown: call benchbed.sites.trace_shapes(model, input_shape) first")
        return self.shape

    # -- switching -------------------------------------------------------------------------
    def set_kernel(self, kernel: SiteKernel) -> None:
        self.kernel = kernel.to(self._anchor.device)

    def set_relu(self) -> None:
        self.set_kernel(ReLUKernel())

    def set_mask(self, mask: torch.Tensor, coeffs: torch.Tensor | None = None, trainable: bool = False) -> None:
        """Keep ReLUs where ``mask`` is 1; elsewhere the per-channel polynomial ``coeffs`` (identity by
        default), trained by later finetuning only if ``trainable``."""
        shape = self._require_shape()
        if mask.dim() == 1:
            mask = mask.view(-1, 1, 1)
        if mask.shape not in (torch.Size(shape), torch.Size((shape[0], 1, 1))):
            raise BenchbedError(f"mask of shape {tuple(mask.shape)} does not fit site of shape {shape}")
        self.set_kernel(MaskedKernel(mask.detach(), coeffs, trainable))

    def set_polynomial(self, coeffs: torch.Tensor, trainable: bool = False) -> None:
        shape = self._require_shape()
        self.set_kernel(MaskedKernel(torch.zeros(shape[0], 1, 1), coeffs, trainable))

    def set_patches(self, sizes: Sequence[tuple[int, int]] | torch.Tensor, coeffs: torch.Tensor | None = None,
                    trainable: bool = False) -> None:
        """Per channel a patch size, ``IDENTITY`` or ``ZERO``; identity channels go through the
        per-channel polynomial ``coeffs`` (identity by default), trained later only if ``trainable``."""
        shape = self._require_shape()
        kernel = PatchKernel(sizes, coeffs, trainable)
        if kernel.sizes.shape[0] != shape[0]:
            raise BenchbedError(f"{kernel.sizes.shape[0]} patch sizes for a site with {shape[0]} channels")
        self.set_kernel(kernel)

    # -- cost --------------------------------------------------------------------------------
    @property
    def numel(self) -> int:
        return math.prod(self._require_shape())

    @property
    def relus(self) -> int:
        return self.kernel.relus(self._require_shape())

    @property
    def drelus(self) -> int:
        return self.kernel.drelus(self._require_shape())

    @property
    def poly_pixels(self) -> int:
        return self.kernel.poly_pixels(self._require_shape())

    def extra_repr(self) -> str:
        return f"role={self.role}, shape={self.shape}, kind={self.kernel.kind}"


# -- whole-model views -------------------------------------------------------------------------

def sites(model: nn.Module) -> dict[str, ReLUSite]:
    """Every site of ``model`` by module path, in forward-definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, ReLUSite)}


def counted_sites(model: nn.Module) -> dict[str, ReLUSite]:
    """The sites a ReLU budget covers (and that methods may linearize)."""
    return {name: s for name, s in sites(model).items() if s.counted}


def trace_shapes(model: nn.Module, input_shape: Sequence[int]) -> None:
    """Record every site's (C,H,W) with one forward pass of a zero image."""
    for site in sites(model).values():
        site.shape = None
    probe_forward(model, input_shape)
    missing = [n for n, s in sites(model).items() if s.shape is None]
    if missing:
        raise BenchbedError(f"sites never reached by a forward pass: {', '.join(missing)}")


@dataclass(frozen=True)
class SiteCount:
    name: str
    shape: Shape
    kind: str
    counted: bool
    relus: int
    drelus: int
    poly_pixels: int


def site_counts(model: nn.Module) -> list[SiteCount]:
    return [SiteCount(n, s._require_shape(), s.kernel.kind, s.counted, s.relus, s.drelus, s.poly_pixels)
            for n, s in sites(model).items()]


def relu_count(model: nn.Module, counted_only: bool = True) -> int:
    return sum(s.relus for s in (counted_sites(model) if counted_only else sites(model)).values())


def drelu_count(model: nn.Module, counted_only: bool = True) -> int:
    return sum(s.drelus for s in (counted_sites(model) if counted_only else sites(model)).values())


def capacity(model: nn.Module) -> int:
    """Pixels of all counted sites: the largest ReLU budget the model admits."""
    return sum(s.numel for s in counted_sites(model).values())


def site_specs(model: nn.Module) -> dict[str, dict]:
    specs = {}
    for name, site in sites(model).items():
        if not site.kernel.standard:
            raise BenchbedError(f"site {name} still runs a {type(site.kernel).__name__}; "
                                "a method must freeze its sites to relu/masked/patch kernels")
        specs[name] = {**site.kernel.spec(), "counted": site.counted, "shape": list(site._require_shape())}
    return specs


def foreign_kernels(model: nn.Module) -> list[str]:
    """The sites whose kernel is of a class of the method's own (a subclass of a standard one): the core
    rebuilds the model from the kernels' specs with its own classes before it counts or measures."""
    return [n for n, s in sites(model).items() if type(s.kernel) not in STANDARD_KERNELS]


def apply_site_specs(model: nn.Module, specs: dict[str, dict]) -> None:
    """Give a freshly built model's sites the kernels ``specs`` describe. The geometry is the model's own
    trace: a spec whose shape or counting differs from it, or whose kernel does not fit it, is refused —
    so a checkpoint or a method cannot make a site smaller, or uncounted, than the architecture has it."""
    own = sites(model)
    if set(own) != set(specs):
        raise BenchbedError("checkpoint sites do not match the model's sites "
                            f"(missing {sorted(set(own) - set(specs))[:3]}, extra {sorted(set(specs) - set(own))[:3]})")
    for name, spec in specs.items():
        site = own[name]
        if not isinstance(spec, dict) or "kind" not in spec:
            raise BenchbedError(f"site {name}: its spec is not a kernel description")
        if tuple(spec.get("shape", ())) != site._require_shape():
            raise BenchbedError(f"site {name}: the spec says shape {tuple(spec.get('shape', ()))}, the architecture "
                                f"has {site.shape}")
        if bool(spec.get("counted", True)) != site.counted:
            raise BenchbedError(f"site {name}: the spec says counted={spec.get('counted')}, the architecture counts it")
        kind = spec["kind"]
        if kind == "relu":
            site.set_relu()
            continue
        # copies, never views: the rebuilt kernel shares no memory with the payload it was read from
        coeffs = None if spec.get("coeffs") is None else torch.as_tensor(spec["coeffs"], dtype=torch.float32).clone()
        if coeffs is not None and not torch.isfinite(coeffs).all():
            raise BenchbedError(f"site {name}: its polynomial has NaN or infinite coefficients")
        if kind == "masked":
            site.set_mask(torch.as_tensor(spec["mask"]).clone(), coeffs, bool(spec.get("trainable", False)))
        elif kind == "patch":
            site.set_patches(torch.as_tensor(spec["sizes"]).clone(), coeffs, bool(spec.get("trainable", False)))
        else:
            raise BenchbedError(f"site {name}: unknown kernel kind {kind!r}")


# -- bring your own model ------------------------------------------------------------------------

def convert_relus(model: nn.Module, input_shape: Sequence[int]) -> nn.Module:
    """Turn every ``nn.ReLU`` of ``model`` into its own ``ReLUSite`` and trace the site shapes.

    A ReLU module that the forward pass calls more than once (torchvision's ResNet blocks reuse
    ``self.relu``) would make several ReLUs share one site; those models are rewritten with
    ``torch.fx`` so that every call gets a site of its own.
    """
    calls: dict[str, int] = {}
    probe_forward(model, input_shape, {m: lambda mod, i, o, n=n: calls.__setitem__(n, calls.get(n, 0) + 1)
                                       for n, m in model.named_modules() if isinstance(m, nn.ReLU)})
    if any(n > 1 for n in calls.values()):
        model = _split_shared_relus(model)
    else:
        for name in calls:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, ReLUSite())
    trace_shapes(model, input_shape)
    if not sites(model):
        raise BenchbedError("the model has no nn.ReLU modules to convert into sites")
    return model


def _split_shared_relus(model: nn.Module) -> nn.Module:
    import torch.fx

    try:
        graph_module = torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx cannot trace data-dependent control flow
        raise BenchbedError(f"the model reuses one nn.ReLU module for several ReLUs and cannot be traced "
                            f"by torch.fx ({exc.__class__.__name__}); give each ReLU its own module") from exc
    relu_calls = [node for node in graph_module.graph.nodes
                  if node.op == "call_module" and isinstance(graph_module.get_submodule(node.target), nn.ReLU)]
    seen: dict[str, int] = {}
    for node in relu_calls:
        k = seen.get(node.target, 0)
        seen[node.target] = k + 1
        target = f"{node.target}_{k}".replace(".", "_") if k else node.target
        graph_module.add_submodule(target, ReLUSite())
        node.target = target
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return graph_module
