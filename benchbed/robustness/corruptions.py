"""The 15 CIFAR-10-C / CIFAR-100-C corruptions (Hendrycks & Dietterich, ICLR 2019) at 5 severities, in torch.

Written from the paper's description and the per-severity constants of the CIFAR-C generation script, so that
they run batched on any device. Images go in and come out as uint8 (N, C, H, W) with C in {1, 3}; in between
they are float32 in [0, 1], and the result is rounded (the reference truncates, which darkens by 0.5/255 on
average). All randomness comes from the caller's ``torch.Generator``, so the random numbers differ from the
reference's numpy ones, not their distribution.

Image size. The constants are for 32x32 images. What the reference defines relative to the image (zoom factors,
pixelate factors, the elastic field, the fog fractal) follows the image size. Blur widths in pixels (gaussian
sigmas, disk and motion radii, shuffle distances, frost texture scale) grow by size/32 on larger images but never
shrink: at 32x32 they are already about a pixel, and narrower kernels would leave 8x8 digits untouched. So on
images smaller than 32x32 the blurs are relatively stronger than on CIFAR (on 8x8 digits, four times).

The same computation as the CIFAR-C definition: gaussian_noise, shot_noise, impulse_noise, defocus_blur (disk
with a 3x3 gaussian anti-alias, reflected borders), glass_blur (the reference's sequential sweep of pixel swaps,
run wave by wave: the same result for the same offsets), brightness (V of HSV raised with H and S kept; grey
images: the intensity raised), contrast (towards per-channel means), pixelate (PIL's BOX filter down and up),
jpeg_compression (libjpeg through torchvision instead of PIL; the same pixels as PIL's in our tests).

Approximations:
- frost: the reference blends crops of frost photographs that ship with it; we have none, so the texture is
  synthesised (multi-scale smoothed noise softly thresholded into ice patches with crisp edges, crossed by thin
  bright veins of ridged noise, tinted ice-blue). The blend weights are the reference's.
- motion_blur and snow's streaks: ImageMagick's motion blur re-implemented from its description (a one-sided line
  of 2 * radius + 1 taps with gaussian weights, offsets rounded to whole pixels, edge pixels repeated). The
  reference's 8-bit PNG round trips (of the image, of the snow layer) are skipped.
- zoom_blur and snow's zoom: a continuous zoom about the centre with bilinear sampling; the reference crops an
  integer window and resizes it, which differs by sub-pixel offsets.
- elastic_transform: the random affine and the elastic field are composed into one bilinear resampling (the
  reference resamples twice, blurring slightly more).
- fog: our own diamond-square (plasma) fractal on a wrapping grid, with the reference's roughness (the noise
  amplitude divided by wibble_decay**2 per halving).
- The constants of snow, frost and elastic_transform, and the fog fractal's 32-pixel map, are our best knowledge
  of the CIFAR script's.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

Corruption = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]

SEVERITIES = (1, 2, 3, 4, 5)

# Per-severity constants for 32x32 images, severity 1 first.
GAUSSIAN_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)  # std
SHOT_NOISE = (500, 250, 100, 75, 50)  # photons at full intensity
IMPULSE_NOISE = (0.01, 0.02, 0.03, 0.05, 0.07)  # fraction of values set to 0 or 1
DEFOCUS_BLUR = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))  # disk radius, anti-alias sigma
GLASS_BLUR = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))  # sigma, distance, iterations
MOTION_BLUR = ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3))  # radius, sigma
ZOOM_BLUR = (6, 11, 16, 21, 26)  # zooms 1.00, 1.01, ... (numpy's arange(1, 1.06, 0.01) has 6, and so on)
# mean, std, zoom, threshold of the snow layer; radius, sigma of its streaks; weight of the clean image
SNOW = ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))
FROST = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))  # weight of the image, of the frost
FOG = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))  # strength, wibble decay
BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)  # added to V
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)  # factor on the distance from the mean
# displacement alpha, its smoothing sigma, affine jitter; fractions of the image size
ELASTIC_TRANSFORM = ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)  # side of the intermediate image
JPEG_COMPRESSION = (80, 65, 58, 50, 40)  # quality

GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as the reference's RGB -> grey
ICE_TINT = (0.85, 0.93, 1.0)  # frost photographs are blue-white


# ---------------------------------------------------------------- helpers

def _blur_scale(x: torch.Tensor) -> float:
    """Factor for blur widths given in pixels at 32x32 (see the module docstring)."""
    return max(min(x.shape[-2:]) / 32, 1.0)


def _uniform(shape: tuple[int, ...] | torch.Size, low: float, high: float, generator: torch.Generator,
             device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device) * (high - low) + low


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma of RGB images; grey images as they are."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(GREY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def _filter(x: torch.Tensor, kernel: torch.Tensor, padding: str) -> torch.Tensor:
    """Correlate every channel with the same odd-sized 2-D ``kernel``; the borders padded by ``padding``."""
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    planes = F.pad(x.reshape(1, n * c, h, w), (kw // 2, kw // 2, kh // 2, kh // 2), mode=padding)
    # every plane a group of its own: a depthwise convolution, many times faster on CPUs than planes as a batch
    return F.conv2d(planes, kernel.expand(n * c, 1, kh, kw), groups=n * c).view(n, c, h, w)


def _gaussian_kernel(sigma: float, radius: int, device: torch.device) -> torch.Tensor:
    taps = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    return kernel / kernel.sum()


def _gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0, padding: str = "replicate") -> torch.Tensor:
    """Separable gaussian blur of each channel, cut at ``truncate`` sigmas like scipy's gaussian_filter."""
    radius = int(truncate * sigma + 0.5)
    if radius == 0:  # a one-tap kernel is the identity
        return x
    kernel = _gaussian_kernel(sigma, radius, x.device)
    return _filter(_filter(x, kernel.view(1, -1), padding), kernel.view(-1, 1), padding)


