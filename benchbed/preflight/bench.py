"""``benchbed bench``: training and inference throughput of a model with each kind of site, on the
current device, next to a plain reference loop and a conv-only limit.

- harness: the core's ``fit`` and ``accuracy`` — data resident on the device as uint8, batched
  augmentation on the device, channels_last, bf16 autocast where the precision says so
  (``benchbed.train.devices``: on CUDA; with ``native`` also on CPUs with native bf16); inference
  on the model as evaluation runs it (``inference_model``: BatchNorms folded);
- reference: what a plain script does — a torch ``DataLoader`` over a CPU dataset with per-image
  torchvision transforms, fp32, one host-to-device copy per batch; the same model and site kernels;
- conv-only limit: the same network's convolutions and linear layer alone (BatchNorm and every
  site made identity), forward and backward on resident data — the practical ceiling.
"""
from __future__ import annotations

import copy
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from benchbed.config import EvaluationSettings, TrainRecipe
from benchbed.data.bundle import DataBundle, to_float
from benchbed.data.synthetic import synthetic_data
from benchbed.model.registry import ModelRegistry
from benchbed.model.sites import ReLUSite, counted_sites
from benchbed.robustness.evaluate import inference_model
from benchbed.train.allocator import keep_freed_pages
from benchbed.train.devices import Precision, autocast, precision, set_precision, synchronize
from benchbed.train.loop import accuracy, fit
from benchbed.train.session import Session

SITE_KINDS = ("relu", "masked", "polynomial", "patch")


def configure_sites(model: nn.Module, kind: str, generator: torch.Generator) -> None:
    """Switch every counted site: ``masked`` keeps a random 10% of pixels, ``polynomial`` is a quadratic
    everywhere, ``patch`` gates 2x2 patches."""
    for site in counted_sites(model).values():
        if kind == "masked":
            site.set_mask((torch.rand(site.shape, generator=generator) < 0.1).float())
        elif kind == "polynomial":
            site.set_polynomial(torch.tensor([[0.1, 0.5, 0.2]]).repeat(site.shape[0], 1))
        elif kind == "patch":
            site.set_patches([(2, 2)] * site.shape[0])


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


