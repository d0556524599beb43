"""The README's example plugin, taken from the README itself, installed through the entry-point group
as a third party would, and run on the embedded data."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from benchbed.records import entry_records

from conftest import install_plugin

ROOT = Path(__file__).resolve().parents[1]


def readme_plugin() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(# my_method\.py\n.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "the README has one example plugin, headed '# my_method.py'"
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
