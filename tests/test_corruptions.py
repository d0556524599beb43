"""CIFAR-C corruptions: the contract of ``corrupt`` for every corruption and severity, determinism, severity
ordering, and agreement with independent references where one is at hand (PIL, matplotlib's HSV, scipy, a
plain sequential glass-blur sweep)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image
from scipy import ndimage

from benchbed.robustness.corruption_accuracy import CIFAR_C
from benchbed.robustness.corruptions import (BRIGHTNESS, CORRUPTIONS, DEFOCUS_BLUR, JPEG_COMPRESSION, PIXELATE,
                                             SEVERITIES, _local_shuffle, corrupt)

# torchvision 0.29 warns on every JPEG call that its image codecs will move to TorchCodec
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

NAMES = list(CORRUPTIONS)
RANDOM = ["gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost", "fog",
          "elastic_transform"]
NOT_RANDOM = [name for name in NAMES if name not in RANDOM]
MONOTONE = ["gaussian_noise", "shot_noise", "impulse_noise", "contrast", "brightness", "pixelate", "defocus_blur"]
SPATIAL = ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "elastic_transform", "pixelate"]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_images(n: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, height, width), dtype=torch.uint8, generator=seeded(seed))


def natural_images(n: int = 6, size: int = 32) -> torch.Tensor:
    """RGB stand-ins for photographs: smooth colour gradients under hard-edged rectangles and a disk. Blurs and
    resampling respond to them as to photos, where on pure noise they would respond erratically."""
    g = seeded(1)
    ramp = torch.linspace(0, 1, size)
    rows, cols = ramp.view(-1, 1), ramp.view(1, -1)
    base, slope_x, slope_y = (torch.rand(n, 3, 1, 1, generator=g) for _ in range(3))
    images = 0.2 + 0.3 * base + 0.25 * slope_x * cols + 0.25 * slope_y * rows
    for image in images:
        for _ in range(3):
            top, left = torch.randint(0, size - 8, (2,), generator=g).tolist()
            tall, wide = torch.randint(4, 16, (2,), generator=g).tolist()
            image[:, top:top + tall, left:left + wide] = torch.rand(3, 1, 1, generator=g) * 0.8 + 0.1
        cy, cx = torch.randint(8, size - 8, (2,), generator=g).tolist()
        image[:, (rows * size - cy) ** 2 + (cols * size - cx) ** 2 < 25] = torch.rand(3, 1, generator=g)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


# rgb32: CIFAR; grey8: scikit-learn's digits; grey28: Fashion-MNIST
BATCHES = {"rgb32": random_images(4, 3, 32, 32), "grey8": random_images(16, 1, 8, 8),
           "grey28": random_images(4, 1, 28, 28)}


def test_names_in_the_standard_order_and_severities():
    assert NAMES == list(CIFAR_C)
    assert SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("kind", BATCHES)
@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", NAMES)
def test_contract(name, severity, kind):
    images = BATCHES[kind]
    before = images.clone()
    out = corrupt(images, name, severity, seeded(severity))
    assert out.shape == images.shape and out.dtype == torch.uint8 and out.device == images.device
    assert torch.equal(images, before), "the input must not be modified"
    changed = (out != images).flatten(1).any(1)
    # 1% impulse noise can miss all 64 values of an 8x8 grey image; the batch as a whole must change
    assert changed.all() if kind != "grey8" else changed.any()


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", [n for n in NOT_RANDOM if n != "jpeg_compression"])  # JPEG mixes channels (YCbCr)
def test_grey_images_are_corrupted_as_each_channel_of_a_grey_rgb_image(name, severity):
    """On grey images a corruption is applied per channel: the single channel comes out as each channel of
    the same image repeated three times (the deterministic corruptions, where no random draw differs)."""
    grey = natural_images(4, 28)[:, :1]
    as_rgb = corrupt(grey.expand(-1, 3, -1, -1).contiguous(), name, severity, seeded(0))
    alone = corrupt(grey, name, severity, seeded(0))
    for channel in range(3):
        assert (as_rgb[:, channel:channel + 1].int() - alone.int()).abs().max() <= 1  # float rounding


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", NAMES)
def test_no_wraparound_at_the_ends_of_the_range(name, severity):
    """A value pushed past 255 or below 0 must clip, not wrap: white stays bright and black stays dark
    (impulse noise alone flips a few per cent of the values on purpose)."""
    for shape in ((2, 3, 32, 32), (2, 1, 8, 8)):
        white = corrupt(torch.full(shape, 255, dtype=torch.uint8), name, severity, seeded(0))
        black = corrupt(torch.zeros(shape, dtype=torch.uint8), name, severity, seeded(0))
        assert (white < 64).float().mean() <= 0.1
        assert (black > 191).float().mean() <= 0.1


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_never_darkens(severity):
    for images in BATCHES.values():
        assert (corrupt(images, "brightness", severity, seeded(0)) >= images).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name):
    for images in BATCHES.values():
        assert torch.equal(corrupt(images, name, 3, seeded(7)), corrupt(images, name, 3, seeded(7)))


@pytest.mark.parametrize("name", RANDOM)
def test_different_seeds_differ(name):
    images = BATCHES["rgb32"]
    assert not torch.equal(corrupt(images, name, 3, seeded(7)), corrupt(images, name, 3, seeded(8)))


@pytest.mark.parametrize("name", NOT_RANDOM)
def test_corruptions_without_randomness_ignore_the_seed(name):
    images = BATCHES["rgb32"]
    assert torch.equal(corrupt(images, name, 3, seeded(7)), corrupt(images, name, 3, seeded(8)))


@pytest.mark.parametrize("name", NAMES)
def test_only_the_given_generator_is_used(name):
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    generator = seeded(3)
    corrupt(BATCHES["rgb32"], name, 5, generator)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state))
    if name in RANDOM:
        assert not torch.equal(generator.get_state(), seeded(3).get_state())


@pytest.mark.parametrize("name", MONOTONE)
def test_change_grows_with_severity(name):
    images = natural_images()
    change = [(corrupt(images, name, s, seeded(0)).float() - images.float()).abs().mean().item() for s in SEVERITIES]
    assert all(later >= earlier * 0.97 for earlier, later in zip(change, change[1:])), change
    assert change[-1] > 1.5 * change[0], change


@pytest.mark.parametrize("name", NAMES)
def test_other_sizes(name):
    """Non-square, and large enough (48 px) for the blur widths to grow past their 32x32 values."""
    images = random_images(2, 3, 48, 70)
    out = corrupt(images, name, 5, seeded(0))
    assert out.shape == images.shape and (out != images).any()


@pytest.mark.parametrize("name", SPATIAL)
def test_blurs_and_resampling_keep_flat_images_flat(name):
    flat = torch.full((2, 3, 32, 32), 100, dtype=torch.uint8)
    for severity in SEVERITIES:
        assert torch.equal(corrupt(flat, name, severity, seeded(0)), flat)


def test_empty_batch():
    empty = torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
    assert corrupt(empty, "snow", 3, seeded(0)).shape == empty.shape


@pytest.mark.parametrize("images,name,severity", [
    (torch.zeros(1, 3, 32, 32), "fog", 1),  # not uint8
    (torch.zeros(1, 2, 32, 32, dtype=torch.uint8), "fog", 1),  # two channels
    (torch.zeros(3, 32, 32, dtype=torch.uint8), "fog", 1),  # no batch dimension
    (torch.zeros(1, 3, 7, 32, dtype=torch.uint8), "fog", 1),  # too small
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "rain", 1),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "fog", 0),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "fog", 6),
])
def test_bad_arguments_raise(images, name, severity):
    with pytest.raises(ValueError):
        corrupt(images, name, severity, seeded(0))


# ---------------------------------------------------------------- against independent references

def as_hwc(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_is_the_hsv_value_shift(severity):
    images = BATCHES["rgb32"].clone()
    images[0] = 0  # black has no hue: it turns grey
    hsv = rgb_to_hsv(as_hwc(images) / 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + BRIGHTNESS[severity - 1], 0, 1)
    expected = np.round(hsv_to_rgb(hsv) * 255)
    ours = as_hwc(corrupt(images, "brightness", severity, seeded(0)))
    assert np.abs(ours - expected).max() <= 1


@pytest.mark.parametrize("severity", SEVERITIES)
def test_pixelate_is_pil_box_down_and_up(severity):
    images = natural_images()
    small = int(32 * PIXELATE[severity - 1])
    expected = np.stack([np.array(Image.fromarray(im).resize((small, small), Image.BOX).resize((32, 32), Image.BOX))
                         for im in as_hwc(images)])
    ours = as_hwc(corrupt(images, "pixelate", severity, seeded(0))).astype(int)
    assert np.abs(ours - expected).max() <= 1  # PIL rounds in fixed point


@pytest.mark.parametrize("severity", SEVERITIES)
def test_jpeg_is_close_to_pil(severity):
    images = natural_images()
    expected = []
    for im in as_hwc(images):
        buffer = io.BytesIO()
        Image.fromarray(im).save(buffer, "JPEG", quality=JPEG_COMPRESSION[severity - 1])
        expected.append(np.array(Image.open(buffer)))
    ours = as_hwc(corrupt(images, "jpeg_compression", severity, seeded(0))).astype(int)
    assert np.abs(ours - np.stack(expected)).mean() < 0.5


@pytest.mark.parametrize("severity", SEVERITIES)
def test_defocus_is_the_anti_aliased_disk(severity):
    """The kernel as the reference builds it: a disk on a 17x17 grid, smoothed by a 3x3 gaussian; borders mirrored."""
    radius, alias_sigma = DEFOCUS_BLUR[severity - 1]
    grid = np.arange(-8, 9)
    disk = (grid[:, None] ** 2 + grid[None, :] ** 2 <= radius ** 2).astype(float)
    alias = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_sigma ** 2))
    alias /= alias.sum()
    kernel = ndimage.correlate(disk / disk.sum(), np.outer(alias, alias), mode="constant")
    images = natural_images(2)
    expected = np.stack([ndimage.correlate(plane, kernel, mode="mirror")
                         for plane in images.reshape(-1, 32, 32).numpy() / 255])
    ours = corrupt(images, "defocus_blur", severity, seeded(0)).reshape(-1, 32, 32).numpy()
    assert np.abs(ours - np.round(expected * 255)).max() <= 1


def sequential_sweep(images: torch.Tensor, distance: int, offsets: torch.Tensor) -> torch.Tensor:
    """The glass-blur shuffle one swap at a time, as the reference runs it; ``offsets`` (2, N, visited pixels)
    in raster order."""
    out = images.clone()
    visited = range(distance + 1, images.shape[-1] - distance + 1)
    index = {(r, c): k for k, (r, c) in enumerate((r, c) for r in visited for c in visited)}
    for n in range(len(out)):
        for r in reversed(visited):
            for c in reversed(visited):
                dy, dx = offsets[:, n, index[r, c]].tolist()
                here, there = out[n, :, r, c].clone(), out[n, :, r + dy, c + dx].clone()
                out[n, :, r, c], out[n, :, r + dy, c + dx] = there, here
    return out


@pytest.mark.parametrize("distance,size", [(1, 16), (2, 12), (3, 14)])
def test_glass_shuffle_in_waves_equals_the_sequential_sweep(distance, size):
    images = torch.rand(2, 3, size, size)
    visited = (size - 2 * distance) ** 2
    offsets = torch.randint(-distance, distance, (2, 2, visited), generator=seeded(5))
    assert torch.equal(_local_shuffle(images, distance, seeded(5)), sequential_sweep(images, distance, offsets))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_on_cuda(name):
    images = BATCHES["rgb32"].cuda()
    generator = torch.Generator(device="cuda").manual_seed(0)
    out = corrupt(images, name, 3, generator)
    assert out.device == images.device and out.dtype == torch.uint8 and out.shape == images.shape
    assert (out != images).any()
    assert torch.equal(out, corrupt(images, name, 3, torch.Generator(device="cuda").manual_seed(0)))
