"""``PhaseLog``: each phase's seconds, the process's resident peak, and the peak of its own memory: in a
process forked from the run's, the pages it shares with the run's are in the first and not the second."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

# A fresh interpreter forks as the run does; the child's phases are measured (this test's own process
# has an allocator that keeps freed pages, which a phase would reuse).
FORKED = """
import json, os, sys, time, torch
from benchbed.run.phases import PhaseLog, SAMPLE_S
torch.set_num_threads(1)  # as a run's parent: OpenMP's threads do not survive a fork
shared = torch.ones(256 * 2**20 // 4)  # written in the parent: resident, and shared with the child
if os.fork() == 0:
    log = PhaseLog(torch.device("cpu"))
    with log("read"):
        float(shared.sum())  # reading a shared page copies nothing
    with log("new"):
        fresh = torch.ones(128 * 2**20 // 4)
        time.sleep(3 * SAMPLE_S)  # held long enough to be sampled
        del fresh
    with log("write"):
        shared.add_(1)  # every shared page copied into the child
    sys.stdout.write(json.dumps(log.phases))
    sys.stdout.flush()
    os._exit(0)
os.wait()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="private memory is read from /proc")
def test_the_own_peak_leaves_out_what_the_parent_shares():
    phases = json.loads(subprocess.run([sys.executable, "-c", FORKED], capture_output=True, text=True,
                                       check=True).stdout)
    read, new, write = phases["read"], phases["new"], phases["write"]
    assert read["peak_mb"] >= 256, "the shared pages are resident in the child"
    assert read["own_mb"] < 64, "but not its own"
    assert new["own_mb"] >= read["own_mb"] + 120, "a tensor the phase made and freed, caught while it lived"
    assert write["own_mb"] >= read["own_mb"] + 250, "pages copied out of the shared ones are the child's own"
    assert all(p["seconds"] >= 0 and p["peak_mb"] >= p["own_mb"] for p in phases.values())
