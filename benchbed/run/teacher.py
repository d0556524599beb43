"""The shared teacher of a suite: loaded from the suite's checkpoint, reused from the run directory,
or trained once; and the robust dual-BN variant (RLNet's recipe) for methods that ask for it. Every
entry sees the same frozen copy of the variant it asked for."""
from __future__ import annotations

import torch
from torch import nn

from benchbed.config import RobustTraining, Suite
from benchbed.data.bundle import DataBundle
from benchbed.errors import BenchbedError
from benchbed.files import read_json, write_json
from benchbed.model.checkpoint import (CheckpointFile, checkpoint_payload, load_checkpoint, model_from_payload,
                                       write_checkpoint)
from benchbed.model.dual_bn import convert_dual_bn, has_dual_bn
from benchbed.model.registry import ModelRegistry
from benchbed.model.sites import relu_count, sites
from benchbed.robustness.training import robust_teacher_loss
from benchbed.run import provenance
from benchbed.run.progress import Reporter
from benchbed.run.rundir import STANDARD_TEACHER, RunDir
from benchbed.train.allocator import keep_freed_pages
from benchbed.train.devices import set_precision
from benchbed.train.loop import accuracy, fit
from benchbed.train.reproducibility import seed_everything
from benchbed.train.session import Session

VARIANTS = (STANDARD_TEACHER, "robust")


def new_model(suite: Suite, data: DataBundle, models: ModelRegistry) -> nn.Module:
    return models.build(suite.model.name, num_classes=data.num_classes, input_shape=data.input_shape,
                        mean=data.mean, std=data.std, stem_relu=suite.model.stem_relu)


def payload(model: nn.Module, suite: Suite, data: DataBundle) -> dict:
    """The checkpoint payload of a model of this suite."""
    return checkpoint_payload(model, model_name=suite.model.name, num_classes=data.num_classes,
                              input_shape=data.input_shape, mean=data.mean, std=data.std)


def frozen(model: nn.Module, device: torch.device) -> nn.Module:
    """The teacher as every entry sees it: on the device, in eval mode, no gradients."""
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def robust_recipe(suite: Suite, variant: str) -> RobustTraining | None:
    """The robust-training recipe of ``variant``: the suite's own when its teacher is robust."""
    if variant == "robust":
        return suite.teacher.robust or RobustTraining()
    return suite.teacher.robust


def expectations(suite: Suite, data: DataBundle) -> dict:
    """What a teacher checkpoint must match to serve this suite on this dataset."""
    return dict(expect_model=suite.model.name, expect_classes=data.num_classes, expect_input_shape=data.input_shape,
                expect_mean=data.mean, expect_std=data.std)


def all_relu(model: nn.Module, source: str) -> nn.Module:
    """``model``, refused unless every site is a plain ReLU: a teacher is the all-ReLU network."""
    linear = [n for n, s in sites(model).items() if s.kernel.kind != "relu"]
    if linear:
        raise BenchbedError(f"{source} is no all-ReLU teacher: {len(linear)} of its sites are linearized "
                            f"({', '.join(linear[:3])}); give the suite an all-ReLU checkpoint")
    return model


def from_checkpoint(file: CheckpointFile, suite: Suite, data: DataBundle, models: ModelRegistry) -> nn.Module:
    """The suite's teacher from its checkpoint, as read when the suite was validated; fails before
    anything is written when it cannot serve the suite on this dataset."""
    return all_relu(model_from_payload(file.payload, file.path, models=models, **expectations(suite, data)),
                    f"teacher checkpoint {file.path}")


def prepare(suite: Suite, data: DataBundle, rundir: RunDir, device: torch.device, reporter: Reporter,
            models: ModelRegistry, variant: str = STANDARD_TEACHER, checkpoint: CheckpointFile | None = None,
            loaded: nn.Module | None = None) -> nn.Module:
    """The frozen teacher ``variant`` of the suite: the suite's checkpoint (``loaded`` from ``checkpoint``),
    or trained once per run directory and then reused."""
    set_precision(suite.precision)
    keep_freed_pages()
    if variant not in VARIANTS:
        raise BenchbedError(f"unknown teacher variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if variant == "robust" and suite.teacher.robust is not None:
        variant = STANDARD_TEACHER  # the suite's teacher already is the robust one
    cfg = suite.teacher
    path, record_path = rundir.teacher_files(variant)
    model = None
    if cfg.checkpoint and variant == STANDARD_TEACHER:
        model = loaded if loaded is not None else from_checkpoint(checkpoint, suite, data, models)
        source = {"checkpoint": cfg.checkpoint, "sha256": checkpoint.sha256}
    elif path.exists():
        try:
            model = all_relu(load_checkpoint(path, models, **expectations(suite, data)), str(path))
            source = {"reused": str(path)}
            reporter.log(f"teacher ({variant}): reusing {path}")
        except BenchbedError as exc:
            reporter.log(f"teacher ({variant}): {exc}; training it again")
    if model is None:
        model, source = _train(suite, data, rundir, device, reporter, models, variant)
    model = frozen(model, device)
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


def _readable(path) -> bool:
    try:
        return "clean_accuracy" in read_json(path)
    except (OSError, ValueError, TypeError):
        return False


def _train(suite: Suite, data: DataBundle, rundir: RunDir, device: torch.device, reporter: Reporter,
           models: ModelRegistry, variant: str) -> tuple[nn.Module, dict]:
    cfg = suite.teacher
    if cfg.recipe is None:
        raise BenchbedError(f"a method asks for the {variant} teacher, which needs `teacher.recipe` to train it; "
                            "add a recipe to the suite's teacher")
    session = Session.create(data.for_methods(), device, seed=cfg.seed, generator=seed_everything(cfg.seed, device),
                             log=reporter.log, progress=reporter.progress)
    model = new_model(suite, data, models)  # after seeding: the initialisation is seeded too
    robust = robust_recipe(suite, variant)
    loss_fn = None
    if robust is not None:
        convert_dual_bn(model)
        loss_fn = robust_teacher_loss(model, robust)
    model = model.to(device)
    kind = "robust dual-BN " if robust else ""
    reporter.log(f"teacher ({variant}): training a {kind}{suite.model.name} for {cfg.recipe.epochs:g} epochs")
    partial = rundir.teacher_partial(variant)  # resumes a teacher that was interrupted
    with session.clock.running():
        result = fit(model, session, cfg.recipe, loss_fn=loss_fn, label=f"teacher ({variant})", resume=partial)
    partial.unlink(missing_ok=True)
    return model, {"trained": result.summary(), "robust": robust is not None, "compute": session.clock.record()}
