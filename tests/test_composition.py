"""Composition: one method's mask with another method's finetune, and the DaPa bypass for any mask
method, as one line of a suite; combinations that cannot work fail validation before any work."""
from __future__ import annotations

import torch

from benchbed.api import FinetuneResult, MaskResult, MethodInfo, Strict, counted_sites, hookimpl
from benchbed.cli import main
from benchbed.config import MethodEntry
from benchbed.model.polynomials import dapa_bypass, dapa_coefficients, input_statistics
from benchbed.model.sites import IDENTITY, ZERO, MaskedKernel, PatchKernel
from benchbed.run.runner import SuiteRun
from conftest import entry_records, load_checkpoint, plugin


def _records(run_dir):
    return {r["entry"]: r for r in entry_records(run_dir)}


def test_keys_and_labels():
    assert (MethodEntry(name="snl").key, MethodEntry(name="snl").label) == ("snl", "snl")
    composed = MethodEntry(name="snl", finetune="rlnet", bypass="dapa")
    assert (composed.key, composed.label) == ("snl+dapa-rlnet", "snl + DaPa → rlnet")


def test_a_composed_entry_runs_end_to_end(write_suite, tmp_path):
    suite = write_suite(budgets=[64], methods=[
        {"name": "random_mask"},
        {"name": "random_mask", "finetune": "snl", "finetune_options": {"finetune": {"batch_size": 64}}},
        {"name": "random_mask", "bypass": "dapa"}])
    counts = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    assert counts["ok"] == 3, counts
    records = _records(tmp_path / "run")
    composed = records["random_mask-snl__64__s0"]
    assert composed["label"] == "random_mask → snl" and composed["drelus"] == 64
    assert composed["composition"]["finetune_method"] == "snl"
    assert composed["composition"]["finetune_options"]["finetune"]["batch_size"] == 64
    assert composed["compute"]["used"]["epochs"] <= 1.0 + 1e-9, "one budget covers both parts"
    plain, dapa = records["random_mask__64__s0"], records["random_mask+dapa__64__s0"]
    assert plain["build_mask"] == dapa["build_mask"], "the same mask"
    assert dapa["bypass"]["sites"], "DaPa reached the linearized sites"
    model = load_checkpoint(tmp_path / "run" / "entries" / dapa["checkpoint"])
    kernels = [s.kernel for s in counted_sites(model).values() if isinstance(s.kernel, MaskedKernel)]
    assert any(not torch.equal(k.coeffs[:, 0], torch.zeros_like(k.coeffs[:, 0])) for k in kernels), "quadratic terms"


def _kind_method(produces=None, accepts=None):
    class Options(Strict):
        depth: int = 1

    info = MethodInfo(description="x", options=Options,
                      **({"produces": frozenset(produces)} if produces else {}),
                      **({"accepts": frozenset(accepts)} if accepts else {}))
    return plugin(method_info=hookimpl(lambda: info), build_mask=hookimpl(lambda ctx, model: MaskResult(model)),
                  finetune=hookimpl(lambda ctx, model: FinetuneResult(model)))


def test_impossible_combinations_fail_validation(write_suite, methods_with, tmp_path, capsys, monkeypatch):
    methods = methods_with(("patcher", _kind_method(produces={"patch"})),
                           ("poly_trainer", _kind_method(accepts={"relu", "masked"})),
                           ("coarse", _kind_method(produces={"relu"})))
    monkeypatch.setattr("benchbed.cli.Plugins", lambda pm: methods)
    suite = write_suite(methods=[{"name": "patcher", "finetune": "poly_trainer"},
                                 {"name": "coarse", "bypass": "dapa"},
                                 {"name": "random_mask", "finetune": "poly_trainer",
                                  "finetune_options": {"dpth": 2}},
                                 {"name": "random_mask", "finetune": "nonexistent"}])
    assert main(["validate", str(suite)]) == 2
    err = capsys.readouterr().err
    assert "methods.0 (patcher), line " in err and "poly_trainer's finetune cannot train patch sites, which patcher's " \
        "mask makes" in err
    assert "methods.1 (coarse), line " in err and "bypass: dapa gives linearized pixels of masked or patch sites a " \
        "polynomial; coarse makes relu" in err
    assert "methods.2 (" in err and ".finetune_options.dpth, line " in err and "Extra inputs are not permitted" in err
    assert "methods.3 (" in err and ").finetune, line " in err and "unknown method 'nonexistent'" in err


