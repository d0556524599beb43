"""Same suite, seed and machine: the same numbers; the record says whether the run was deterministic."""
from __future__ import annotations

import torch

from benchbed.files import read_json
from benchbed.run.runner import SuiteRun
from benchbed.train.reproducibility import determinism, seed_everything
from conftest import entry_records, load_checkpoint


def test_two_runs_in_two_directories_give_identical_numbers(write_suite, tmp_path):
    suite = write_suite(budgets=[512], teacher={"recipe": {"epochs": 1}}, compute={"epochs": 0.5}, methods=[
        {"name": "all_relu"}, {"name": "random_mask", "options": {"finetune": {"batch_size": 64}}},
        {"name": "snl", "options": {"search": {"batch_size": 64}, "finetune": {"batch_size": 64}}}])
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        SuiteRun.from_file(suite, out=out, quiet=True).run()
    records = [{r["entry"]: r for r in entry_records(out)} for out in runs]
    assert records[0].keys() == records[1].keys() and len(records[0]) == 3
    for entry, first in records[0].items():
        second = records[1][entry]
        assert first["status"] == second["status"] == "ok", (entry, first.get("error"))
        assert first["metrics"] == second["metrics"], entry
        assert (first["relus"], first["drelus"]) == (second["relus"], second["drelus"])
        # an entry's own (forked) process runs one torch thread: the count is part of what repeats a result
        assert first["determinism"]["deterministic"] and first["determinism"]["torch_threads"] == 1
        weights = [load_checkpoint(out / "entries" / first["checkpoint"]).state_dict() for out in runs]
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), entry
    assert read_json(runs[0] / "teacher.json")["clean_accuracy"] == read_json(runs[1] / "teacher.json")["clean_accuracy"]


def test_determinism_says_why_a_run_may_not_repeat():
    cpu = torch.device("cpu")
    seed_everything(0, cpu)
    assert determinism(cpu)["deterministic"] and determinism(cpu)["why_not"] == []
    try:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
        report = determinism(cpu)
        assert not report["deterministic"]
        assert report["why_not"] == ["torch's deterministic algorithms are off", "cuDNN autotuning is on"]
    finally:
        seed_everything(0, cpu)
    assert not torch.backends.cudnn.benchmark and torch.are_deterministic_algorithms_enabled()


def test_on_cuda_the_cublas_setting_and_warn_only_kernels_are_reported(monkeypatch):
    """Read on a CPU machine too: ``determinism`` only inspects settings, it runs nothing on the device."""
    cuda = torch.device("cuda")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seed_everything(0, torch.device("cpu"))
    report = determinism(cuda)
    assert not report["deterministic"] and report["cublas_workspace_config"] is None
    assert any("CUBLAS_WORKSPACE_CONFIG" in why for why in report["why_not"])
    assert any("warn-only" in why for why in report["why_not"])
