"""Publishing a leaderboard from run records: records → tables (``tables``) → markdown (``markdown``),
a JSON twin, a figure (``figure``) and a self-contained HTML page (``html``).

Several runs of one suite (typically different seeds) merge into one board: every number is the
mean over seeds ± the sample standard deviation; with one seed, an accuracy carries its 95%
binomial (Wilson) interval on the number of images it was measured on, so readers do not rank noise."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from benchbed import schemas
from benchbed.config import PLAIN_NAME
from benchbed.errors import BenchbedError
from benchbed.files import write_json, write_text
from benchbed.plugin.manager import Plugins, plugin_manager
from benchbed.report import board_json, claims, columns, figure, markdown, tables
from benchbed.report.external import external_results
from benchbed.report.pareto import HEADLINE_NETWORK
from benchbed.report.findings import findings_lines
from benchbed.report.html import write_html
from benchbed.run.rundir import RunDir

GRID_METRICS = ["clean_accuracy", "pgd_accuracy", "autoattack_accuracy", "corruption_accuracy"]


def load_runs(run_dirs: list[Path]) -> tuple[dict, list[dict], dict[str, str]]:
    """The suite metadata shared by ``run_dirs``, all their entry records, and each entry's run directory."""
    metas = [RunDir(d).meta() for d in run_dirs]
    if len({m["fingerprint"] for m in metas}) > 1:
        raise BenchbedError("these runs are of different suite configurations and cannot be merged: "
                            + ", ".join(f"{m['run_dir']} ({m['suite']['name']})" for m in metas))
    records, seen = [], {}
    for meta in metas:
        for record in RunDir(meta["run_dir"]).records():
            if record.get("fingerprint") != meta["fingerprint"]:
                raise BenchbedError(f"{meta['run_dir']}: entry {record['entry']} belongs to another suite configuration "
                                    f"(fingerprint {record.get('fingerprint')}, the run's {meta['fingerprint']}); "
                                    "remove it, or run the suite to redo it")
            if record["entry"] in seen:
                raise BenchbedError(f"entry {record['entry']} is in both {seen[record['entry']]} and {meta['run_dir']}; "
                                    "merge runs of different seeds")
            seen[record["entry"]] = meta["run_dir"]
            records.append(record)
    if not records:
        raise BenchbedError(f"no entry records in {', '.join(map(str, run_dirs))}; run the suite first")
    _one_teacher_and_version(records)
    merged = dict(metas[0])
    merged["seeds"] = sorted({r["seed"] for r in records})
    merged["run_dirs"] = [m["run_dir"] for m in metas]
    planned = [e for m in metas for e in (m.get("planned") or [])]
    finished = {r["entry"] for r in records if r["status"] in ("ok", "over_budget")}
    merged["completeness"] = {"planned": len(planned) or None, "finished": len(finished & set(planned)) if planned
                              else len(finished), "in_use": any(m.get("in_use") for m in metas)}
    return merged, records, seen


def _one_teacher_and_version(records: list[dict]) -> None:
    """A board combines entries of one teacher per variant and one version per plugin, never a mix."""
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    for r in records:
        part = r.get("composition") or {}
        marks = [(("teacher", t["variant"]), t["fingerprint"]) for t in (r.get("teachers") or {}).values()]
        marks += [(("plugin", part.get("mask_method", r.get("mask_method", r.get("method", "")))), r.get("method_version"))]
        if part:
            marks.append((("plugin", part["finetune_method"]), part.get("finetune_version")))
        for key, value in marks:
            if seen.setdefault(key, (value, r["entry"]))[0] != value:
                what = f"the {key[1]} teacher" if key[0] == "teacher" else f"plugin {key[1]}"
                raise BenchbedError(f"entries {seen[key][1]} and {r['entry']} were made with different versions of "
                                    f"{what} ({seen[key][0]} vs {value}); run the suite again to redo the stale ones")


def record_version(record: dict, run_dir: str) -> int:
    """The record's schema version. One written before records carried it is read as version 1 when it
    conforms to that schema (the field is all that was added); otherwise the board is refused."""
    stated = record.get("schema_version")
    found = schemas.problems(record if stated is not None else {**record, "schema_version": schemas.ENTRY_VERSION},
                             "entry")
    if found:
        raise BenchbedError(f"{RunDir(run_dir).record_path(record['entry'])} is no valid entry record ({found[0]}); "
                            "run the suite again to redo it")
    return stated if stated is not None else schemas.ENTRY_VERSION


def _checkpoint(record: dict, run_dir: str, out_dir: Path) -> dict | None:
    """Where the entry's checkpoint lies, relative to the board (``benchbed.load_model`` follows it), and its sha256."""
    if record["status"] != "ok":
        return None
    path = RunDir(run_dir).checkpoint_path(record["entry"])
    return {"path": Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix(),
            "sha256": record["checkpoint_sha256"]}


