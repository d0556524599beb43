"""``benchbed bench`` on the CPU: every site kind measured next to the reference loop and the conv limit."""
from __future__ import annotations

import json

import pytest

from benchbed.cli import main
from benchbed.model.architectures import builtin_models
from benchbed.model.sites import sites
from benchbed.perf.bench import _conv_only, bench
from conftest import build_model


def test_bench_reports_every_site_kind(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "resnet_narrow", "--dataset", "digits", "--batch-size", "32", "--steps", "3",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["sites"]) == {"relu", "masked", "polynomial", "patch"}
    for row in result["sites"].values():
        assert row["harness_train_images_per_s"] > 0 and row["reference_train_images_per_s"] > 0
        assert row["train_speedup"] == pytest.approx(row["harness_train_images_per_s"] / row["reference_train_images_per_s"])
    assert result["conv_only_train_images_per_s"] > 0
    assert "conv-only limit" in capsys.readouterr().out


def test_conv_only_limit_keeps_only_convolutions_and_the_classifier():
    model = build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    limit = _conv_only(model)
    assert not sites(limit)
    assert not any(isinstance(m, __import__("torch").nn.BatchNorm2d) for m in limit.modules())
    assert sites(model), "the original model is untouched"


def test_bench_function_on_a_subset():
    result = bench(builtin_models(), "resnet_narrow", (1, 8, 8), 10, batch_size=16, steps=2, kinds=("patch",))
    assert list(result["sites"]) == ["patch"] and result["device"] == "cpu"
