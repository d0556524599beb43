"""The shared teacher of a suite: loaded from the suite's checkpoint, reused from the run directory,
or trained once; and the robust dual-BN variant (RLNet's recipe) for methods that ask for it. Every
entry sees the same frozen copy of the variant it asked for."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from benchbed import provenance
from benchbed.checkpoint import checkpoint_payload, load_checkpoint, write_checkpoint
from benchbed.compute import ComputeClock
from benchbed.config import RobustTraining, Suite
from benchbed.context import EntryContext
from benchbed.data import DataBundle
from benchbed.dual_bn import convert_dual_bn, has_dual_bn
from benchbed.errors import BenchbedError
from benchbed.models import build_model
from benchbed.progress import Reporter
from benchbed.records import read_json, write_json
from benchbed.reproducibility import seed_everything
from benchbed.robust_training import robust_teacher_loss
from benchbed.sites import relu_count
from benchbed.training import accuracy, fit

VARIANTS = ("standard", "robust")


def new_model(suite: Suite, data: DataBundle) -> nn.Module:
    return build_model(suite.model.name, num_classes=data.num_classes, input_shape=data.input_shape,
                       mean=data.mean, std=data.std, stem_relu=suite.model.stem_relu)


def payload(model: nn.Module, suite: Suite, data: DataBundle) -> dict:
    """The checkpoint payload of a model of this suite."""
    return checkpoint_payload(model, model_name=suite.model.name, num_classes=data.num_classes,
                              input_shape=data.input_shape, mean=data.mean, std=data.std)


def frozen(model: nn.Module, suite: Suite, device: torch.device) -> nn.Module:
    """The teacher as every entry sees it: on the device, in eval mode, no gradients."""
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def files(run_dir: Path, variant: str) -> tuple[Path, Path]:
    stem = "teacher" if variant == "standard" else f"teacher-{variant}"
    return run_dir / f"{stem}.pt", run_dir / f"{stem}.json"


def robust_recipe(suite: Suite, variant: str) -> RobustTraining | None:
    """The robust-training recipe of ``variant``: the suite's own when its teacher is robust."""
    if variant == "robust":
        return suite.teacher.robust or RobustTraining()
    return suite.teacher.robust


def expectations(suite: Suite, data: DataBundle) -> dict:
    """What a teacher checkpoint must match to serve this suite on this dataset."""
    return dict(expect_model=suite.model.name, expect_classes=data.num_classes, expect_input_shape=data.input_shape,
                expect_mean=data.mean, expect_std=data.std)


def check_checkpoint(suite: Suite, data: DataBundle) -> None:
    """Fail before anything is written when the suite's teacher checkpoint cannot serve it."""
    if suite.teacher.checkpoint:
        load_checkpoint(suite.teacher.checkpoint, **expectations(suite, data))


def prepare(suite: Suite, data: DataBundle, run_dir: Path, device: torch.device, reporter: Reporter,
            variant: str = "standard") -> nn.Module:
    """The frozen teacher ``variant`` of the suite: trained once per run directory, then reused."""
    if variant not in VARIANTS:
        raise BenchbedError(f"unknown teacher variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if variant == "robust" and suite.teacher.robust is not None:
        variant = "standard"  # the suite's teacher already is the robust one
    cfg = suite.teacher
    path, record_path = files(run_dir, variant)
    expect = expectations(suite, data)
    model = None
    if cfg.checkpoint and variant == "standard":
        model = load_checkpoint(cfg.checkpoint, **expect)
        source = {"checkpoint": cfg.checkpoint,
                  "sha256": hashlib.sha256(Path(cfg.checkpoint).expanduser().read_bytes()).hexdigest()}
    elif path.exists():
        try:
            model = load_checkpoint(path, **expect)
            source = {"reused": str(path)}
            reporter.log(f"teacher ({variant}): reusing {path}")
        except BenchbedError as exc:
            reporter.log(f"teacher ({variant}): {exc}; training it again")
    if model is None:
        model, source = _train(suite, data, run_dir, device, reporter, variant)
    model = frozen(model, suite, device)
    if variant == "robust" and not has_dual_bn(model):
        raise BenchbedError("the robust teacher has no dual BN; remove its checkpoint from the run directory")
    if "trained" in source:
        write_checkpoint(payload(model, suite, data), path)
    if "reused" not in source or not _readable(record_path):
        write_json(record_path, {"variant": variant, "source": source, "seed": cfg.seed,
                                 "val_accuracy": accuracy(model, data.val_x, data.val_y),
                                 "clean_accuracy": accuracy(model, data.test_x, data.test_y),
                                 "relus": relu_count(model), "relus_all_sites": relu_count(model, False),
                                 "versions": provenance.versions(), "source_commit": provenance.source_commit(),
                                 "hardware": provenance.hardware(device), "finished": provenance.now()})
    acc = read_json(record_path)["clean_accuracy"]
    reporter.log(f"teacher ({variant}): test accuracy {acc:.4f}, {relu_count(model):,} counted ReLUs")
    return model


def _readable(path: Path) -> bool:
    try:
        return "clean_accuracy" in read_json(path)
    except (OSError, ValueError, TypeError):
        return False


def _train(suite: Suite, data: DataBundle, run_dir: Path, device: torch.device, reporter: Reporter,
           variant: str) -> tuple[nn.Module, dict]:
    cfg = suite.teacher
    if cfg.recipe is None:
        raise BenchbedError(f"a method asks for the {variant} teacher, which needs `teacher.recipe` to train it; "
                            "add a recipe to the suite's teacher")
    clock = ComputeClock(None, None, len(data.train_y))
    ctx = EntryContext(method="teacher", budget=None, seed=cfg.seed, data=data.for_methods(), teacher=None, clock=clock,
                       device=device, options=cfg.recipe, generator=seed_everything(cfg.seed, device),
                       workdir=Path("."), log=reporter.log, progress=reporter.progress)
    model = new_model(suite, data)  # after seeding: the initialisation is seeded too
    robust = robust_recipe(suite, variant)
    loss_fn = None
    if robust is not None:
        convert_dual_bn(model)
        loss_fn = robust_teacher_loss(model, robust)
    model = model.to(device)
    kind = "robust dual-BN " if robust else ""
    reporter.log(f"teacher ({variant}): training a {kind}{suite.model.name} for {cfg.recipe.epochs:g} epochs")
    partial = files(run_dir, variant)[0].with_suffix(".partial.pt")  # resumes a teacher that was interrupted
    with clock.running():
        result = fit(model, ctx, cfg.recipe, loss_fn=loss_fn, label=f"teacher ({variant})", resume=partial)
    partial.unlink(missing_ok=True)
    return model, {"trained": result.summary(), "robust": robust is not None, "compute": clock.record()}
