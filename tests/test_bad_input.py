"""Bad input: one clear line naming the file and field, a non-zero exit, no finished result lost."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from benchbed.cli import main
from benchbed.errors import BenchbedError
from conftest import load_checkpoint


def run_cli(*args: str, capsys) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err


def test_valid_suite_validates(write_suite, capsys):
    code = main(["validate", str(write_suite())])
    assert code == 0
    assert "3 entries" in capsys.readouterr().out


def test_malformed_yaml_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndataset: [digits\nmodel: {}\n")
    code, err = run_cli("validate", str(path), capsys=capsys)
    assert code == 2
    assert err.startswith(f"{path}: line ") and "not valid YAML" in err
    assert len(err.strip().splitlines()) == 1


def test_every_schema_error_is_reported_with_its_field_path(write_suite, capsys):
    path = write_suite(budgets=[64, -3], compute={"epochs": -1}, bogus_field=1,
                       teacher={"recipe": {"lr": "fast"}})
    code, err = run_cli("validate", str(path), capsys=capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    for field in ("budgets, line", "compute.epochs, line", "bogus_field, line", "teacher.recipe.lr, line"):
        assert any(field in line for line in lines), (field, lines)


def test_unknown_method_and_unknown_option(write_suite, capsys):
    path = write_suite(methods=[{"name": "snl_typo"}, {"name": "random_mask", "options": {"lr_typo": 1}}])
    code, err = run_cli("validate", str(path), capsys=capsys)
    assert code == 2
    assert "methods.0 (snl_typo).name, line " in err and ": unknown method 'snl_typo'; installed:" in err
    assert "methods.1 (random_mask).options.lr_typo, line " in err and "Extra inputs are not permitted" in err


def test_validate_reports_every_problem_in_one_pass_with_method_line_and_near_names(write_suite, capsys):
    """A schema error (compute.epoch), a misspelt option of a method and a budget over the model's ReLUs:
    all three at once, each naming the method, the line, and the name meant."""
    path = write_suite(compute={"epoch": 1}, budgets=[64, 10_000],
                       methods=[{"name": "all_relu"}, {"name": "snl", "options": {"lambda_int": 1e-3}}])
    code, err = run_cli("validate", str(path), capsys=capsys)
    assert code == 2
    text = path.read_text().splitlines()
    line = lambda key: next(i for i, row in enumerate(text, 1) if key in row)  # noqa: E731
    assert f"compute.epoch, line {line('epoch:')}: Extra inputs are not permitted; did you mean 'epochs'?" in err
    assert (f"methods.1 (snl).options.lambda_int, line {line('lambda_int')}: Extra inputs are not permitted; "
            "did you mean 'lambda_init'") in err
    assert "budgets.1, line " in err and "10,000 exceeds the 4,608 ReLUs" in err
    nested = write_suite("nested.yaml", methods=[{"name": "snl", "options": {"search": {"l": 0.1, "bach_size": 3}}}])
    code, err = run_cli("validate", str(nested), capsys=capsys)
    assert code == 2 and "methods.0 (snl).options.search.bach_size" in err and "did you mean 'batch_size'?" in err


def test_impossible_budget_is_refused_before_any_work(write_suite, tmp_path, capsys):
    path = write_suite(budgets=[64, 10_000])
    code, err = run_cli("run", str(path), "--out", str(tmp_path / "run"), "--quiet", capsys=capsys)
    assert code == 2
    assert "budgets.1, line " in err and ": 10,000 exceeds the 4,608 ReLUs of resnet_narrow" in err
    assert not (tmp_path / "run").exists(), "nothing may start before the suite is valid"


def test_teacher_needs_exactly_one_source(write_suite, capsys):
    path = write_suite(teacher={"recipe": None})
    code, err = run_cli("validate", str(path), capsys=capsys)
    assert code == 2 and "teacher, line " in err and "exactly one" in err


def test_missing_dataset_with_download_off(write_suite, tmp_path, capsys):
    path = write_suite(dataset={"name": "cifar100", "root": str(tmp_path / "nothing"), "download": False},
                       model={"name": "resnet_narrow"})
    code, err = run_cli("run", str(path), "--out", str(tmp_path / "run"), "--quiet", capsys=capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert "no cifar100 under" in err and "download: true" in err
    assert not (tmp_path / "run").exists(), "a run that cannot start claims no directory"
    code, err = run_cli("validate", str(path), capsys=capsys)
    assert code == 2 and "no cifar100 under" in err, "validate sees it too"


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(BenchbedError, match="unreadable or unsafe"):
        load_checkpoint(path)


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_tampered_checkpoint_is_not_unpickled(tmp_path, capsys):
    path = tmp_path / "tampered.pt"
    torch.save({"format": "benchbed-checkpoint/1", "payload": Exploit()}, path)
    with pytest.raises(BenchbedError, match="unreadable or unsafe"):
        load_checkpoint(path)
    assert "this must never run" not in capsys.readouterr().out


def test_foreign_checkpoint(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(BenchbedError, match="not a benchbed checkpoint"):
        load_checkpoint(path)


def test_suite_with_corrupt_teacher_checkpoint_fails_in_one_line(write_suite, tmp_path, capsys):
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(b"not a checkpoint")
    path = write_suite(teacher={"recipe": None, "checkpoint": str(bad)})
    code, err = run_cli("run", str(path), "--out", str(tmp_path / "run"), "--quiet", capsys=capsys)
    assert code == 2
    assert err.count("\n") == 1 and "unreadable or unsafe" in err


def test_unknown_command_line_usage_exits_non_zero():
    result = subprocess.run([sys.executable, "-m", "benchbed", "frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_partial_nested_options_keep_the_methods_other_defaults():
    from benchbed.run.suite import validate_options
    from benchbed_plugins.snl import Options

    opts = validate_options(Options, {"search": {"lr": 0.01}})
    assert opts.search.lr == 0.01
    assert opts.search.optimizer == "adam" and opts.search.schedule == "constant", "the rest stays SNL's"
    with pytest.raises(Exception, match="lr_typo"):
        validate_options(Options, {"search": {"lr_typo": 0.01}})
