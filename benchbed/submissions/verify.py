"""``benchbed verify``: a linearized model trained anywhere, checked against the figures its submitter
claims, under a suite's protocol. The core rebuilds the model from its plain folder (or a benchbed
checkpoint) with its own architecture and kernels, recounts its ReLUs and DReLUs from the site
specs, evaluates it on the suite's test split with the suite's settings and prices it under the
suite's profiles; every claimed figure gets a verdict.

Claims are a JSON object of figures, as a leaderboard's row names them: ``budget`` (the DReLU budget
the model claims to meet: refused outright when its DReLUs exceed it), ``relus``, ``drelus``, any
accuracy the suite measures (``clean_accuracy``, ``pgd_accuracy``, …, fractions), and per profile
``comm_mb@P``, ``rounds@P``, ``latency_NET@P``; beside them the submission's ``name`` and its
``source`` (``{"paper": URL, "code": URL}``). The verified result (``external.schema.json``) is what
``benchbed publish --external`` shows as an external row.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from benchbed import schemas
from benchbed.data.bundle import DataBundle
from benchbed.errors import BenchbedError, first_line
from benchbed.model.checkpoint import FORMAT, model_from_payload, read_checkpoint
from benchbed.model.plain import read_plain
from benchbed.model.sites import drelu_count
from benchbed.plugin.manager import Plugins
from benchbed.run import provenance
from benchbed.run.rebuild import expectations
from benchbed.run.scoring import score
from benchbed.run.suite import LoadedSuite

# how far a measured figure may sit from the claim and still match it
ACCURACY_TOLERANCE = 0.005   # half a point: the same model and images give the same accuracy
RELATIVE_TOLERANCE = 0.01    # prices


@dataclass
class Verdict:
    figure: str
    claimed: float
    measured: float | None
    holds: bool
    tolerance: str

    hint: str = ""  # a figure this suite measures, for a claimed figure it does not

    def line(self) -> str:
        if self.figure == "budget":
            return (f"budget: claimed {self.claimed:,.0f} DReLUs, the model computes {self.measured:,.0f} — "
                    + ("within it" if self.holds else "OVER IT"))
        if self.measured is None:
            hint = f" (did you mean {self.hint}?)" if self.hint else ""
            return f"{self.figure}: claimed {self.claimed:g}, but this suite does not measure it{hint} — DIFFERS"
        word = "matches" if self.holds else "DIFFERS"
        return (f"{self.figure}: claimed {self.claimed:.6g}, measured {self.measured:.6g} "
                f"({self.measured - self.claimed:+.4g}) — {word} (tolerance {self.tolerance})")


def load_submission(path: Path, loaded: LoadedSuite, data: DataBundle, plugins: Plugins) -> nn.Module:
    """The submitted model, rebuilt by the core and checked against the suite's model and data."""
    path = Path(path)
    payload = read_plain(path, FORMAT) if path.is_dir() else read_checkpoint(path).payload
    build = payload.get("build") if isinstance(payload, dict) else None
    if build is not None and not isinstance(build, dict):
        raise BenchbedError(f'{path}: "build" must be an object of the model\'s build options, e.g. '
                            '{"stem_relu": true}; got ' + f"{type(build).__name__}")
    stem = (build or {}).get("stem_relu", True)
    if stem != loaded.suite.model.stem_relu:
        raise BenchbedError(f"{path} was built {'with' if stem else 'without'} the stem ReLU, the suite's model "
                            f"{'with' if loaded.suite.model.stem_relu else 'without'} it; submit the suite's model")
    model = model_from_payload(payload, str(path), models=plugins.models, **expectations(loaded.suite, data))
    return model.eval()


def submission_record(model: nn.Module, loaded: LoadedSuite, data: DataBundle, plugins: Plugins,
                      seed: int = 0, progress: Callable[[str, float, float], None] = lambda *a: None) -> dict:
    """The record the suite would make of ``model``, scored as every entry of a run is (a leaderboard's
    ``flatten`` turns it into the figures claims name)."""
    return {"method": "submission", "budget": None, "seed": seed, "status": "ok", "compute": {"used": {"epochs": 0.0}},
            **score(model, loaded.suite, data, plugins, seed, progress=progress)}


def _tolerance(figure: str) -> tuple[float, str, bool]:
    """(tolerance, its description, relative?) for a figure."""
    if figure in ("relus", "drelus") or figure.startswith("rounds@"):
        return 0.0, "exact", False
    if "@" in figure:
        return RELATIVE_TOLERANCE, f"{RELATIVE_TOLERANCE:.0%}", True
    return ACCURACY_TOLERANCE, f"{100 * ACCURACY_TOLERANCE:g} points", False


