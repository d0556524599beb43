"""``PhaseLog``: each phase's seconds, the process's peak resident memory, and what the phase itself added."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

# In a fresh interpreter: this process's allocator may keep freed pages (``keep_freed_pages``), which a
# phase would reuse without raising the resident size.
PHASES = """
import json, torch
from benchbed.run.phases import PhaseLog
log = PhaseLog(torch.device("cpu"))
held = torch.ones(64 * 2**20 // 4)  # 64 MB resident before the phases: in the peak, not the rise
with log("big"):
    tensor = torch.ones(256 * 2**20 // 4)  # 256 MB written, so resident
    del tensor
with log("small"):
    pass
print(json.dumps(log.phases))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the peak is reset per phase on Linux only")
def test_a_phase_reads_its_own_peak_and_rise():
    phases = json.loads(subprocess.run([sys.executable, "-c", PHASES], capture_output=True, text=True,
                                       check=True).stdout)
    big, small = phases["big"], phases["small"]
    assert big["rise_mb"] >= 250, "the phase's own 256 MB"
    assert big["peak_mb"] >= big["rise_mb"] + 60, "the peak also holds what was resident before it"
    assert small["rise_mb"] < 50, "a later phase reads its own peak, not the process's so far"
    assert small["peak_mb"] < big["peak_mb"] - 200
    assert big["seconds"] >= 0