def _submission(result: dict, out_dir: Path) -> dict | None:
    """Where an external row's submission lies, relative to the board (``benchbed.load_model`` follows it),
    and its sha256; None when its result does not say or the files are gone."""
    where = result.get("submission_path")
    if not where or not Path(where).exists():
        return None
    return {"path": Path(os.path.relpath(Path(where).resolve(), out_dir.resolve())).as_posix(),
            "sha256": result["submission_sha256"]}


def _scalars(record: dict) -> dict[str, object]:
    """The plain (number, string, bool) fields of a record's ``build_mask`` and ``finetune`` info."""
    found = {}
    for stage in ("build_mask", "finetune"):
        for key, value in (record.get(stage) or {}).items():
            if isinstance(value, (bool, int, float, str)) and len(str(value)) <= 80:
                found[f"{stage}.{key}"] = round(value, 4) if isinstance(value, float) else value
    return found


def grouped_lines(records: list[dict], field: str) -> list[str]:
    """A per-entry mapping of the records (``cuts``, ``notes``…) grouped across seeds: one line per
    (method, budget, level, key) with the seeds and each distinct value."""
    groups: dict[tuple, dict] = {}
    for r in records:
        level = (r.get("compute_level") or {}).get("label") or "—"
        for part, why in r[field].items():
            why = str(why)
            group = groups.setdefault((r.get("label", r["method"]), r["budget"], level, part), {"seeds": [], "why": []})
            group["seeds"].append(r["seed"])
            if why not in group["why"]:
                group["why"].append(why)
    return [f"- {label} @ {'—' if budget is None else f'{budget:,}'}" + (f", {level}" if level != "—" else "")
            + f" (seeds {', '.join(map(str, sorted(g['seeds'])))}): {part}: {' / '.join(g['why'])}"
            for (label, budget, level, part), g in groups.items()]