def test_dapa_bypass_fits_the_teachers_statistics(make_ctx):
    ctx, student = make_ctx(None)
    site_name, site = next(iter(counted_sites(student).items()))
    mask = torch.zeros(site.shape)
    mask[0] = 1  # channel 0 keeps its ReLUs
    site.set_mask(mask)
    images = ctx.sample_train_images(64)
    assert dapa_bypass(student, ctx.teacher, images) == [site_name]
    teacher_site = dict(ctx.teacher.named_modules())[site_name]
    captured = []
    handle = teacher_site.register_forward_pre_hook(lambda m, args: captured.append(args[0].detach()))
    with torch.no_grad():
        ctx.teacher(images)
    handle.remove()
    x = captured[0].double().transpose(0, 1).flatten(1)
    mu, sigma = x.mean(1), x.std(1, unbiased=False)
    expected = torch.stack(dapa_coefficients(mu, sigma), 1).float()
    assert torch.allclose(site.kernel.coeffs.detach(), expected, atol=1e-5)
    assert site.kernel.coeffs.requires_grad
    stats = input_statistics(ctx.teacher, {site_name: teacher_site}, images)
    assert torch.allclose(stats[site_name][0], mu) and torch.allclose(stats[site_name][1], sigma)


def test_built_in_finetunes_take_other_methods_masks(write_suite, tmp_path):
    suite = write_suite(budgets=[64], compute={"epochs": 2}, methods=[
        {"name": "random_mask", "finetune": "autorep",
         "finetune_options": {"finetune": {"batch_size": 64, "epochs": 1}}},
        {"name": "random_mask", "finetune": "rlnet",
         "finetune_options": {"robust": {"pgd_steps": 1}, "finetune": {"batch_size": 63}}}])
    counts = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    records = _records(tmp_path / "run")
    assert counts["ok"] == 2, {k: r.get("error") for k, r in records.items()}
    autorep = records["random_mask-autorep__64__s0"]
    assert autorep["finetune"]["dapa_fitted_sites"], "AutoReP fitted its polynomials to the random mask first"
    rlnet = records["random_mask-rlnet__64__s0"]
    assert "clean_accuracy_adv_bn" in rlnet["metrics"], "RLNet gave the model its dual BN and evaluated both paths"


def test_autoreps_finetune_trains_dapa_on_knapsacks_linearized_channels(write_suite, tmp_path):
    suite = write_suite(budgets=[64], methods=[
        {"name": "knapsack", "options": {"min_distortion_images": 8}, "finetune": "autorep",
         "finetune_options": {"finetune": {"batch_size": 64}}},
        {"name": "knapsack", "options": {"min_distortion_images": 8}, "bypass": "dapa"}])
    counts = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    records = _records(tmp_path / "run")
    assert counts["ok"] == 2, {k: r.get("error") for k, r in records.items()}
    for key, fitted in (("knapsack-autorep__64__s0", lambda r: r["finetune"]["dapa_fitted_sites"]),
                        ("knapsack+dapa__64__s0", lambda r: r["bypass"]["sites"])):
        record = records[key]
        assert fitted(record), f"{key}: DaPa reached knapsack's linearized channels"
        assert record["drelus"] <= 64
        model = load_checkpoint(tmp_path / "run" / "entries" / record["checkpoint"])
        polynomials = [s.kernel for s in counted_sites(model).values()
                       if isinstance(s.kernel, PatchKernel) and s.kernel.coeffs.requires_grad]
        assert polynomials and any(bool((k.coeffs[k.linearized(), 0] != 0).any()) for k in polynomials)


def test_dapa_on_knapsacks_linearized_channels(make_ctx):
    """``knapsack + DaPa``: the patch sites' linearized channels get the teacher's DaPa quadratic;
    gated and zeroed channels, and the DReLU count, are untouched."""
    ctx, student = make_ctx(None)
    site_name, site = next(iter(counted_sites(student).items()))
    channels = site.shape[0]
    sizes = [IDENTITY if c % 3 == 0 else ZERO if c % 3 == 1 else (2, 2) for c in range(channels)]
    site.set_patches(sizes)
    drelus = site.drelus
    images = ctx.sample_train_images(64)
    assert dapa_bypass(student, ctx.teacher, images) == [site_name]
    teacher_site = dict(ctx.teacher.named_modules())[site_name]
    mu, sigma = input_statistics(ctx.teacher, {site_name: teacher_site}, images)[site_name]
    expected = torch.stack(dapa_coefficients(mu, sigma), 1).float()
    kernel = site.kernel
    assert isinstance(kernel, PatchKernel) and kernel.coeffs.requires_grad and site.drelus == drelus
    torch.testing.assert_close(kernel.sizes, torch.tensor(sizes))
    torch.testing.assert_close(kernel.coeffs.detach(), expected)
    x = torch.randn(2, *site.shape)
    out = site(x)
    c2, c1, c0 = (expected[0::3, i].view(1, -1, 1, 1) for i in range(3))
    torch.testing.assert_close(out[:, 0::3], c2 * x[:, 0::3] ** 2 + c1 * x[:, 0::3] + c0)
    assert (out[:, 1::3] == 0).all()
    assert dapa_bypass(student, ctx.teacher, images) == [], "a fitted bypass is not refitted"
