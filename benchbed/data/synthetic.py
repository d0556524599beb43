"""Random images of a dataset's real shape, for measuring speed (``benchbed bench``) and for trying a
suite's code paths where the dataset itself is absent."""
from __future__ import annotations

import torch

from benchbed.data.bundle import DataBundle


def synthetic_data(input_shape: tuple[int, int, int], num_classes: int, images: int, generator: torch.Generator) -> DataBundle:
    x = torch.randint(0, 256, (images, *input_shape), dtype=torch.uint8, generator=generator)
    y = torch.randint(0, num_classes, (images,), generator=generator)
    channels = input_shape[0]
    return DataBundle(name="synthetic", train_x=x, train_y=y, val_x=x[:256], val_y=y[:256], test_x=x[:256],
                      test_y=y[:256], num_classes=num_classes, mean=(0.5,) * channels, std=(0.25,) * channels,
                      crop_padding=4 if input_shape[1] >= 32 else 1, flip=True)
