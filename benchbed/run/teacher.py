"""The shared teacher of a suite: loaded from the suite's checkpoint, reused from the run directory or
from the teacher cache, or trained once; and the robust dual-BN variant (RLNet's recipe) for methods
that ask for it. Every entry sees the same frozen copy of the variant it asked for.

The cache (``benchbed.run.rundir.teacher_cache_files``) keys a trained
teacher by the hash of everything its weights depend on: the variant and its recipes, the model, the
seed, the precision, the data's content and split, and the source of the code that trains it. A suite,
or another suite with the same teacher, pays for each teacher once; the record keeps what the teacher
cost where it was trained."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from benchbed.config import RobustTraining, Suite
from benchbed.data.bundle import DataBundle
from benchbed.errors import BenchbedError
from benchbed.files import read_json, write_json
from benchbed.model.checkpoint import CheckpointFile, load_checkpoint, model_from_payload, write_checkpoint
from benchbed.model.dual_bn import convert_dual_bn, has_dual_bn
from benchbed.model.registry import ModelRegistry
from benchbed.model.sites import relu_count, sites
from benchbed.robustness.training import robust_teacher_cost, robust_teacher_loss, robust_teacher_recipe
from benchbed.run import provenance
from benchbed.run.progress import Reporter
from benchbed.run.rebuild import expectations, new_model, payload
from benchbed.run.rundir import STANDARD_TEACHER, RunDir, teacher_cache_files
from benchbed.train.allocator import keep_freed_pages
from benchbed.train.devices import set_precision
from benchbed.train.loop import fit
from benchbed.train.meter import meter_entry
from benchbed.train.reproducibility import seed_everything
from benchbed.train.session import Session

VARIANTS = (STANDARD_TEACHER, "robust")
# The code a teacher's weights depend on (its architecture, kernels, data pipeline, loop and robust
# recipe): a change to any of it trains the teacher anew.
_TRAINING_CODE = ("model", "train", "data", "robustness/training.py", "robustness/attacks.py", "run/teacher.py",
                  "run/rebuild.py", "config.py")


def _code_digest() -> str:
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for part in _TRAINING_CODE:
        for path in sorted((root / part).rglob("*.py")) if (root / part).is_dir() else [root / part]:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _data_digest(data: DataBundle) -> str:
    digest = hashlib.sha256(json.dumps(data.describe(), sort_keys=True).encode())
    for tensor in (data.train_x, data.train_y, data.val_x, data.val_y):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_key(suite: Suite, data: DataBundle, variant: str) -> str:
    """The hash of everything a trained teacher ``variant`` of ``suite`` on ``data`` depends on."""
    robust = robust_recipe(suite, variant)
    body = {"variant": variant, "model": suite.model.model_dump(mode="json"),
            "recipe": suite.teacher.recipe.model_dump(mode="json") if suite.teacher.recipe else None,
            "robust": robust.model_dump(mode="json") if robust else None, "seed": suite.teacher.seed,
            "precision": suite.precision, "dataset": suite.dataset.model_dump(mode="json", exclude={"root", "download"}),
            "data": _data_digest(data), "code": _code_digest()}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]






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
            models: ModelRegistry, measure: Callable[[str, str], dict], variant: str = STANDARD_TEACHER,
            checkpoint: CheckpointFile | None = None, given_teacher: nn.Module | None = None,
            cache: bool = True) -> nn.Module:
    """The frozen teacher ``variant`` of the suite: the suite's checkpoint (``given_teacher`` from ``checkpoint``),
    or the cached one trained with the same recipe, data and code (with ``cache``), or trained once per
    run directory and then reused. ``measure(file, source)`` gives the accuracies and ReLUs of the
    teacher saved in ``file``: the measuring process's, the only one with the test split."""
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
        model = given_teacher if given_teacher is not None else from_checkpoint(checkpoint, suite, data, models)
        source = {"checkpoint": cfg.checkpoint, "sha256": checkpoint.sha256}
    elif path.exists():
        try:
            model = all_relu(load_checkpoint(path, models, **expectations(suite, data)), str(path))
            source = {"reused": str(path)}
            reporter.log(f"teacher ({variant}): reusing {path}")
        except BenchbedError as exc:
            reporter.log(f"teacher ({variant}): {exc}; training it again")
    key = cache_key(suite, data, variant) if model is None and cache else None
    if key is not None:
        model, cached = _from_cache(key, suite, data, models, reporter, variant)
        if model is not None:
            source = {"cached": key, "trained": cached.get("trained"), "compute": cached.get("compute")}
    if model is None:
        model, source = _train(suite, data, rundir, device, reporter, models, variant)
    model = frozen(model, device)
    if variant == "robust" and not has_dual_bn(model):
        raise BenchbedError("the robust teacher has no dual BN; remove its checkpoint from the run directory")
    if "cached" in source:  # the cached file itself: the run directory holds the very teacher the cache does
        shutil.copyfile(teacher_cache_files(source["cached"])[0], path)
    elif "trained" in source:
        write_checkpoint(payload(model, suite, data), path)
    if "reused" not in source or not _readable(record_path):
        saved = checkpoint.path if "checkpoint" in source else str(path)
        write_json(record_path, {"variant": variant, "source": source, "seed": cfg.seed, "cache_key": key,
                                 "compute": source.get("compute"), **measure(saved, f"the {variant} teacher"),
                                 "versions": provenance.versions(), "source_commit": provenance.source_commit(),
                                 "hardware": provenance.hardware(device), "finished": provenance.now()})
    if key is not None and "cached" not in source:
        _to_cache(key, path, record_path)
    acc = read_json(record_path)["clean_accuracy"]
    reporter.log(f"teacher ({variant}): test accuracy {acc:.4f}, {relu_count(model):,} counted ReLUs")
    return model


