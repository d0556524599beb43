"""Price a finished run's entries again, from their checkpoints, with today's cost model and profiles.

Prices depend on nothing a method trained except the model it saved, so when the pricing changes (a
protocol's rule, a profile re-measured) a run need not be trained again: every finished entry's
checkpoint (its hash checked) is rebuilt by the core and priced under the suite's profiles, and its
record says so (``priced``: the command, the commit and the time), beside the commit that trained it.
No plugin code runs; a record whose checkpoint does not match its hash is left as it was and named."""
from __future__ import annotations

from typing import Callable

from benchbed.config import SecureCostSettings
from benchbed.errors import BenchbedError
from benchbed.files import write_json
from benchbed.model.checkpoint import load_checkpoint
from benchbed.plugin.manager import Plugins
from benchbed.run import provenance, record as entry_record
from benchbed.run.rundir import RunDir
from benchbed.run.scoring import prices


def reprice(run_dir: RunDir, plugins: Plugins, log: Callable[[str], None] = print) -> dict[str, int]:
    """Every finished entry of ``run_dir`` priced again; returns counts of what was done."""
    meta = run_dir.meta()
    if meta.get("in_use"):
        raise BenchbedError(f"{run_dir.path} is being run now; reprice it when the run has finished")
    suite = meta["suite"]
    if not suite["secure_cost"]["enabled"]:
        raise BenchbedError(f"{run_dir.path}'s suite prices nothing (secure_cost.enabled: false)")
    settings = SecureCostSettings(**suite["secure_cost"])
    unknown = [p for p in settings.profiles if p not in plugins.cost_profiles]
    if unknown:
        raise BenchbedError(f"profiles {unknown} of {run_dir.path}'s suite are not installed; installed: "
                            f"{', '.join(sorted(plugins.cost_profiles))}")
    input_shape = tuple((meta.get("data") or {}).get("input_shape") or ())
    if len(input_shape) != 3:
        raise BenchbedError(f"{run_dir.data_file} does not give the input shape; run the suite again with this --out")
    stamp = {"by": "benchbed reprice", "source_commit": provenance.source_commit(), "finished": provenance.now()}
    counts = {"repriced": 0, "skipped": 0, "unfinished": 0}
    for record in run_dir.records():
        entry = record.get("entry")
        if record.get("status") != "ok":
            counts["unfinished"] += 1
            continue
        if run_dir.finished(entry) is None:
            log(f"{entry}: its checkpoint is missing or not the one its record's hash names; left as it was")
            counts["skipped"] += 1
            continue
        model = load_checkpoint(run_dir.checkpoint_path(entry), plugins.models).eval()
        record["secure_cost"] = prices(model, input_shape, settings, plugins.cost_profiles)
        record["priced"] = stamp
        entry_record.mark_disagreements(record)  # a method's own price, from its run, against today's
        write_json(run_dir.record_path(entry), record)
        counts["repriced"] += 1
    return counts