def _gather_shifted(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """``out[n, :, i, j] = x[n, :, i + dy, j + dx]`` with indices clamped to the image (edge pixels repeat);
    ``dy`` and ``dx`` are integer tensors broadcastable to (N, 1, H, W)."""
    n, c, h, w = x.shape
    rows = (torch.arange(h, device=x.device).view(h, 1) + dy).clamp(0, h - 1)
    cols = (torch.arange(w, device=x.device) + dx).clamp(0, w - 1)
    index = (rows * w + cols).expand(n, 1, h, w).reshape(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)


def _local_shuffle(x: torch.Tensor, distance: int, generator: torch.Generator) -> torch.Tensor:
    """The reference's sweep: visit rows and columns ``distance + 1`` to ``size - distance`` from the bottom-right,
    row by row, and swap each visited pixel with the one at a random offset in [-distance, distance - 1] per axis.
    A pixel can be carried several steps along as the sweep goes on.

    The sweep is sequential, but only swaps whose 2d x 2d neighbourhoods overlap depend on each other, and those
    are ordered alike by the sweep and by the wave number ``2d * row + column``. So the swaps of one wave run at
    once, for all images: about (2d + 1) * H waves instead of H * W swaps."""
    n, c, h, w = x.shape
    d = distance
    rows, cols = torch.meshgrid(torch.arange(d + 1, h - d + 1), torch.arange(d + 1, w - d + 1), indexing="ij")
    rows, cols = rows.flatten().to(x.device), cols.flatten().to(x.device)
    offsets = torch.randint(-d, d, (2, n, len(rows)), generator=generator, device=x.device)  # raster order
    wave = 2 * d * rows + cols
    order = torch.argsort(wave, descending=True)
    positions = (rows * w + cols)[order].expand(n, -1)
    targets = positions + offsets[0][:, order] * w + offsets[1][:, order]
    # swap source indices rather than pixel values, then move all channels once
    source = torch.arange(h * w, device=x.device).repeat(n, 1)
    start = 0
    for size in torch.unique_consecutive(wave[order], return_counts=True)[1].tolist():
        here, there = positions[:, start:start + size], targets[:, start:start + size]
        mine, theirs = source.gather(1, here), source.gather(1, there)
        source.scatter_(1, here, theirs)
        source.scatter_(1, there, mine)
        start += size
    return x.reshape(n, c, h * w).gather(2, source.unsqueeze(1).expand(n, c, h * w)).view(n, c, h, w)


def _zoom_resampling(size: int, factor: float, device: torch.device) -> torch.Tensor:
    """(size, size) matrix of a bilinear zoom by ``factor`` >= 1 about the centre along one axis."""
    centre = size / 2
    source = (torch.arange(size, device=device) + 0.5 - centre) / factor + centre - 0.5
    below = source.floor()
    weight_above = source - below
    below = below.long()
    matrix = torch.zeros(size, size, device=device)
    rows = torch.arange(size, device=device)
    # edge pixels repeat where the sample falls half a pixel outside
    matrix.index_put_((rows, below.clamp(0, size - 1)), 1 - weight_above, accumulate=True)
    matrix.index_put_((rows, (below + 1).clamp(0, size - 1)), weight_above, accumulate=True)
    return matrix


def _resample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``rows @ image @ cols.T`` for every channel of every image, as two large matrix products (much faster
    than a batch of small ones)."""
    x = x @ cols.T
    return (x.transpose(-1, -2) @ rows.T).transpose(-1, -2)


def _centre_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Magnify about the image centre by ``factor`` >= 1, keeping the size."""
    h, w = x.shape[-2:]
    return _resample(x, _zoom_resampling(h, factor, x.device), _zoom_resampling(w, factor, x.device))


def _motion_blur(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick's motion blur: each pixel averages the pixels along a ray towards ``angles`` (degrees per image,
    0 = +x, 90 = +y i.e. down), with gaussian weights falling off from the pixel itself."""
    # ImageMagick's 2 * radius + 1 taps, less those past 4 sigma: together they weigh under 1e-4
    taps = torch.arange(min(2 * math.ceil(radius), math.ceil(4 * sigma)) + 1, device=x.device, dtype=torch.float32)
    weights = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    weights = weights / weights.sum()
    theta = torch.deg2rad(angles.float()).view(-1, 1)
    # offsets are whole pixels, rounded half down, as in ImageMagick's kernel
    dx = torch.ceil(taps * torch.cos(theta) - 0.5).long()
    dy = torch.ceil(taps * torch.sin(theta) - 0.5).long()
    out = torch.zeros_like(x)
    for t in range(len(taps)):
        out += weights[t] * _gather_shifted(x, dy[:, t].view(-1, 1, 1, 1), dx[:, t].view(-1, 1, 1, 1))
    return out


def _plasma_fractal(n: int, size: int, decay: float, generator: torch.Generator,
                    device: torch.device) -> torch.Tensor:
    """(n, size, size) diamond-square fractal in [0, 1] on a wrapping grid; ``size`` is a power of two.

    Every halving of the step adds uniform noise whose amplitude shrinks by ``decay**2``: the reference scales
    its draw by the decayed amplitude twice, so this is the roughness its fog has."""
    grid = torch.zeros(n, size, size, device=device)

    def wobbled(mean: torch.Tensor, amplitude: float) -> torch.Tensor:
        return mean + _uniform(mean.shape, -amplitude, amplitude, generator, device)

    step, amplitude = size, 1.0
    while step >= 2:
        half = step // 2
        corners = grid[:, ::step, ::step]
        # square step: a square's centre is the mean of its four corners
        square = corners + corners.roll(-1, 1)
        square = square + square.roll(-1, 2)
        grid[:, half::step, half::step] = wobbled(square / 4, amplitude)
        # diamond step: an edge midpoint is the mean of the edge's two ends and the two centres beside it
        centres = grid[:, half::step, half::step]
        horizontal = corners + corners.roll(-1, 2) + centres + centres.roll(1, 1)
        vertical = corners + corners.roll(-1, 1) + centres + centres.roll(1, 2)
        grid[:, ::step, half::step] = wobbled(horizontal / 4, amplitude)
        grid[:, half::step, ::step] = wobbled(vertical / 4, amplitude)
        step, amplitude = half, amplitude / decay ** 2
    low = grid.amin(dim=(1, 2), keepdim=True)
    high = grid.amax(dim=(1, 2), keepdim=True)
    return (grid - low) / (high - low)


def _smooth_noise(n: int, h: int, w: int, sigma: float, generator: torch.Generator,
                  device: torch.device) -> torch.Tensor:
    """(n, 1, h, w) gaussian-smoothed white noise with unit standard deviation in every image."""
    noise = _gaussian_blur(torch.randn(n, 1, h, w, generator=generator, device=device), sigma)
    return noise / noise.std(dim=(2, 3), keepdim=True)


def _frost_texture(n: int, h: int, w: int, scale: float, generator: torch.Generator,
                   device: torch.device) -> torch.Tensor:
    """(n, 1, h, w) synthetic frost in [0, 1], standing in for the reference's photographs: patches of ice
    (multi-scale noise through a soft threshold, which gives them crisp edges) crossed by thin bright veins
    (``1 - |noise|`` peaks in a thin line where a smooth noise crosses zero)."""
    patches = sum(weight * _smooth_noise(n, h, w, sigma * scale, generator, device)
                  for sigma, weight in ((1, 0.25), (2, 0.35), (4, 0.4)))
    patches = torch.sigmoid(3 * (patches / patches.std(dim=(2, 3), keepdim=True) - 0.2))
    veins = (1 - _smooth_noise(n, h, w, 2 * scale, generator, device).abs()).clamp(min=0) ** 6
    return (0.15 + 0.6 * patches + 0.4 * veins).clamp(0, 1)


def _box_resampling(size_in: int, size_out: int, device: torch.device) -> torch.Tensor:
    """(size_out, size_in) matrix of PIL's BOX resampling along one axis: an output pixel averages, with equal
    weights, the input pixels whose centres fall in its box (one input pixel wide when enlarging)."""
    scale = size_in / size_out
    support = 0.5 * max(scale, 1.0)
    centres = (torch.arange(size_out, device=device) + 0.5) * scale
    offsets = (torch.arange(size_in, device=device) + 0.5).view(1, -1) - centres.view(-1, 1)
    inside = ((offsets >= -support) & (offsets < support)).float()
    return inside / inside.sum(1, keepdim=True)


def _on_unit_floats(fn: Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]) -> Corruption:
    """Turn a corruption of float images in [0, 1] into one of uint8 images. Its result is clipped to [0, 1]
    here, once, as the reference clips its results."""

    @functools.wraps(fn)
    def on_uint8(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
        out = fn(images.float() / 255, severity, generator)
        return (out.clamp(0, 1) * 255).round_().to(torch.uint8)

    return on_uint8


# ---------------------------------------------------------------- noise

@_on_unit_floats
def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    std = GAUSSIAN_NOISE[severity - 1]
    return x + std * torch.randn(x.shape, generator=generator, device=x.device)


@_on_unit_floats
def shot_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    photons = SHOT_NOISE[severity - 1]
    return torch.poisson(x * photons, generator=generator) / photons


@_on_unit_floats
def impulse_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Salt and pepper, drawn for every channel value on its own."""
    amount = IMPULSE_NOISE[severity - 1]
    hit = torch.rand(x.shape, generator=generator, device=x.device) < amount
    salt = torch.rand(x.shape, generator=generator, device=x.device) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


# ---------------------------------------------------------------- blur

@_on_unit_floats
def defocus_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Convolution with a disk; the reference anti-aliases the hard-edged disk with a 3x3 gaussian."""
    scale = _blur_scale(x)
    radius, alias_sigma = (v * scale for v in DEFOCUS_BLUR[severity - 1])
    alias_radius = math.ceil(scale)  # the reference's 3x3 at 32x32
    half = int(radius) + alias_radius
    coords = torch.arange(-half, half + 1, device=x.device, dtype=torch.float32)
    disk = (coords.view(-1, 1) ** 2 + coords.view(1, -1) ** 2 <= radius ** 2).float()
    alias = _gaussian_kernel(alias_sigma, alias_radius, x.device)
    alias = torch.outer(alias, alias)[None, None]
    kernel = F.conv2d((disk / disk.sum())[None, None], alias, padding=alias_radius)[0, 0]
    return _filter(x, kernel, "reflect")


@_on_unit_floats
def glass_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Blur, shuffle pixels locally, blur again."""
    scale = _blur_scale(x)
    sigma, distance, iterations = GLASS_BLUR[severity - 1]
    sigma, distance = sigma * scale, max(1, round(distance * scale))
    x = _gaussian_blur(x, sigma)
    for _ in range(iterations):
        x = _local_shuffle(x, distance, generator)
    return _gaussian_blur(x, sigma)


@_on_unit_floats
def motion_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Blur along a random direction within 45 degrees of horizontal, one per image."""
    scale = _blur_scale(x)
    radius, sigma = MOTION_BLUR[severity - 1]
    angles = _uniform((len(x),), -45, 45, generator, x.device)
    return _motion_blur(x, radius * scale, sigma * scale, angles)


@_on_unit_floats
def zoom_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Mean of the image and its zooms about the centre by 1.00, 1.01, ... (1.00 included, as in the reference)."""
    zooms = ZOOM_BLUR[severity - 1]
    out = x.clone()
    for k in range(zooms):
        out += _centre_zoom(x, 1 + 0.01 * k)
    return out / (zooms + 1)


# ---------------------------------------------------------------- weather

@_on_unit_floats
def snow(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Thresholded noise as flakes, streaked downwards by motion blur, added twice (once turned by 180
    degrees) over an image whitened towards its grey version."""
    mean, std, zoom, threshold, radius, sigma, keep = SNOW[severity - 1]
    scale = _blur_scale(x)
    n, _, h, w = x.shape
    flakes = mean + std * torch.randn(n, 1, h, w, generator=generator, device=x.device)
    flakes = _centre_zoom(flakes, zoom)
    flakes = torch.where(flakes < threshold, 0.0, flakes).clamp(0, 1)
    angles = _uniform((n,), -135, -45, generator, x.device)  # rays point up: a flake smears downwards
    flakes = _motion_blur(flakes, radius * scale, sigma * scale, angles)
    x = keep * x + (1 - keep) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
    return x + flakes + flakes.flip(-2, -1)


@_on_unit_floats
def frost(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Image dimmed and overlaid with frost. The frost is synthesised (no photographs, see the module docstring);
    ice-blue on RGB images, its luma on grey ones."""
    image_weight, frost_weight = FROST[severity - 1]
    n, c, h, w = x.shape
    texture = _frost_texture(n, h, w, _blur_scale(x), generator, x.device)
    tint = torch.tensor(ICE_TINT, device=x.device).view(1, 3, 1, 1)
    tint = tint if c == 3 else _grey(tint)
    return image_weight * x + frost_weight * texture * tint


@_on_unit_floats
def fog(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """A plasma fractal added as grey haze, then everything scaled by peak / (peak + strength), so that nothing
    gets brighter than the image's brightest value."""
    strength, decay = FOG[severity - 1]
    n, _, h, w = x.shape
    size = 2 ** math.ceil(math.log2(max(h, w)))  # the reference's 32 at 32x32
    haze = _plasma_fractal(n, size, decay, generator, x.device)[:, None, :h, :w]
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * haze) * peak / (peak + strength)


# ---------------------------------------------------------------- digital

@_on_unit_floats
def brightness(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """V of HSV raised by a constant, capped at 1, with hue and saturation kept.

    With H and S fixed every RGB channel is proportional to V, so scaling the pixel by V'/V is the HSV round
    trip without the conversion; black (V = 0, S = 0) becomes grey V'. For C = 1, V is the intensity."""
    value = x.amax(1, keepdim=True)
    raised = (value + BRIGHTNESS[severity - 1]).clamp(max=1)
    return torch.where(value > 0, x * raised / value.clamp(min=1e-12), raised)


@_on_unit_floats
def contrast(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Pull every channel towards its own mean over the image."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * CONTRAST[severity - 1] + mean


@_on_unit_floats
def elastic_transform(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """A random affine (three anchors jittered) and a smooth random displacement field, one resampling.

    The constants are fractions of the image size, as in the reference (its IMSIZE * constant)."""
    n, _, h, w = x.shape
    size = min(h, w)
    alpha, sigma, jitter = (v * size for v in ELASTIC_TRANSFORM[severity - 1])
    device = x.device
    # pixel (column, row) of each output pixel, then displaced by the smoothed field
    rows, cols = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                                torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    field = _uniform((n, 2, h, w), -1, 1, generator, device)
    field = _gaussian_blur(field, sigma, truncate=3, padding="reflect") * alpha
    points = torch.stack([cols + field[:, 0], rows + field[:, 1], torch.ones_like(field[:, 0])], -1)
    # The reference warps with the affine taking the anchors to their jittered places; sampling needs its inverse,
    # the affine taking the jittered anchors back, solved from the three pairs.
    cx, cy, arm = w // 2, h // 2, size // 3
    anchors = torch.tensor([[cx + arm, cy + arm], [cx + arm, cy - arm], [cx - arm, cy - arm]],
                           device=device, dtype=torch.float32)
    jittered = anchors + _uniform((n, 3, 2), -jitter, jitter, generator, device)
    inverse = torch.linalg.solve(torch.cat([jittered, torch.ones(n, 3, 1, device=device)], -1), anchors.expand(n, 3, 2))
    source = points.view(n, h * w, 3) @ inverse  # (n, h*w, 2) pixel coordinates
    sizes = torch.tensor([w, h], device=device, dtype=torch.float32)
    grid = ((2 * source + 1) / sizes - 1).view(n, h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@_on_unit_floats
def pixelate(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Down to a fraction of the size and back up, both with PIL's BOX filter (as separable matrices)."""
    factor = PIXELATE[severity - 1]
    h, w = x.shape[-2:]
    small_h, small_w = int(h * factor), int(w * factor)
    rows = _box_resampling(small_h, h, x.device) @ _box_resampling(h, small_h, x.device)
    cols = _box_resampling(small_w, w, x.device) @ _box_resampling(w, small_w, x.device)
    return _resample(x, rows, cols)


def jpeg_compression(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Encode and decode every image as JPEG at the severity's quality (libjpeg on the CPU)."""
    with warnings.catch_warnings():  # torchvision 0.29 announces a move of its JPEG codec to TorchCodec
        warnings.simplefilter("ignore", UserWarning)
        encoded = encode_jpeg(list(images.cpu()), quality=JPEG_COMPRESSION[severity - 1])
        return torch.stack(decode_jpeg(encoded)).to(images.device)


# ---------------------------------------------------------------- public API

CORRUPTIONS: dict[str, Corruption] = {fn.__name__: fn for fn in (
    gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur, zoom_blur,
    snow, frost, fog, brightness, contrast, elastic_transform, pixelate, jpeg_compression)}


def corrupt(images: torch.Tensor, name: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """images: uint8 (N, C, H, W) with C in {1, 3}, any H, W >= 8, on any device (CPU or CUDA).
    Returns uint8 of the same shape, dtype and device. Deterministic for a given generator state."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity!r} is not among {SEVERITIES}")
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3) or min(images.shape[-2:]) < 8:
        raise ValueError(f"expected uint8 images (N, 1 or 3, H >= 8, W >= 8), got {images.dtype} {tuple(images.shape)}")
    if generator.device.type != images.device.type:
        raise ValueError(f"the generator is on {generator.device}, the images on {images.device}")
    if len(images) == 0:
        return images.clone()
    return CORRUPTIONS[name](images, severity, generator)
