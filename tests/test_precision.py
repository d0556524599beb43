"""The suite's ``precision``: what each choice resolves to on each device, and that a run records it."""
import pytest
import torch

from benchbed.run import provenance
from benchbed.train import devices
from benchbed.train.devices import autocast, precision, set_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(autouse=True)
def _restore():
    yield
    set_precision("auto")


@pytest.mark.parametrize("native", [True, False])
def test_each_choice_on_each_device(monkeypatch, native):
    monkeypatch.setattr(devices, "native_bf16_cpu", lambda: native)
    expected = {"auto": ("fp32", "bf16"), "native": ("bf16" if native else "fp32", "bf16"),
                "fp32": ("fp32", "fp32"), "bf16": ("bf16", "bf16")}
    for choice, (on_cpu, on_cuda) in expected.items():
        set_precision(choice)
        assert (precision(CPU), precision(CUDA)) == (on_cpu, on_cuda), choice


def test_autocast_follows_the_choice_and_the_record_says_it():
    conv = torch.nn.Conv2d(1, 2, 3)
    x = torch.rand(1, 1, 5, 5)
    set_precision("bf16")
    with autocast(CPU):
        assert conv(x).dtype == torch.bfloat16
    assert provenance.hardware(CPU)["precision"] == "bf16"
    set_precision("fp32")
    with autocast(CPU):
        assert conv(x).dtype == torch.float32
    assert provenance.hardware(CPU)["precision"] == "fp32"


def test_native_bf16_reads_the_cpu_flags(tmp_path):
    cases = {"flags : fpu avx512f amx_bf16 amx_tile": True, "flags : fpu avx512f avx512_bf16": True,
             "flags : fpu sse4_2 avx2 avx512f": False}
    for i, (text, native) in enumerate(cases.items()):
        info = tmp_path / f"cpuinfo{i}"
        info.write_text(text + "\n")
        assert devices.native_bf16_cpu(info) is native
    assert devices.native_bf16_cpu(tmp_path / "absent") is False  # not Linux: no native bf16 assumed