def render(run_dirs: list[Path], out_dir: Path, stem: str | None = None, overwrite: bool = True,
           external: list[Path] = ()) -> Path:
    """Write ``<stem>.md``, ``.json``, ``.png`` and ``.html`` into ``out_dir``; return the markdown path.
    Without ``overwrite``, a leaderboard already there is an error rather than silently replaced.
    ``external``: verified results (``benchbed verify --json``), their submissions measured again, shown
    as rows marked external."""
    meta, records, where = load_runs([Path(d) for d in run_dirs])
    # each external result's submission measured again: what its row shows is the core's measurement now
    outside = external_results(list(external), meta, Plugins(plugin_manager())) if external else []
    versions = {r["entry"]: record_version(r, where[r["entry"]]) for r in records}
    stem = stem or str(meta["suite"].get("name", ""))
    if not re.fullmatch(PLAIN_NAME, stem):  # a tampered suite.json must not write outside the folder
        raise BenchbedError(f"the suite's name {stem[:60]!r} is no plain file name; fix `name` in the suite and run it")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BenchbedError(f"{out_dir} is a file, not a folder; pass --to a folder")
    if not overwrite and (out_dir / f"{stem}.md").exists():
        raise BenchbedError(f"{out_dir / f'{stem}.md'} exists; pass --overwrite to replace it, or --to another folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchbedError(f"cannot create {out_dir} ({exc.strerror or exc}); pass --to a writable folder") from None
    located = {r["name"]: _submission(r, out_dir) for r in outside}
    n_test = (meta.get("data") or {}).get("test")
    titles = tables.accuracy_titles(records)
    accuracies = set(titles)
    internal = tables.table(records)
    frame = tables.with_external(internal, outside, accuracies)
    profile_names = tables.profiles(records)
    networks = list(meta["suite"]["secure_cost"]["networks"]) if meta["suite"]["secure_cost"]["enabled"] else []
    protocol = markdown.protocol_lines(meta, records)
    kinds = tables.compute_kinds(records)
    explained = [] if frame.empty else markdown.explanation_lines(frame, profile_names, n_test, kinds)
    title = f"Leaderboard: {meta['suite']['name']}"
    declared = [] if frame.empty else columns.declared(frame, titles, profile_names, networks)
    level_names = [] if frame.empty else tables.levels(frame)
    cols, constant = columns.constant(frame, declared)
    explained += constant
    sections = markdown.grid_lines(tables.grid(records, GRID_METRICS), titles)
    if outside:
        sections += ["", "## External submissions", "",
                     "Rows marked *(external)* are models trained elsewhere, rebuilt, recounted, evaluated and priced "
                     "here under this suite's settings (`benchbed verify`); their figures are benchbed's measurements, "
                     "every claim of theirs held, and their compute is unknown, so they are in no claim's test."]
        sections += [f"- **{r['name']}**: " + ", ".join(f"{k} {v}" for k, v in r["source"].items())
                     + f"; {len(r['verdicts'])} claims hold; submission sha256 `{r['submission_sha256'][:16]}…`, "
                       f"verified {r['verified'] if 'verified' in r else '?'}"
                     + (f"; `benchbed.load_model(\"{stem}.json\", \"{r['name']}\")` loads it" if located[r["name"]]
                        else "; not loadable from this board (its result does not say where the submission lies)")
                     for r in outside]
    detailed = [{**r, "details": _scalars(r)} for r in records]
    for field, heading, intro in (
            ("notes", "Notes from the methods", "What each entry's method said about its run (SNL: how many kept "
             "pixels its search chose and how many top-k filled in; DeepReDuce: the DReLUs its coarse choice used; "
             "RLNet: stage 1's start)"),
            ("details", "What the methods recorded", "The plain figures of each method's own record of its mask and "
             "finetune (`MaskResult.info`, `FinetuneResult.info`: search epochs, whether the budget stopped a search, "
             "the DaPa variant…); the records hold the rest"),
            ("cuts", "Cut to fit the budget", "Parts of a method's published recipe that did not fit")):
        having = [r for r in detailed if r.get(field)]
        if having:
            sections += ["", f"## {heading}", "", f"{intro}; once per method, budget and level, with the seeds and each "
                         "distinct value.", ""] + grouped_lines(having, field)
    unfinished = [r for r in records if r["status"] != "ok"]
    if unfinished:
        sections += ["", "## Entries that did not finish", ""]
        sections += [f"- `{r['entry']}`: **{r['status']}** — {r.get('error', '')}" for r in unfinished]
    tested = claims.assess(records)
    sections += [""] + claims.markdown(tested)
    found = findings_lines(frame, profile_names, networks, tested)
    md_path = out_dir / f"{stem}.md"
    write_text(md_path, markdown.page(title=title, description=meta["suite"].get("description", ""), findings=found,
                                      protocol=protocol,
                                      table="" if frame.empty else markdown.results_tables(
                                          frame, cols, level_names, HEADLINE_NETWORK, len(meta["seeds"])),
                                      explained=explained, sections=[""] + sections))
    board = {
        "schema_version": schemas.LEADERBOARD_VERSION, "suite": meta["suite"], "seeds": meta["seeds"],
        "run_dirs": meta["run_dirs"], "records_sha256": schemas.records_sha256(records), "claims": claims.as_json(tested),
        "protocol": protocol, "how_to_read": explained, "columns": [c.as_json() for c in declared],
        "rows": [] if frame.empty else board_json.rows(frame, declared),
        "entries": [{"schema_version": versions[r["entry"]],
                     **{k: r.get(k) for k in ("entry", "method", "label", "budget", "seed", "status", "error", "relus",
                                              "drelus", "metrics", "secure_cost", "compute", "notes", "cuts",
                                              "composition", "published")},
                     "checkpoint": _checkpoint(r, where[r["entry"]], out_dir)} for r in records],
        "external": [{**r, "submission": located[r["name"]]} for r in outside]}
    schemas.check(board, "leaderboard", f"the leaderboard for {out_dir / f'{stem}.json'}")
    write_json(out_dir / f"{stem}.json", board)
    images = []
    if not internal.empty:
        images.append(out_dir / f"{stem}.png")
        # with several compute levels the DReLU and cost panels show the largest one
        shown = internal[internal["level"].isin(["—", level_names[-1]])] if level_names else internal
        figure.save(figure.figure(shown, meta, profile_names), images[0])
        if len(level_names) > 1:
            images.append(out_dir / f"{stem}.compute.png")
            figure.save(figure.compute_figure(internal, meta), images[-1])
    several_levels = len(level_names) > 1
    write_html(out_dir / f"{stem}.html", title, protocol + explained, html_columns(cols, several_levels),
               html_rows(frame, cols, several_levels), images, sections, found)
    return md_path


def html_columns(cols: list[columns.Column], several_levels: bool) -> list[tuple[str, str, str]]:
    """(key, title, group) of the HTML table's columns: the row's identity, then every declared column."""
    identity = [("method", "method", "")] + ([("level", "compute", "")] if several_levels else [])
    identity += [("budget", "budget", ""), ("seeds", "seeds", "")]
    return identity + [(c.key, c.title, columns.GROUPS[c.group] + (f": {c.profile}" if c.profile else ""))
                       for c in cols]


def html_rows(frame: pd.DataFrame, cols: list[columns.Column], several_levels: bool) -> list[dict]:
    """Per row, its cells as (text shown, value sorted by) and whether it is an external submission."""
    out = []
    for _, row in frame.iterrows():
        budget = None if pd.isna(row["budget"]) else int(row["budget"])
        cells = [(markdown.row_label(row), row["label"])]
        if several_levels:
            cells.append((row["level"], None if pd.isna(row.get("level_epochs")) else float(row["level_epochs"])))
        cells += [("—" if budget is None else f"{budget:,}", budget), (str(int(row["seeds"])), int(row["seeds"]))]
        cells += [(columns.cell(row, c), None if pd.isna(row.get(c.key)) else float(row[c.key])) for c in cols]
        out.append({"cells": cells, "external": bool(row.get("external"))})
    return out
