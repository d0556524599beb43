"""Publishing a leaderboard from run records: records → tables (``tables``) → markdown (``markdown``),
a JSON twin, a figure (``figure``) and a self-contained HTML page (``html``).

Several runs of one suite (typically different seeds) merge into one board: every number is the
mean over seeds ± the sample standard deviation; with one seed, an accuracy carries its 95%
binomial (Wilson) interval on the number of images it was measured on, so readers do not rank noise."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from benchbed.config import PLAIN_NAME
from benchbed.errors import BenchbedError
from benchbed.files import write_json, write_text
from benchbed.report import claims, figure, markdown, tables
from benchbed.report.html import write_html
from benchbed.run.rundir import RunDir

GRID_METRICS = ["clean_accuracy", "pgd_accuracy", "corruption_accuracy"]


def load_runs(run_dirs: list[Path]) -> tuple[dict, list[dict]]:
    """The suite metadata shared by ``run_dirs`` and all their entry records."""
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
    return merged, records


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


def render(run_dirs: list[Path], out_dir: Path, stem: str | None = None, overwrite: bool = True) -> Path:
    """Write ``<stem>.md``, ``.json``, ``.png`` and ``.html`` into ``out_dir``; return the markdown path.
    Without ``overwrite``, a leaderboard already there is an error rather than silently replaced."""
    meta, records = load_runs([Path(d) for d in run_dirs])
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
    n_test = (meta.get("data") or {}).get("test")
    frame = tables.table(records)
    titles = tables.accuracy_titles(records)
    accuracies = set(titles)
    profile_names = tables.profiles(records)
    networks = list(meta["suite"]["secure_cost"]["networks"]) if meta["suite"]["secure_cost"]["enabled"] else []
    protocol = markdown.protocol_lines(meta, records)
    explained = [] if frame.empty else markdown.explanation_lines(frame, profile_names, n_test)
    title = f"Leaderboard: {meta['suite']['name']}"
    cols = [] if frame.empty else markdown.columns(frame, titles, profile_names, networks)
    sections = markdown.grid_lines(tables.grid(records, GRID_METRICS), titles)
    noted = [r for r in records if r.get("notes")]
    if noted:
        sections += ["", "## Notes from the methods", "",
                     "What each entry's method said about its run (SNL: how many kept pixels its search chose and how "
                     "many top-k filled in; DeepReDuce: the DReLUs its coarse choice used; RLNet: stage 1's start).", ""]
        sections += [f"- `{r['entry']}`: " + "; ".join(str(v) for v in r["notes"].values()) for r in noted]
    cut = [r for r in records if r.get("cuts")]
    if cut:
        sections += ["", "## Cut to fit the budget", ""]
        sections += [f"- `{r['entry']}`: " + "; ".join(f"{part}: {why}" for part, why in r["cuts"].items()) for r in cut]
    unfinished = [r for r in records if r["status"] != "ok"]
    if unfinished:
        sections += ["", "## Entries that did not finish", ""]
        sections += [f"- `{r['entry']}`: **{r['status']}** — {r.get('error', '')}" for r in unfinished]
    tested = claims.assess(records)
    sections += [""] + claims.markdown(tested)
    md_path = out_dir / f"{stem}.md"
    write_text(md_path, markdown.page(title=title, description=meta["suite"].get("description", ""), protocol=protocol,
                                      table="" if frame.empty else markdown.results_tables(
                                          frame, cols, accuracies, tables.levels(frame)),
                                      explained=explained, sections=[""] + sections))
    write_json(out_dir / f"{stem}.json", {
        "suite": meta["suite"], "seeds": meta["seeds"], "run_dirs": meta["run_dirs"], "claims": claims.as_json(tested),
        "protocol": protocol, "how_to_read": explained, "columns": [{"key": k, "title": t} for k, t in cols],
        "rows": [] if frame.empty else frame.astype(object).where(frame.notna(), None).to_dict(orient="records"),
        "entries": [{k: r.get(k) for k in ("entry", "method", "label", "budget", "seed", "status", "error", "relus",
                                           "drelus", "metrics", "secure_cost", "compute", "notes", "cuts",
                                           "composition", "published")} for r in records]})
    images = []
    if not frame.empty:
        images.append(out_dir / f"{stem}.png")
        level_names = tables.levels(frame)
        # with several compute levels the DReLU and cost panels show the largest one
        shown = frame[frame["level"].isin(["—", level_names[-1]])] if level_names else frame
        figure.save(figure.figure(shown, meta, profile_names), images[0])
        if len(level_names) > 1:
            images.append(out_dir / f"{stem}.compute.png")
            figure.save(figure.compute_figure(frame, meta), images[-1])
    rows = [] if frame.empty else [
        [(row["label"], row["label"]), ("—" if pd.isna(row["budget"]) else f"{int(row['budget']):,}",
                                        None if pd.isna(row["budget"]) else int(row["budget"])),
         (str(int(row["seeds"])), int(row["seeds"]))]
        + [(markdown.cell(row, k, accuracies), None if pd.isna(row.get(k)) else float(row[k])) for k, _ in cols]
        for _, row in frame.iterrows()]
    write_html(out_dir / f"{stem}.html", title, protocol + explained,
               [("method", "method"), ("budget", "budget"), ("seeds", "seeds")] + cols, rows, images, sections)
    return md_path
