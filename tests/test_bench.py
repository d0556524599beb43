"""``benchbed bench`` on the CPU: every site kind measured next to the reference loop and the conv limit."""
from __future__ import annotations

import json
import time

import torch

import pytest

from benchbed.cli import main
from benchbed.model.architectures import builtin_models
from benchbed.model.sites import sites
from benchbed.preflight.bench import _conv_only, _rounds, bench
from conftest import build_model


def test_bench_reports_every_site_kind(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "resnet_narrow", "--dataset", "digits", "--batch-size", "32", "--steps", "3",
                 "--min-seconds", "0", "--infer-batch-size", "64", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["sites"]) == {"relu", "masked", "polynomial", "patch"}
    assert result["infer_batch_size"] == 64 and result["infer_images"] == 96, "at least the training's images"
    for row in result["sites"].values():
        assert row["harness_train_images_per_s"] > 0 and row["reference_train_images_per_s"] > 0
        pairs = [r / h for r, h in zip(row["seconds"]["reference_train"], row["seconds"]["harness_train"])]
        assert row["rounds"] == 3 and len(pairs) == 3
        assert row["train_speedup"] == pytest.approx(sorted(pairs)[1]), "the median of the rounds' paired ratios"
        assert row["harness_train_images_per_s"] == pytest.approx(32 * 3 / min(row["seconds"]["harness_train"]))
    assert result["conv_only_train_images_per_s"] > 0
    assert "conv-only limit" in capsys.readouterr().out


def test_conv_only_limit_keeps_only_convolutions_and_the_classifier():
    model = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    limit = _conv_only(model)
    assert not sites(limit)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in limit.modules())
    assert sites(model), "the original model is untouched"


def test_bench_function_on_a_subset():
    result = bench(builtin_models(), "resnet_narrow", (1, 8, 8), 10, batch_size=16, steps=2, kinds=("patch",),
                   min_seconds=0)
    assert list(result["sites"]) == ["patch"] and result["device"] == "cpu"
    assert result["infer_batch_size"] == 512 and result["infer_images"] == 512, "an evaluation's batch, filled"


def test_rounds_run_until_every_function_has_had_its_time():
    calls = []
    times = _rounds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, torch.device("cpu"),
                    repeats=2, min_seconds=0.0)
    assert calls == ["a", "b", "a", "b", "b", "a"], "one untimed call each, then turns in alternating order"
    assert [len(t) for t in times.values()] == [2, 2]
    slow = _rounds({"sleep": lambda: time.sleep(0.01)}, torch.device("cpu"),
                   repeats=1, min_seconds=0.05)
    assert len(slow["sleep"]) >= 5 and sum(slow["sleep"]) >= 0.05
