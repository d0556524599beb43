"""``benchbed export --format plain`` and ``benchbed verify``: a linearized model leaves benchbed as plain
arrays and a manifest, and comes back checked against the figures its submitter claims. Nothing
here trains: the entry is a masked model built and saved as a run saves it."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from benchbed.cli import main
from benchbed.files import read_json, write_json
from benchbed.model.checkpoint import FORMAT, checkpoint_payload, save_checkpoint
from benchbed.model.plain import read_plain, write_plain
from benchbed.model.sites import sites
from conftest import build_model

# the embedded suite's data and profiles, no robustness metrics: seconds
SUITE = {"evaluation": {}, "secure_cost": {"enabled": True, "profiles": ["aby3", "delphi"]}}


def _entry(digits, tmp_path):
    """A finished entry as a run leaves it: RUN_DIR/entries/ENTRY.pt, a masked and a patch site."""
    torch.manual_seed(0)
    model = build_model("resnet_narrow", num_classes=10, input_shape=digits.input_shape, mean=digits.mean,
                        std=digits.std)
    own = sites(model)
    g = torch.Generator().manual_seed(1)
    for name, site in own.items():
        site.set_mask((torch.rand(site.shape, generator=g) < 0.02).float())
    own["layers.1.0.relu1"].set_patches([(2, 2)] * 32)
    entry = tmp_path / "run" / "entries" / "mine__256__s0.pt"
    entry.parent.mkdir(parents=True)
    save_checkpoint(model.eval(), entry, model_name="resnet_narrow", num_classes=10, input_shape=digits.input_shape,
                    mean=digits.mean, std=digits.std)
    write_json(entry.with_suffix(".json"), {"entry": entry.stem, "status": "ok", "fingerprint": "f", "seed": 0,
                                            "method": "mine", "budget": 256, "checkpoint": entry.name,
                                            "checkpoint_sha256": hashlib.sha256(entry.read_bytes()).hexdigest()})
    return model, entry


def _verify(submission, suite, claims, tmp_path, capsys) -> tuple[int, str]:
    path = tmp_path / "claims.json"
    path.write_text(json.dumps(claims))
    code = main(["verify", str(submission), "--suite", str(suite), "--claims", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_plain_format_round_trips_every_tensor(digits, tmp_path):
    model, _ = _entry(digits, tmp_path)
    payload = checkpoint_payload(model, model_name="resnet_narrow", num_classes=10, input_shape=digits.input_shape,
                                 mean=digits.mean, std=digits.std)
    write_plain(payload, tmp_path / "plain")
    manifest = read_json(tmp_path / "plain" / "manifest.json")
    assert manifest["format"] == "benchbed-plain/1" and manifest["sites"]["layers.1.0.relu1"]["kind"] == "patch"
    back = read_plain(tmp_path / "plain", FORMAT)
    assert set(back["state_dict"]) == set(payload["state_dict"])
    assert all(torch.equal(back["state_dict"][k], v) for k, v in payload["state_dict"].items())
    assert torch.equal(back["sites"]["relu"]["mask"], payload["sites"]["relu"]["mask"])


def test_export_then_verify_every_claim(digits, write_suite, tmp_path, capsys):
    _, entry = _entry(digits, tmp_path)
    suite = write_suite(**SUITE)
    plain = tmp_path / "submission"
    assert main(["export", str(entry.with_suffix("")), "--format", "plain", "--out", str(plain)]) == 0
    capsys.readouterr()
    assert main(["verify", str(plain), "--suite", str(suite), "--json", str(tmp_path / "measured.json")]) == 0
    printed = capsys.readouterr()
    assert "clean_accuracy:" in printed.out and "level_index" not in printed.out and "seed" not in printed.out
    assert "measuring" in printed.err, "it says what it measures before the minutes of evaluation"
    measured = read_json(tmp_path / "measured.json")["measured"]
    claims = {"budget": measured["drelus"], **{k: measured[k] for k in ("relus", "drelus", "clean_accuracy",
                                                                          "comm_mb@aby3", "rounds@aby3",
                                                                          "latency_WAN@delphi")}}
    code, out = _verify(plain, suite, claims, tmp_path, capsys)
    assert code == 0 and "7 of 7 claims hold" in out and "DIFFERS" not in out
    assert f"budget: claimed {claims['budget']:,} DReLUs, the model computes {claims['drelus']:,} — within it" in out

    # a misspelt figure: it differs, and the line names the figure meant
    code, out = _verify(plain, suite, {**claims, "rounds@aby": claims["rounds@aby3"]}, tmp_path, capsys)
    assert code == 1 and "rounds@aby: claimed" in out and "did you mean rounds@aby3" in out

    # a claimed accuracy 5 points high: that figure, and only it, differs
    code, out = _verify(plain, suite, {**claims, "clean_accuracy": claims["clean_accuracy"] + 0.05}, tmp_path, capsys)
    assert code == 1 and out.count("DIFFERS") == 1 and "these do not: clean_accuracy" in out

    # a mask with extra ReLUs: over the budget it claims, refused before any evaluation
    arrays = dict(np.load(plain / "arrays.npz"))
    key = next(k for k in arrays if k.startswith("sites/") and k.endswith("/mask"))
    arrays[key] = np.ones_like(arrays[key])
    state_key = "state_dict/" + key.split("/")[1] + ".kernel.mask"
    arrays[state_key] = np.ones_like(arrays[state_key])
    np.savez(plain / "arrays.npz", **arrays)
    code, out = _verify(plain, suite, claims, tmp_path, capsys)
    assert code == 2 and "over the" in out and len(out.strip().splitlines()) == 1


@pytest.mark.parametrize("tamper, message", [
    ("patch", "does not fit"), ("nan", "NaN"), ("pickle", "holds objects"), ("sites", "do not match")])
def test_bad_submissions_are_one_line_refusals(digits, write_suite, tmp_path, capsys, tamper, message):
    _, entry = _entry(digits, tmp_path)
    suite = write_suite(**SUITE)
    plain = tmp_path / "submission"
    assert main(["export", str(entry.with_suffix("")), "--out", str(plain)]) == 0
    capsys.readouterr()
    arrays = dict(np.load(plain / "arrays.npz"))
    manifest = read_json(plain / "manifest.json")
    if tamper == "patch":  # a patch spec for 16 channels on a site of 32
        arrays["sites/layers.1.0.relu1/sizes"] = arrays["sites/layers.1.0.relu1/sizes"][:16]
    elif tamper == "nan":
        key = next(k for k in arrays if k.endswith("conv1.weight"))
        arrays[key] = np.full_like(arrays[key], np.nan)
    elif tamper == "pickle":
        arrays["sites/relu/mask"] = np.array([{"run": "code"}], dtype=object)
    else:
        del manifest["sites"]["relu"]
        (plain / "manifest.json").write_text(json.dumps(manifest))
    np.savez(plain / "arrays.npz", **arrays)
    code, out = _verify(plain, suite, {"drelus": 1}, tmp_path, capsys)
    assert code == 2 and message in out and len(out.strip().splitlines()) == 1, out


@pytest.mark.parametrize("claims, message", [
    ({"budget": float("nan")}, "finite number"), ({"budget": float("inf")}, "finite number"),
    ({"budget": "256"}, "finite number"), ({"budget": [256]}, "finite number"), ({"budget": 25.5}, "whole number"),
    ({"clean_accuracy": float("inf")}, "finite number"), (None, "is not JSON")])
def test_claims_that_are_no_finite_figures_are_one_line_refusals(digits, write_suite, tmp_path, capsys, claims, message):
    _, entry = _entry(digits, tmp_path)
    suite = write_suite(**SUITE)
    plain = tmp_path / "submission"
    assert main(["export", str(entry.with_suffix("")), "--out", str(plain)]) == 0
    capsys.readouterr()
    path = tmp_path / "claims.json"
    path.write_text("{budget: 256" if claims is None else json.dumps(claims))
    code = main(["verify", str(plain), "--suite", str(suite), "--claims", str(path)])
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert code == 2 and message in out and len(out.strip().splitlines()) == 1, out


def test_export_refuses_a_checkpoint_its_record_does_not_name(digits, tmp_path, capsys):
    model, entry = _entry(digits, tmp_path)
    swapped = entry.read_bytes() + b"\0"
    entry.write_bytes(swapped)  # the bytes changed after the record was written
    assert main(["export", str(entry.with_suffix("")), "--out", str(tmp_path / "out")]) == 2
    assert "sha256" in capsys.readouterr().err and not (tmp_path / "out").exists()
    record = read_json(entry.with_suffix(".json"))
    entry.write_bytes(swapped[:-1])
    write_json(entry.with_suffix(".json"), {**record, "checkpoint": "../../../etc/hostname"})
    assert main(["export", str(entry.with_suffix("")), "--out", str(tmp_path / "out")]) == 2, "a path out of the run"


def test_a_huge_array_header_or_a_build_that_is_no_object_is_a_one_line_refusal(digits, write_suite, tmp_path,
                                                                                 capsys):
    import io
    import zipfile

    import numpy.lib.format as npy

    _, entry = _entry(digits, tmp_path)
    suite = write_suite(**SUITE)
    plain = tmp_path / "submission"
    assert main(["export", str(entry.with_suffix("")), "--out", str(plain)]) == 0
    manifest = read_json(plain / "manifest.json")
    write_json(plain / "manifest.json", {**manifest, "build": [1]})
    capsys.readouterr()
    code, out = _verify(plain, suite, {"drelus": 1}, tmp_path, capsys)
    assert code == 2 and '"build" must be an object' in out and len(out.strip().splitlines()) == 1, out
    write_json(plain / "manifest.json", manifest)
    header = io.BytesIO()  # 10^7 x 10^7 floats declared, 16 bytes given
    npy.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**7, 10**7)})
    with zipfile.ZipFile(plain / "arrays.npz", "w") as archive:
        archive.writestr("huge.npy", header.getvalue() + b"\0" * 16)
    code, out = _verify(plain, suite, {"drelus": 1}, tmp_path, capsys)
    assert code == 2 and "too large" in out and len(out.strip().splitlines()) == 1, out


def test_the_docs_plain_format_example_writes_a_folder_verify_accepts(write_suite, tmp_path, capsys):
    import re
    import subprocess
    import sys
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "submitting.md").read_text()
    (example,) = re.findall(r"```python\n(# write_plain\.py\n.*?)```", docs, flags=re.S)
    (tmp_path / "write_plain.py").write_text(example)
    suite = write_suite(**SUITE)  # tmp_path/suite.yaml, as the example names it
    subprocess.run([sys.executable, "write_plain.py"], cwd=tmp_path, check=True, timeout=300)
    code, out = _verify(tmp_path / "mine", suite, {"budget": 4608}, tmp_path, capsys)
    assert code == 0 and "1 of 1 claims hold" in out, out