class _ReferenceDataset(Dataset):
    def __init__(self, data: DataBundle):
        self.x, self.y = data.train_x.cpu(), data.train_y.cpu()
        self.transform = v2.Compose([v2.RandomCrop(data.input_shape[1:], padding=data.crop_padding),
                                     v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.transform(self.x[i]), self.y[i]


def _reference_train(model: nn.Module, data: DataBundle, batch_size: int, device: torch.device) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()
    for x, y in DataLoader(_ReferenceDataset(data), batch_size=batch_size, shuffle=True, drop_last=True):
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def _reference_infer(model: nn.Module, data: DataBundle, batch_size: int, device: torch.device) -> None:
    model.eval()
    x_all = data.train_x.cpu()
    for start in range(0, len(x_all), batch_size):
        model(x_all[start:start + batch_size].float().div(255).to(device)).argmax(1).cpu()


def _conv_only(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without BatchNorm and without any ReLU site: convolutions and the classifier."""
    limit = copy.deepcopy(model)
    for module in list(limit.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, (nn.BatchNorm2d, ReLUSite)):
                setattr(module, child_name, nn.Identity())
    return limit


def _conv_limit(model: nn.Module, data: DataBundle, batch_size: int, device: torch.device) -> None:
    model.train()
    for start in range(0, len(data.train_y) - batch_size + 1, batch_size):
        x = to_float(data.train_x[start:start + batch_size])
        with autocast(device):
            out = model(x)
        out.float().sum().backward()


def _rounds(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int,
            min_seconds: float) -> dict[str, list[float]]:
    """Each function's time in every round, the functions taking turns within a round (in reverse order
    every other round), after one untimed call each; at least ``repeats`` rounds, and more until every
    function has run ``min_seconds`` in all. This machine's speed drifts by a third over seconds (a 50 ms
    pass read 41-63 ms within one process), so a short function needs many rounds for its fastest one to
    be representative, and a ratio is only fair between passes taken side by side."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    round_ = 0
    while round_ < repeats or min(sum(t) for t in times.values()) < min_seconds:
        for name in (list(fns) if round_ % 2 == 0 else list(fns)[::-1]):
            times[name].append(_timed(fns[name], device))
        round_ += 1
    return times


def _paired_speedup(reference: list[float], harness: list[float]) -> float:
    """The median over rounds of the reference's time over the harness's in the same round."""
    return statistics.median(r / h for r, h in zip(reference, harness))


def bench(models: ModelRegistry, model_name: str, input_shape: tuple[int, int, int], num_classes: int, *,
          batch_size: int, steps: int, infer_batch_size: int = EvaluationSettings().batch_size,
          kinds: tuple[str, ...] = SITE_KINDS, device: torch.device | None = None,
          compile_model: bool = False, repeats: int = 3, min_seconds: float = 1.0,
          precision_choice: Precision = "auto",
          log: Callable[[str], None] = lambda message: None) -> dict:
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    set_precision(precision_choice)
    keep_freed_pages()  # for both loops: the process's allocator
    generator = torch.Generator().manual_seed(0)
    data = synthetic_data(input_shape, num_classes, batch_size * steps, generator)
    resident = data.to(device)
    images = batch_size * steps
    # inference in the batches an evaluation takes (its ``batch_size``), where per-call costs (the
    # convolutions' weight reorders, likely) spread over many images: ResNet-18 in fp32 on this CPU
    # infers 1.19x the plain loop at a batch of 128 and about 1.0x at 32
    infer_images = max(images, infer_batch_size)
    infer_data = synthetic_data(input_shape, num_classes, infer_images, generator)
    infer_resident = infer_data.to(device)
    recipe = TrainRecipe(epochs=1, lr=0.01, batch_size=batch_size, schedule="constant", nesterov=False)
    results: dict[str, dict] = {}
    for kind in kinds:
        log(f"{kind} sites: harness and reference loops")
        model = models.build(model_name, num_classes=num_classes, input_shape=input_shape, mean=data.mean, std=data.std)
        configure_sites(model, kind, generator)
        model = model.to(device)
        reference = copy.deepcopy(model)
        harness_model = torch.compile(model) if compile_model else model
        ctx = Session.create(resident, device, seed=0)
        # inference as an entry's evaluation runs it: on the model folded for inference, folded once
        # (as an evaluation does, before its tens of thousands of images), outside the timed passes
        start = time.perf_counter()
        infer_model = inference_model(harness_model, input_shape)[0]
        fold_s = time.perf_counter() - start
        times = _rounds({
            # the training loop alone, as the reference's: no validation pass after the epoch
            "harness_train": lambda: fit(harness_model, ctx, recipe, select_on_val=False, validate=False),
            "reference_train": lambda: _reference_train(reference, data, batch_size, device),
            "harness_infer": lambda: accuracy(infer_model, infer_resident.train_x, infer_resident.train_y,
                                              infer_batch_size),
            "reference_infer": lambda: _reference_infer(reference, infer_data, infer_batch_size, device)},
            device, repeats, min_seconds)
        results[kind] = {
            **{f"{loop}_{part}_images_per_s": n / min(times[f"{loop}_{part}"])
               for part, n in (("train", images), ("infer", infer_images)) for loop in ("harness", "reference")},
            "train_speedup": _paired_speedup(times["reference_train"], times["harness_train"]),
            "infer_speedup": _paired_speedup(times["reference_infer"], times["harness_infer"]),
            "rounds": len(times["harness_train"]), "seconds": times, "inference_model_s": fold_s}
    log("conv-only limit")
    limit_model = _conv_only(models.build(model_name, num_classes=num_classes, input_shape=input_shape)).to(device)
    limit_model = limit_model.to(memory_format=torch.channels_last)  # as the harness's model
    limit = images / min(_rounds({"limit": lambda: _conv_limit(limit_model, resident, batch_size, device)}, device,
                                 repeats, min_seconds)["limit"])
    for row in results.values():
        row["fraction_of_conv_limit"] = row["harness_train_images_per_s"] / limit
    return {"model": model_name, "input_shape": list(input_shape), "batch_size": batch_size, "steps": steps,
            "infer_batch_size": infer_batch_size, "infer_images": infer_images,
            "repeats": repeats, "min_seconds": min_seconds, "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "compiled": compile_model, "precision": precision(device),
            "threads": torch.get_num_threads(), "conv_only_train_images_per_s": limit, "sites": results}