def _from_cache(key: str, suite: Suite, data: DataBundle, models: ModelRegistry, reporter: Reporter,
                variant: str) -> tuple[nn.Module | None, dict]:
    checkpoint, record = teacher_cache_files(key)
    folder = checkpoint.parent
    if not checkpoint.exists():
        return None, {}
    try:
        model = all_relu(load_checkpoint(checkpoint, models, **expectations(suite, data)), str(folder))
        source = read_json(record)["source"]
    except (BenchbedError, OSError, ValueError, KeyError, TypeError) as exc:
        reporter.log(f"teacher ({variant}): the cached one in {folder} is unreadable ({exc}); training it again")
        return None, {}
    reporter.log(f"teacher ({variant}): reusing the cached {folder} (same recipe, data and code)")
    return model, source


def _to_cache(key: str, checkpoint: Path, record: Path) -> None:
    """Copy a newly trained teacher into the cache; a cache that cannot be written costs only a retrain later."""
    cached, cached_record = teacher_cache_files(key)
    partial = cached.with_suffix(".tmp")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, partial)
        shutil.copyfile(record, cached_record)
        os.replace(partial, cached)  # the checkpoint last: a cached record without it is never read
    except OSError:
        pass


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
    step_loss, recipe, cost = None, cfg.recipe, 1.0
    if robust is not None:
        # the authors' robust teacher: their lr and epochs (in the suite's units), the batch split by view
        recipe = robust_teacher_recipe(cfg.recipe, robust)
        convert_dual_bn(model)
        step_loss, cost = robust_teacher_loss(model, robust), robust_teacher_cost(robust, recipe.batch_size)
    model = model.to(device)
    kind = "robust dual-BN " if robust else ""
    reporter.log(f"teacher ({variant}): training a {kind}{suite.model.name} for {recipe.epochs:g} epochs")
    partial = rundir.teacher_partial(variant)  # resumes a teacher that was interrupted
    # the teacher's own compute, metered as an entry's is (its AugMix views and attack steps included),
    # so that a teacher only some methods use can be shown as their one-time cost
    meter = meter_entry(session.clock, model, [], data.input_shape)
    try:
        with session.clock.running():
            result = fit(model, session, recipe, step_loss=step_loss, cost_per_image=cost, label=f"teacher ({variant})",
                         resume=partial)
        compute = session.clock.record(meter.total(), meter.breakdown())
    finally:
        meter.stop()
    partial.unlink(missing_ok=True)
    return model, {"trained": result.summary(), "robust": robust is not None, "compute": compute}
