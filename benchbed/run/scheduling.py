"""Scheduling entries as Ray tasks: one GPU per task when the cluster has GPUs, one CPU
otherwise. The caller hands a picklable task and the items to run it on; a payload shared by every
task (the teacher checkpoints) travels once through Ray's object store. Results come back to the
caller as they finish, so the caller alone writes the run directory."""
from __future__ import annotations

from typing import Any, Callable, Iterator, TypeVar

from benchbed.errors import BenchbedError

Item = TypeVar("Item")
Result = TypeVar("Result")


def run_on_ray(task: Callable[[Item, Any], Result], items: list[Item], shared: Any, *, address: str | None = None,
               device: str = "auto") -> Iterator[tuple[Item, Result]]:
    try:
        import ray
    except ImportError:
        raise BenchbedError("the ray executor needs Ray: pip install 'benchbed[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    gpus = ray.cluster_resources().get("GPU", 0)
    if device == "cuda" and not gpus:
        raise BenchbedError("the suite asks for `device: cuda` but the Ray cluster has no GPU")
    remote = ray.remote(num_gpus=1, num_cpus=0)(_call) if gpus else ray.remote(num_cpus=1)(_call)
    shared_ref = ray.put(shared)
    pending = {remote.remote(task, item, shared_ref): item for item in items}
    while pending:
        (done,), _ = ray.wait(list(pending), num_returns=1)
        yield pending.pop(done), ray.get(done)


def _call(task: Callable[[Item, Any], Result], item: Item, shared: Any) -> Result:
    """What a worker runs: Ray schedules functions, and the task (a picklable callable) travels as an argument."""
    return task(item, shared)
