"""The knapsack authors' patch catalogue: the patch shapes (height x width) their search offers per square
map size, in their order, as listed in yg320/secure_inference ``research/distortion/parameters/
block_sizes.py`` (each list there ends with the identity and zero markers, which ``knapsack`` adds
itself). Data, transcribed: some lists repeat a shape (14, 28, 56, 112 px) and the 14 px list offers
4x15 on a 14-px map; ``knapsack.site_catalogue`` keeps each distinct patch once. The 320 px list is the
authors' 256 px one (they list no 320x320 patch)."""
from __future__ import annotations


def _shapes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in item.split("x")) for item in text.split()]


AUTHORS_PATCHES: dict[int, list[tuple[int, int]]] = {
    1: _shapes(
        "1x1"),
    2: _shapes(
        "1x1 1x2 2x1 2x2"),
    4: _shapes(
        "1x1 1x2 2x1 2x2 2x4 4x2 4x4"),
    7: _shapes(
        "1x1 1x2 2x1 1x3 3x1 1x4 2x2 4x1 2x3 3x2 1x7 2x4 4x2 7x1 3x3 3x4 4x3 2x7 4x4 7x2 4x7 7x4 7x7"),
    8: _shapes(
        "1x1 1x2 2x1 1x3 3x1 1x4 2x2 4x1 2x3 3x2 1x8 2x4 4x2 8x1 3x3 3x4 4x3 2x8 4x4 8x2 4x8 8x4 8x8"),
    14: _shapes(
        "1x1 1x2 2x1 1x3 3x1 1x4 2x2 4x1 1x5 5x1 1x6 2x3 3x2 6x1 1x7 2x4 4x2 7x1 3x3 2x5 5x2 2x6 3x4 4x3 6x2 "
        "3x5 5x3 2x7 4x4 7x2 3x6 6x3 4x5 5x4 3x7 4x6 6x4 7x3 5x5 3x9 9x3 5x6 6x5 4x7 7x4 3x12 6x6 12x4 7x7 "
        "5x10 10x5 4x15 5x12 6x10 10x6 12x5 4x14 7x7 14x4 6x12 12x6 5x14 7x10 10x7 14x5 6x14 7x12 12x7 14x6 "
        "10x10 7x14 14x7 14x14"),
    16: _shapes(
        "1x1 1x2 2x1 1x3 3x1 1x4 2x2 4x1 1x5 5x1 1x6 2x3 3x2 6x1 1x8 2x4 4x2 8x1 3x3 2x5 5x2 2x6 3x4 4x3 6x2 "
        "3x5 5x3 2x8 4x4 8x2 3x6 6x3 4x5 5x4 3x8 4x6 6x4 8x3 5x5 3x9 9x3 5x6 6x5 4x8 8x4 3x12 6x6 6x8 8x6 "
        "12x4 7x7 5x10 10x5 4x15 5x12 6x10 10x6 12x5 4x16 8x8 16x4 6x12 12x6 5x16 8x10 10x8 16x5 6x16 8x12 "
        "12x8 16x6 10x10 8x16 16x8 12x12 16x16"),
    28: _shapes(
        "1x1 1x2 2x1 1x3 3x1 1x4 2x2 4x1 1x5 5x1 1x6 2x3 3x2 6x1 1x7 2x4 4x2 7x1 3x3 2x5 5x2 2x6 3x4 4x3 6x2 "
        "3x5 5x3 2x7 4x4 7x2 3x6 6x3 4x5 5x4 3x7 4x6 6x4 7x3 5x5 3x9 9x3 5x6 6x5 4x7 7x4 3x12 6x6 6x7 7x6 "
        "12x4 7x7 5x10 10x5 4x15 5x12 6x10 10x6 12x5 4x14 7x7 14x4 6x12 12x6 5x14 7x10 10x7 14x5 6x14 7x12 "
        "12x7 14x6 10x10 7x14 14x7 12x12 14x14 21x21 28x28"),
    32: _shapes(
        "1x1 1x2 2x1 1x3 3x1 1x4 2x2 4x1 1x5 5x1 1x6 2x3 3x2 6x1 1x8 2x4 4x2 8x1 3x3 2x5 5x2 2x6 3x4 4x3 6x2 "
        "3x5 5x3 2x8 4x4 8x2 3x6 6x3 4x5 5x4 3x8 4x6 6x4 8x3 5x5 3x9 9x3 5x6 6x5 4x8 8x4 3x12 6x6 6x8 8x6 "
        "12x4 7x7 5x10 10x5 4x15 5x12 6x10 10x6 12x5 4x16 8x8 16x4 6x12 12x6 5x16 8x10 10x8 16x5 6x16 8x12 "
        "12x8 16x6 10x10 8x16 16x8 12x12 16x16 24x24 32x32"),
    56: _shapes(
        "1x1 1x2 2x1 1x3 3x1 1x4 2x2 4x1 1x5 5x1 1x7 2x3 3x2 7x1 2x4 4x2 3x3 2x5 5x2 2x7 3x4 4x3 7x2 3x5 5x3 "
        "2x8 4x4 8x2 3x7 7x3 4x5 5x4 2x12 3x8 4x7 7x4 8x3 12x2 5x5 3x9 9x3 5x7 7x5 2x14 4x8 8x4 14x2 3x12 6x6 "
        "12x3 5x8 8x5 4x12 7x8 8x7 12x4 7x7 5x10 10x5 7x9 9x7 5x12 7x10 10x7 12x5 4x14 8x8 14x4 7x12 12x7 "
        "5x15 15x5 8x10 10x8 9x9 7x14 8x12 12x8 14x7 10x10 9x12 12x9 8x14 14x8 11x11 8x14 14x8 12x12 10x14 "
        "14x10 12x14 14x12 13x13 12x14 14x12 14x14 28x28 56x56"),
    64: _shapes(
        "1x1 1x2 2x1 1x3 3x1 1x4 2x2 4x1 1x5 5x1 1x6 2x3 3x2 6x1 2x4 4x2 3x3 2x5 5x2 2x6 3x4 4x3 6x2 3x5 5x3 "
        "2x8 4x4 8x2 3x6 6x3 4x5 5x4 2x12 3x8 4x6 6x4 8x3 12x2 5x5 3x9 9x3 5x6 6x5 2x16 4x8 8x4 16x2 3x12 6x6 "
        "12x3 5x8 8x5 4x12 6x8 8x6 12x4 7x7 5x10 10x5 6x9 9x6 5x12 6x10 10x6 12x5 4x16 8x8 16x4 6x12 12x6 "
        "5x15 15x5 8x10 10x8 9x9 6x16 8x12 12x8 16x6 10x10 9x12 12x9 8x14 14x8 11x11 8x16 16x8 12x12 10x16 "
        "16x10 12x14 14x12 13x13 12x16 16x12 14x14 16x16 32x32 64x64"),
    112: _shapes(
        "1x1 1x2 2x1 1x3 3x1 1x4 2x2 4x1 1x5 5x1 1x7 2x3 3x2 7x1 2x4 4x2 3x3 2x5 5x2 2x7 3x4 4x3 7x2 3x5 5x3 "
        "2x8 4x4 8x2 3x7 7x3 4x5 5x4 2x12 3x8 4x7 7x4 8x3 12x2 5x5 3x9 9x3 5x7 7x5 2x14 4x8 8x4 14x2 3x12 6x6 "
        "12x3 5x8 8x5 4x12 7x8 8x7 12x4 7x7 5x10 10x5 7x9 9x7 5x12 7x10 10x7 12x5 4x14 8x8 14x4 7x12 12x7 "
        "5x15 15x5 8x10 10x8 9x9 7x14 8x12 12x8 14x7 10x10 9x12 12x9 8x14 14x8 11x11 8x14 14x8 12x12 10x14 "
        "14x10 12x14 14x12 13x13 12x14 14x12 14x14 28x28 56x56 112x112"),
    128: _shapes(
        "1x1 1x2 2x1 1x3 3x1 1x4 2x2 4x1 1x5 5x1 1x6 2x3 3x2 6x1 2x4 4x2 3x3 2x5 5x2 2x6 3x4 4x3 6x2 3x5 5x3 "
        "2x8 4x4 8x2 3x6 6x3 4x5 5x4 2x12 3x8 4x6 6x4 8x3 12x2 5x5 3x9 9x3 5x6 6x5 2x16 4x8 8x4 16x2 3x12 6x6 "
        "12x3 5x8 8x5 4x12 6x8 8x6 12x4 7x7 5x10 10x5 6x9 9x6 5x12 6x10 10x6 12x5 4x16 8x8 16x4 6x12 12x6 "
        "5x15 15x5 8x10 10x8 9x9 6x16 8x12 12x8 16x6 10x10 9x12 12x9 8x14 14x8 11x11 8x16 16x8 12x12 10x16 "
        "16x10 12x14 14x12 13x13 12x16 16x12 14x14 16x16 32x32 64x64 128x128"),
    256: _shapes(
        "1x1 1x2 2x1 1x3 3x1 1x4 2x2 4x1 1x5 5x1 1x6 2x3 3x2 6x1 2x4 4x2 3x3 2x5 5x2 2x6 3x4 4x3 6x2 3x5 5x3 "
        "2x8 4x4 8x2 3x6 6x3 4x5 5x4 2x12 3x8 4x6 6x4 8x3 12x2 5x5 3x9 9x3 5x6 6x5 2x16 4x8 8x4 16x2 3x12 6x6 "
        "12x3 5x8 8x5 4x12 6x8 8x6 12x4 7x7 5x10 10x5 6x9 9x6 5x12 6x10 10x6 12x5 4x16 8x8 16x4 6x12 12x6 "
        "5x15 15x5 8x10 10x8 9x9 6x16 8x12 12x8 16x6 10x10 9x12 12x9 8x14 14x8 11x11 8x16 16x8 12x12 10x16 "
        "16x10 12x14 14x12 13x13 12x16 16x12 14x14 16x16 32x32 64x64 128x128 256x256"),
    320: _shapes(
        "1x1 1x2 2x1 1x3 3x1 1x4 2x2 4x1 1x5 5x1 1x6 2x3 3x2 6x1 2x4 4x2 3x3 2x5 5x2 2x6 3x4 4x3 6x2 3x5 5x3 "
        "2x8 4x4 8x2 3x6 6x3 4x5 5x4 2x12 3x8 4x6 6x4 8x3 12x2 5x5 3x9 9x3 5x6 6x5 2x16 4x8 8x4 16x2 3x12 6x6 "
        "12x3 5x8 8x5 4x12 6x8 8x6 12x4 7x7 5x10 10x5 6x9 9x6 5x12 6x10 10x6 12x5 4x16 8x8 16x4 6x12 12x6 "
        "5x15 15x5 8x10 10x8 9x9 6x16 8x12 12x8 16x6 10x10 9x12 12x9 8x14 14x8 11x11 8x16 16x8 12x12 10x16 "
        "16x10 12x14 14x12 13x13 12x16 16x12 14x14 16x16 32x32 64x64 128x128 256x256"),
    512: _shapes(
        "1x1 1x2 2x1 1x3 3x1 1x4 2x2 4x1 1x5 5x1 1x6 2x3 3x2 6x1 2x4 4x2 3x3 2x5 5x2 2x6 3x4 4x3 6x2 3x5 5x3 "
        "2x8 4x4 8x2 3x6 6x3 4x5 5x4 2x12 3x8 4x6 6x4 8x3 12x2 5x5 3x9 9x3 5x6 6x5 2x16 4x8 8x4 16x2 3x12 6x6 "
        "12x3 5x8 8x5 4x12 6x8 8x6 12x4 7x7 5x10 10x5 6x9 9x6 5x12 6x10 10x6 12x5 4x16 8x8 16x4 6x12 12x6 "
        "5x15 15x5 8x10 10x8 9x9 6x16 8x12 12x8 16x6 10x10 9x12 12x9 8x14 14x8 11x11 8x16 16x8 12x12 10x16 "
        "16x10 12x14 14x12 13x13 12x16 16x12 14x14 16x16 32x32 64x64 128x128 256x256 512x512"),
}