def verdicts(claims: dict, measured: dict) -> list[Verdict]:
    """A verdict per claimed figure, the budget's against the measured DReLUs (and a model over it is
    refused before any work, in ``check_budget``); a figure the suite does not measure names the
    nearest ones it does."""
    out = []
    for figure, claimed in claims.items():
        if not isinstance(claimed, (int, float)) or isinstance(claimed, bool) or not math.isfinite(claimed):
            raise BenchbedError(f"claim {figure!r} must be a finite number, got {claimed!r}")
        if figure == "budget":  # checked before any work too: a model over it is never evaluated
            drelus = measured.get("drelus")
            out.append(Verdict(figure, float(claimed), drelus, drelus is not None and drelus <= claimed,
                               "at most the claimed DReLUs"))
            continue
        value = measured.get(figure)
        tolerance, text, relative = _tolerance(figure)
        bound = tolerance * abs(claimed) if relative else tolerance
        hint = "" if value is not None else ", ".join(difflib.get_close_matches(figure, list(measured), n=2, cutoff=0.6))
        out.append(Verdict(figure, float(claimed), value, value is not None and abs(value - claimed) <= bound + 1e-12,
                           text, hint))
    return out


def check_budget(model: nn.Module, claims: dict) -> None:
    """A model whose DReLUs exceed the budget it claims is refused before it is evaluated."""
    budget = claims.get("budget")
    if budget is None:
        return
    drelus = drelu_count(model)
    if drelus > budget:
        raise BenchbedError(f"the model computes {drelus:,} DReLUs, over the {budget:,} it claims to meet; "
                            "submit a mask within its budget")


DESCRIPTIVE = ("name", "source")  # the claims file's keys that are no figure


def split_claims(claims: dict) -> tuple[dict, dict]:
    """(figures, description): the claimed numbers, and the submission's ``name`` and ``source``; every
    figure a finite number and the budget a whole number of DReLUs, checked before any work."""
    source = claims.get("source", {})
    if not isinstance(source, dict) or not all(isinstance(v, str) for v in source.values()):
        raise BenchbedError('claim "source" must be an object of strings, e.g. {"paper": URL, "code": URL}')
    if not isinstance(claims.get("name", ""), str):
        raise BenchbedError('claim "name" must be a string')
    figures = {k: v for k, v in claims.items() if k not in DESCRIPTIVE}
    for figure, claimed in figures.items():
        if not isinstance(claimed, (int, float)) or isinstance(claimed, bool) or not math.isfinite(claimed):
            raise BenchbedError(f"claim {figure!r} must be a finite number, got {claimed!r}")
    budget = figures.get("budget")
    if budget is not None and (budget < 0 or budget != int(budget)):
        raise BenchbedError(f'claim "budget" must be a whole number of DReLUs, got {budget!r}')
    return figures, {"name": claims.get("name"), "source": source}


def inconsistencies(result: dict) -> list[str]:
    """Where a verified result disagrees with itself: its verdicts against those its own claims and
    measured figures give, its overall ``holds``, and a measured DReLU count over its claimed budget (a
    result edited after ``benchbed verify`` wrote it)."""
    try:
        figures, _ = split_claims(result["claims"])
        again = [asdict(v) for v in verdicts(figures, result["measured"])]
    except (BenchbedError, TypeError, KeyError, AttributeError) as exc:
        return [f"its claims cannot be checked ({first_line(exc)})"]
    found = []
    if again != result["verdicts"]:
        found.append("its verdicts are not those its claims and measured figures give")
    if result["holds"] != (bool(again) and all(v["holds"] for v in again)):
        found.append("its `holds` is not what its verdicts say")
    budget, drelus = figures.get("budget"), result["measured"].get("drelus")
    if budget is not None and (not isinstance(drelus, (int, float)) or drelus > budget):
        found.append(f"its measured DReLUs ({drelus}) are over the budget it claims ({budget})")
    if result.get("budget") != budget:
        found.append("its budget is not the one it claims")
    return found


# A board row's fields that place an entry in a run (its level, seed, compute), not what was measured.
PLACING = ("level_index", "level_epochs", "seed", "epochs_used", "budget")


def measured_figures(row: dict) -> dict:
    """The figures a submission's claims can name: every number its measurement gave."""
    return {k: v for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in PLACING}


def protocol_sha256(suite: dict) -> str:
    """The identity of what a model is measured under: the suite's dataset (where it lies aside), model,
    evaluation and secure-cost sections, as a suite's ``model_dump(mode="json")`` has them."""
    dataset = {k: v for k, v in suite["dataset"].items() if k not in ("root", "download")}
    body = {"dataset": dataset, **{k: suite[k] for k in ("model", "evaluation", "secure_cost")}}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def submission_sha256(path: Path) -> str:
    """sha256 over a submission: a plain folder's files (each its relative name, then its bytes, in name
    order) or a checkpoint file's name and bytes."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path if path.is_dir() else path.parent).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def external_result(submission: Path, loaded: LoadedSuite, claims: dict, measured: dict,
                    found: list[Verdict]) -> dict:
    """The verified result as ``external.schema.json`` has it."""
    figures, described = split_claims(claims)
    path = Path(submission)
    result = {"schema_version": schemas.EXTERNAL_VERSION, "name": described["name"] or path.name,
              "source": described["source"], "suite": loaded.suite.name,
              "protocol_sha256": protocol_sha256(loaded.suite.model_dump(mode="json")),
              "submission_sha256": submission_sha256(path), "submission_path": str(path.resolve()),
              "budget": figures.get("budget"),
              "claims": {k: v for k, v in figures.items()}, "measured": measured,
              "verdicts": [asdict(v) for v in found], "holds": bool(found) and all(v.holds for v in found),
              "verified": provenance.now(), "source_commit": provenance.source_commit()}
    schemas.check(result, "external", "the verified result")
    return result
