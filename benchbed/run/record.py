"""An entry's record, written the same way whether the entry finished or failed: its header (which
entry of which suite), the fields that close it (what the method noted and cut, the phases, the
compute used, provenance), the checks of a method's own figures against the core's (``checked_metrics``,
``disagreements``), and the console's one line about it (``summary_line``).

An entry has one spelling per purpose: its **id** (``entry``: ``random_mask-snl.ft0.5__600__s0``, the
method entry's key, budget, compute level where several, seed — file names, ``load_model``, the
console), its method entry's **key** (``method``: ``random_mask-snl.ft0.5`` — what claims and
compositions name) and its **label** (``label``: ``random_mask → snl (finetune 50%)`` — a board's rows)."""
from __future__ import annotations

import re
import traceback
from typing import Any

import torch

from benchbed import schemas
from benchbed.config import Suite
from benchbed.errors import BenchbedError
from benchbed.run import provenance
from benchbed.run.suite import Entry
from benchbed.train.reproducibility import determinism

# How far a method's own figure may sit from the core's before the record flags it.
AGREEMENT_TOLERANCE = 1e-6


def header(entry: Entry, suite: Suite) -> dict[str, Any]:
    """What every record of ``entry`` opens with, finished or not."""
    return {"schema_version": schemas.ENTRY_VERSION, "entry": entry.id, "suite": suite.name,
            "fingerprint": suite.fingerprint(), "method": entry.method, "label": entry.label or entry.method,
            "budget": entry.budget, "seed": entry.seed, "mask_method": entry.mask_method,
            "finetune_method": entry.finetune_method, "started": provenance.now()}


def failed(entry: Entry, suite: Suite, why: str) -> dict[str, Any]:
    """The record of an entry whose process gave no result."""
    return {**header(entry, suite), "status": "error", "error": why, "finished": provenance.now(),
            "compute": {"used": {"epochs": 0.0, "seconds": 0.0}}}


def error_fields(exc: BaseException) -> dict[str, Any]:
    """What a record says of the exception that ended its entry: the error, and where it was raised."""
    return {"status": "error", "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8).splitlines()[-12:]}


def closing(device: torch.device, timed: bool) -> dict[str, Any]:
    """What closes every record: when it finished, the versions, commit and hardware, and how
    deterministic the run could be."""
    return {"finished": provenance.now(), "versions": provenance.versions(), "source_commit": provenance.source_commit(),
            "hardware": provenance.hardware(device), "determinism": determinism(device, timed=timed)}


def checked_metrics(metrics: Any, entry: Entry) -> dict:
    """A method's own ``evaluate`` answer the record can hold: a dict whose accuracies are fractions."""
    if not isinstance(metrics, dict):
        raise BenchbedError(f"evaluate of {entry.method!r} returned a {type(metrics).__name__}; it must return a dict "
                            "of metrics")
    bad = [k for k, v in metrics.items() if k.endswith("accuracy")
           and not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1)]
    if bad:
        raise BenchbedError(f"evaluate of {entry.method!r} returned accuracies outside [0, 1]: {', '.join(bad)}")
    return metrics


# A method's own ``evaluate`` runs where there is no test split: its clean accuracy is on validation.
OWN_COUNTERPART = {"clean_accuracy": "val_accuracy"}


def disagreements(record: dict) -> list[str]:
    """Where a method's own metrics or prices differ from the core's measurement of the same thing."""
    found = []
    core, own = record.get("metrics") or {}, record.get("method_metrics") or {}
    for key, value in own.items():
        theirs = OWN_COUNTERPART.get(key, key)
        if isinstance(value, (int, float)) and isinstance(core.get(theirs), (int, float)) \
                and abs(value - core[theirs]) > AGREEMENT_TOLERANCE:
            where = " on validation" if theirs != key else ""
            found.append(f"{key}: the method says {value:.6g}, the core measured {core[theirs]:.6g}{where}")
    for profile, price_ in (record.get("method_secure_cost") or {}).items():
        mine = (record.get("secure_cost") or {}).get(profile, {})
        for key in ("drelus", "comm_mb", "rounds"):
            if isinstance(price_, dict) and key in price_ and key in mine \
                    and abs(float(price_[key]) - float(mine[key])) > AGREEMENT_TOLERANCE * max(1.0, abs(mine[key])):
                found.append(f"{profile} {key}: the method prices {price_[key]:.6g}, the core {mine[key]:.6g}")
    return found


def mark_disagreements(record: dict) -> None:
    """``record["disagreements"]`` made anew from its figures (absent when there are none)."""
    record.pop("disagreements", None)
    found = disagreements(record)
    if found:
        record["disagreements"] = found


def _raised_at(record: dict) -> str:
    """Where the error of a failed entry was raised (the traceback's last frame), for its console line."""
    frames = [line.strip() for line in record.get("traceback") or [] if line.strip().startswith('File "')]
    if not frames:
        return ""
    match = re.match(r'File "(.+)", line (\d+), in (.+)', frames[-1])
    where = f"{match.group(1)}:{match.group(2)} in {match.group(3)}" if match else frames[-1]
    return f" (raised at {where}; the record's `traceback` has the rest)"


def summary_line(record: dict) -> str:
    """The console's line about a finished or failed entry."""
    if record["status"] != "ok":
        return f"{record['entry']}: {record['status'].upper()} — {record.get('error', '')}{_raised_at(record)}"
    metrics = record["metrics"]
    return (f"{record['entry']}: acc {metrics['clean_accuracy']:.4f}, {record['drelus']:,} DReLUs, "
            f"{record['compute']['used']['epochs']:.2f} epochs / {record['compute']['used']['seconds']:.1f} s")
