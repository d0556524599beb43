"""External rows: models trained elsewhere, measured by benchbed. ``measure`` is what ``benchbed verify``
and ``benchbed publish --external`` both run on a submission: the core rebuilds it, recounts, evaluates
and prices it under the suite. ``external_results`` admits a verified result to a board only after
measuring its submission again — the files its result names, with the hash it states — so a board's
external row shows what the core measured now, never what a result file says."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from benchbed import schemas
from benchbed.config import Suite
from benchbed.errors import BenchbedError
from benchbed.files import read_json
from benchbed.model.sites import drelu_count
from benchbed.plugin.manager import Plugins
from benchbed.report.tables import flatten
from benchbed.run.suite import LoadedSuite
from benchbed.submissions.verify import (check_budget, inconsistencies, load_submission, measured_figures,
                                         protocol_sha256, split_claims, submission_record, submission_sha256,
                                         verdicts)

Progress = Callable[[str, float, float], None]


def measure(submission: Path, loaded: LoadedSuite, plugins: Plugins, claims: dict,
            progress: Progress = lambda *a: None, log: Callable[[str], None] = lambda line: None) -> dict:
    """The figures a claim can name, as the core measures ``submission`` under the suite; a model over
    the budget ``claims`` states is refused before it is evaluated."""
    spec = loaded.suite.dataset
    data = plugins.datasets.load(spec.name, spec.root, spec.download, spec.val_fraction, spec.split_seed)
    model = load_submission(Path(submission), loaded, data, plugins)
    check_budget(model, claims)
    log(f"measuring {submission} under {loaded.suite.name}: {loaded.suite.model.name}, {drelu_count(model):,} DReLUs")
    return measured_figures(flatten(submission_record(model, loaded, data, plugins, progress=progress)))


def _read(path: Path) -> dict:
    try:
        result = read_json(Path(path))
    except (OSError, ValueError) as exc:
        raise BenchbedError(f"{path} is unreadable ({type(exc).__name__}); pass the file `benchbed verify --json` "
                            "wrote") from None
    schemas.check(result, "external", str(path))
    return result


def _remeasured(path: Path, result: dict, loaded: LoadedSuite, plugins: Plugins, log: Callable[[str], None]) -> dict:
    """``result`` with the figures its submission measures now; refused when the submission is gone,
    changed, or measures other figures than the result states."""
    where = result.get("submission_path")
    if not where or not Path(where).exists():
        raise BenchbedError(f"{path} does not say where its submission lies, or the files are gone ({where}); "
                            "verify the submission again with this benchbed (`benchbed verify … --json`) and "
                            "publish that result")
    if submission_sha256(Path(where)) != result["submission_sha256"]:
        raise BenchbedError(f"{where} is not the submission {path} was verified with (sha256 mismatch); verify it "
                            "again and publish that result")
    figures, _ = split_claims(result["claims"])
    now = measure(Path(where), loaded, plugins, figures, log=log)
    differ = [v.figure for v in verdicts({k: v for k, v in result["measured"].items() if v is not None}, now)
              if not v.holds]
    if differ:
        raise BenchbedError(f"{path}: its measured figures are not what its submission measures now "
                            f"({', '.join(differ[:4])}); publish the file `benchbed verify --json` wrote, unedited")
    return {**result, "measured": now, "verdicts": [vars(v) for v in verdicts(figures, now)]}


def external_results(paths: list[Path], meta: dict, plugins: Plugins,
                     log: Callable[[str], None] = lambda line: None) -> list[dict]:
    """Verified external results fit for this board, each re-measured: valid, verified under this suite's
    protocol, consistent with itself, every claim holding on the figures measured now, naming its source."""
    loaded = LoadedSuite(Suite.model_validate(meta["suite"]), {}, {})
    found = []
    for path in paths:
        result = _read(Path(path))
        if result["suite"] != meta["suite"]["name"] or result["protocol_sha256"] != protocol_sha256(meta["suite"]):
            raise BenchbedError(f"{path} was verified under another suite configuration than "
                                f"{meta['suite']['name']}'s; verify it with this run's suite file")
        problems = inconsistencies(result)
        if problems:
            raise BenchbedError(f"{path} disagrees with itself: {'; '.join(problems)}; publish the file "
                                "`benchbed verify --json` wrote, unedited")
        if not result["source"]:
            raise BenchbedError(f'{path} names no source; add "source": {{"paper": URL, "code": URL}} to its claims '
                                "and verify it again")
        if not result["holds"]:
            failed = [v["figure"] for v in result["verdicts"] if not v["holds"]]
            raise BenchbedError(f"{path}: an external row shows verified claims only, and "
                                + (f"these do not hold: {', '.join(failed)}" if failed else "it claims nothing")
                                + "; verify it with --claims")
        result = _remeasured(Path(path), result, loaded, plugins, log)
        failed = [v["figure"] for v in result["verdicts"] if not v["holds"]]
        if failed:
            raise BenchbedError(f"{path}: measured again, these claims do not hold: {', '.join(failed)}")
        if any(r["name"] == result["name"] for r in found):
            raise BenchbedError(f"{path}: two external results are named {result['name']!r}; rename one in its "
                                "claims and verify it again")
        found.append(result)
    return found
