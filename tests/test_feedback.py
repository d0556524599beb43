"""What a user sees: progress in every long phase, counts that explain themselves, a help that lists
every command, a bench that finishes in seconds on a CPU, a publish that never overwrites silently."""
from __future__ import annotations

import pytest

from benchbed.cli import main, parser
from benchbed.run.runner import SuiteRun


@pytest.mark.usefixtures("fresh_teacher_cache")  # the teacher's training is what it reports
def test_quiet_run_reports_teacher_training_and_evaluation(write_suite, tmp_path, capsys):
    suite = write_suite(methods=[{"name": "random_mask"}], budgets=[64],
                        evaluation={"pgd": {"eps": 0.1, "step": 0.05, "steps": 2, "check_steps": 1, "images": 16},
                                    "corruptions": {"names": ["gaussian_noise", "contrast"], "severities": [1],
                                                    "images": 16}})
    SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    err = capsys.readouterr().err
    assert "teacher (standard): 0%" in err or "teacher (standard): " in err
    assert "teacher (standard): training a resnet_narrow" in err
    for phase in ("evaluating: clean and validation accuracy", "evaluating: corruptions", "evaluating: PGD-2"):
        assert phase in err, phase


@pytest.mark.parametrize("changes, expected", [
    ({}, "3 entries = (1 method × 2 budgets + 1 reference method without a budget (all_relu)) × 1 seed"),
    ({"methods": [{"name": "random_mask"}], "budgets": [64], "seeds": [0, 1]}, "2 entries = 1 method × 1 budget × 2 seeds"),
    ({"methods": [{"name": "all_relu"}]}, "1 entry = 1 reference method without a budget (all_relu) × 1 seed"),
])
def test_validate_says_how_the_count_arises(write_suite, capsys, changes, expected):
    assert main(["validate", str(write_suite(**changes))]) == 0
    assert expected in capsys.readouterr().out


def test_help_lists_every_command(capsys):
    commands = set(parser()._subparsers._group_actions[0].choices)
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert commands == {"run", "validate", "plan", "describe", "plugins", "leaderboard", "publish", "bench", "secure-infer",
                        "calibrate", "prices", "reprice", "export", "verify"}
    assert all(out.count(c) >= 2 for c in commands), "listed in the usage and described"


def test_bench_defaults_finish_on_a_cpu_with_feedback(capsys):
    assert main(["bench", "--sites", "relu", "--steps", "1", "--batch-size", "16"]) == 0
    captured = capsys.readouterr()
    assert "resnet_narrow on digits-shaped synthetic data" in captured.err and "relu sites" in captured.err
    assert "conv-only limit" in captured.out


def test_publish_never_overwrites_silently(write_suite, tmp_path, capsys):
    suite = write_suite(methods=[{"name": "all_relu"}])
    SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    target = tmp_path / "boards"
    assert main(["publish", str(tmp_path / "run"), "--to", str(target)]) == 0
    assert f"published {target / 'tiny.md'}" in capsys.readouterr().out
    assert main(["publish", str(tmp_path / "run"), "--to", str(target)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["publish", str(tmp_path / "run"), "--to", str(target), "--overwrite"]) == 0


def test_a_quick_evaluation_for_development_is_never_published(write_suite, tmp_path, capsys):
    """`benchbed run --quick-eval N`: clean accuracy on the first N test images, no robustness metric, in a
    run directory of its own; its board renders, `publish` refuses it in one line."""
    from benchbed.files import read_json

    suite = write_suite(methods=[{"name": "all_relu"}], budgets=[64], evaluation={"pgd": {"eps": 0.1, "images": 50}})
    out = tmp_path / "quick"
    assert main(["run", str(suite), "--quick-eval", "40", "--out", str(out), "--quiet"]) == 0
    (record,) = [read_json(p) for p in (out / "entries").glob("*.json")]
    assert record["metrics"]["columns"]["clean_accuracy"]["images"] == 40 and "pgd_accuracy" not in record["metrics"]
    capsys.readouterr()
    assert main(["publish", str(out), "--to", str(tmp_path / "boards")]) == 2
    err = capsys.readouterr().err
    assert "is a quick evaluation (`benchbed run --quick-eval`), for development" in err and err.count("\n") == 1
    assert not (tmp_path / "boards").exists()
