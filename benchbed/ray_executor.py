"""Entries as Ray tasks: one GPU each when the cluster has GPUs, one CPU otherwise.

The driver trains (or loads) the teacher once and hands its checkpoint payload to every task through
Ray's object store; a task returns its record and checkpoint payload, and the driver writes both,
so the run directory and resume work exactly as with the local executor."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from benchbed.errors import BenchbedError

if TYPE_CHECKING:
    from benchbed.runner import Entry, SuiteRun


def _entry_task(suite, options, suite_path: str, run_dir: str, entry: "Entry", teacher_payload: dict):
    from benchbed.checkpoint import model_from_payload
    from benchbed.runner import SuiteRun

    run = SuiteRun.validated(suite, options, suite_path, run_dir)
    data = run.load_data()
    teacher = run.shared_teacher(model_from_payload(teacher_payload, "the shared teacher"))
    return run.run_entry(entry, data, teacher)


def run_on_ray(run: "SuiteRun", entries: list["Entry"], teacher_payload: dict,
               address: str | None) -> Iterator[tuple["Entry", dict, dict | None]]:
    try:
        import ray
    except ImportError:
        raise BenchbedError("the ray executor needs Ray: pip install 'benchbed[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    gpus = ray.cluster_resources().get("GPU", 0)
    task = ray.remote(num_gpus=1, num_cpus=0)(_entry_task) if gpus else ray.remote(num_cpus=1)(_entry_task)
    if run.suite.device == "cuda" and not gpus:
        raise BenchbedError("the suite asks for `device: cuda` but the Ray cluster has no GPU")
    teacher_ref = ray.put(teacher_payload)
    pending = {task.remote(run.suite, run.options, run.suite_path, str(run.run_dir), entry, teacher_ref): entry
               for entry in entries}
    while pending:
        (done,), _ = ray.wait(list(pending), num_returns=1)
        entry = pending.pop(done)
        record, payload = ray.get(done)
        yield entry, record, payload
