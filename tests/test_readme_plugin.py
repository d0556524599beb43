"""The documentation's two example plugins (`# my_method.py` and `# my_data.py`), taken from
docs/writing-plugins.md itself, installed through the entry-point group as a third party would, and run
on the embedded data."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import entry_records, install_plugin

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DOC = ROOT / "docs" / "writing-plugins.md"


def readme_plugin() -> str:
    text = PLUGIN_DOC.read_text()
    blocks = re.findall(r"```python\n(# my_method\.py\n.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "docs/writing-plugins.md has one example plugin, headed '# my_method.py'"
    return blocks[0]


def test_the_readme_example_plugin_runs(tmp_path, write_suite):
    site_dir = install_plugin(tmp_path / "site", "my-method", "1.0", "my_method", "my_method", readme_plugin())
    suite = write_suite(methods=[{"name": "my_method", "options": {"finetune": {"epochs": 2}}}], budgets=[64, 512])
    env = {**os.environ, "PYTHONPATH": str(site_dir)}
    result = subprocess.run([sys.executable, "-m", "benchbed", "run", str(suite), "--out", str(tmp_path / "run"),
                             "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    records = {r["budget"]: r for r in entry_records(tmp_path / "run")}
    assert {b: r["status"] for b, r in records.items()} == {64: "ok", 512: "ok"}
    assert records[64]["drelus"] == 64 and records[512]["drelus"] == 512
    assert records[64]["method_package"] == "my-method"


def readme_data_plugin() -> str:
    text = PLUGIN_DOC.read_text()
    blocks = re.findall(r"```python\n(# my_data\.py\n.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "docs/writing-plugins.md has one example dataset-and-model plugin, headed '# my_data.py'"
    return blocks[0]


def test_the_readme_dataset_and_model_plugin_runs_without_editing_the_core(tmp_path, write_suite):
    site_dir = install_plugin(tmp_path / "site", "my-data", "1.0", "my_data", "my_data", readme_data_plugin())
    env = {**os.environ, "PYTHONPATH": str(site_dir)}
    listing = subprocess.run([sys.executable, "-m", "benchbed", "plugins"], env=env, capture_output=True, text=True,
                             timeout=300, check=True).stdout
    assert "stripes" in listing.split("datasets:")[1].splitlines()[0]
    assert "small_net" in listing.split("models:")[1].splitlines()[0]
    suite = write_suite(dataset={"name": "stripes", "val_fraction": 0.1}, model={"name": "small_net"},
                        budgets=[64], evaluation={"pgd": {"images": 50, "steps": 2, "check_steps": 1}})
    result = subprocess.run([sys.executable, "-m", "benchbed", "run", str(suite), "--out", str(tmp_path / "run"),
                             "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    records = {r["method"]: r for r in entry_records(tmp_path / "run")}
    assert {m: r["status"] for m, r in records.items()} == {"all_relu": "ok", "random_mask": "ok"}
    assert records["all_relu"]["relus"] == 8 * 8 * 8 and records["random_mask"]["drelus"] == 64
    assert records["all_relu"]["metrics"]["clean_accuracy"] > 0.7, "the stripes are learnable"
