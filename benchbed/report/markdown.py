"""Presentation in words: the cells, the columns, the protocol and how-to-read lines, and the markdown
page rendered from ``templates/board.md.j2``."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import jinja2
import pandas as pd

from benchbed.report.columns import Column, cell, missing
from benchbed.report.tables import costs, profiles

TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                               keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                               undefined=jinja2.StrictUndefined, autoescape=False)
UNRELIABLE = "⚠ unreliable"
UNMETERED = "⚠ unmetered compute"  # its process's CPU time was far beyond what its metered compute needs


def flags(row: pd.Series, seeds: int, unranked: list[Column] = ()) -> str:
    """What a row's figures alone do not say: robustness flagged unreliable, CPU time its metered compute does
    not explain (``benchbed.run.cpu_check``), a model trained elsewhere,
    fewer seeds than the board's, and the figures of columns too sparse for the ranked table (``unranked``)."""
    found = []
    if not missing(row.get("unreliable")) and row["unreliable"] > 0:
        found.append(UNRELIABLE)
    if not missing(row.get("unmetered")) and row["unmetered"] > 0:
        found.append(UNMETERED)
    if bool(row.get("external")) is True:
        found.append("external")
    if int(row["seeds"]) < seeds and not bool(row.get("external")):
        found.append(f"{int(row['seeds'])} of {seeds} seeds")
    found += [f"{c.heading} {c.text(row[c.key])}" for c in unranked if not missing(row.get(c.key))]
    return ", ".join(found)


def row_label(row: pd.Series) -> str:
    """The row's name, marked when the robustness of any of its seeds was flagged unreliable."""
    flagged = row.get("unreliable")
    return row["label"] + (f" {UNRELIABLE}" if not missing(flagged) and flagged > 0 else "")


def ranked_columns(cols: list[Column], headline: str) -> list[Column]:
    """The ranked table's columns: DReLUs, the accuracies, one headline latency (the first profile's, on
    the ``headline`` network) and the compute used."""
    picked = [c for c in cols if c.ranked and (c.key == "drelus" or c.group in ("accuracy", "robustness", "paper"))]
    latency = next((c for c in cols if c.group == "cost" and c.path[-1] == headline and c.path[-2] == "latency_s"), None)
    if latency is not None:
        picked.append(replace(latency, short=latency.title))
    return picked + [c for c in cols if c.key == "epochs_used"]


def markdown_table(headers: list[str], body: list[list[str]]) -> str:
    """A GitHub markdown table as narrow as its cells: one space either side, no more (tabulate pads a
    header by two, which costs a ranked table a tenth of its width)."""
    widths = [max([len(h)] + [len(row[i]) for row in body]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def _by_accuracy(frame: pd.DataFrame) -> pd.DataFrame:
    # the reference rows (no budget) first and unranked; the rest by clean accuracy, an external row
    # among them by its numbers, never pinned
    return frame.sort_values(["budget", "clean_accuracy"], ascending=[True, False], na_position="first", kind="stable")


def table_text(rows: pd.DataFrame, cols: list[Column], seeds: int, ranked: bool,
               unranked: list[Column] = ()) -> str:
    """A ranked table (rank, method, columns, flags) or, not ``ranked``, a plain one (method, columns)."""
    body, rank = [], 0
    for _, row in _by_accuracy(rows).iterrows():
        cells = [cell(row, c) for c in cols]
        if ranked:
            budgeted = bool(pd.notna(row["budget"]))
            rank += budgeted
            body.append([str(rank) if budgeted else "—", row["label"], *cells, flags(row, seeds, unranked)])
        else:
            body.append([row["label"], *cells])
    headers = (["#", "method"] if ranked else ["method"]) + [c.heading for c in cols] + (["flags"] if ranked else [])
    if ranked and not any(r[-1] for r in body):
        headers, body = headers[:-1], [r[:-1] for r in body]
    return markdown_table(headers, body)


def results_tables(frame: pd.DataFrame, cols: list[Column], level_names: list[str], headline: str = "WAN",
                   seeds: int = 1) -> str:
    """Per compute level and budget (the reference rows, which compute nothing, in each): a ranked table
    of accuracies, one headline latency and compute, then a secure-cost table per profile."""
    ranked = ranked_columns(cols, headline)
    unranked = [c for c in cols if not c.ranked and c.group in ("accuracy", "robustness")]
    # ReLUs beside DReLUs where a row's differ (a patch's one comparison gates many): they size what a
    # profile stores and garbles per ReLU, so they head each profile's table
    relus = [c for c in cols if c.key == "relus"] if (frame["relus"] != frame["drelus"]).any() else []
    by_profile: dict[str, list[Column]] = {}
    for c in cols:
        if c.profile is not None:
            by_profile.setdefault(c.profile, list(relus)).append(c)
    reference = frame[frame["budget"].isna()]
    # rows of no compute level (external submissions: their compute is unknown) stand beside every level
    levelless = frame[frame["budget"].notna() & (frame["level"] == "—")]
    parts = []
    for level in level_names or [None]:
        at = frame[frame["budget"].notna()] if level is None else pd.concat([frame[frame["level"] == level], levelless])
        budgets = sorted(int(b) for b in at["budget"].dropna().unique())
        for budget in budgets or [None]:
            rows = reference if budget is None else pd.concat([reference, at[at["budget"] == budget]])
            where = [f"{budget:,} DReLUs"] if budget is not None else []
            if level is not None and len(level_names) > 1:
                where.insert(0, f"{level} per entry")
            part = [(f"### {' · '.join(where)}\n\n" if where else "") + table_text(rows, ranked, seeds, True, unranked)]
            part += [f"Secure cost under `{p}`:\n\n" + table_text(rows, profile_cols, seeds, False)
                     for p, profile_cols in by_profile.items()]
            parts.append("\n\n".join(part))
    return "\n\n".join(parts)


def compute_sentence(kinds: dict[str, str]) -> str:
    """Where each profile's compute seconds come from."""
    simulated = [f"`{p}`" for p, kind in kinds.items() if kind == "simulator"]
    deployed = [f"`{p}`" for p, kind in kinds.items() if kind == "deployment"]
    parts = []
    if simulated:
        parts.append(f"{', '.join(simulated)}: SPU's simulator on the machine that priced it, parties as threads of "
                     "one process — machine-dependent, not a deployment's (their bytes and each primitive's rounds "
                     "are SPU 0.9.5's implementation of the protocol, FM64 ring, as measured; where SPU runs a site's "
                     "branches one after the other, the rounds here are the protocol's and the JSON keeps SPU's "
                     "as `rounds_spu`)")
    if deployed:
        parts.append(f"{', '.join(deployed)}: the protocol's own implementation as its source measured it (its "
                     "JSON `latency_s` adds it to the network terms)")
    return "; ".join(parts) + "."


def coefficients_sentence(records: list[dict]) -> str:
    """How each profile priced polynomial coefficients, where any entry has a polynomial."""
    found: dict[str, str] = {}
    for r in records:
        for p, c in costs(r).items():
            if any(layer.get("poly_pixels") for layer in c.get("per_layer") or []):
                found[p] = c.get("coefficients", "secret")
    if not found:
        return ""
    return ("Polynomial coefficients (trained ones are model weights) priced " + ", ".join(
        f"{kind} under `{p}`" for p, kind in found.items()) + ": Delphi's own quadratic shows its coefficients "
            "to both parties (one product per pixel); secret ones cost two.")


def explanation_lines(frame: pd.DataFrame, profile_names: list[str], n_test: int | None,
                      kinds: dict[str, str]) -> list[str]:
    """What the columns mean, so that the table reads without the source code."""
    lines = ["- **The tables**: per compute level and budget, the entries ranked (**#**) by clean accuracy, the "
             "all-ReLU reference (**—**) above them, with one headline latency (the first profile's WAN); then per "
             "protocol profile its secure cost. **flags**: robustness flagged unreliable, CPU time far beyond what the "
             "entry's metered compute needs (**unmetered compute**), an external submission, "
             "fewer seeds than the board's, a dual-BN model's clean accuracy through its adversarial BNs "
             "(**adv-BN**). "
             "The HTML page has every column in one sortable table whose groups can be hidden.",
             "- **ReLUs** are the pixels whose output passes through a comparison-gated nonlinearity; **DReLUs** are "
             "the secure comparisons one image costs. They differ for patch ReLUs (knapsack: one DReLU gates a whole "
             "patch), so budgets are in DReLUs.",
             "- **Accuracies** are on the test split, read once after the weights were chosen on validation. "
             + (f"One test image is {100 / n_test:.2f} points. " if n_test else "")
             + "With one seed, ± is the 95% binomial (Wilson) interval on the images the accuracy was measured on; "
               "with several, ± is the sample standard deviation over seeds. Differences inside them are noise."]
    if "clean_accuracy_adv_bn" in frame.columns:
        lines.append("- **clean acc, adv BN** is a dual-BN model's (RLNet's) clean accuracy through its adversarial "
                     "BatchNorms, the path its PGD accuracy is measured on; the other accuracies use the clean BNs.")
    if profile_names:
        lines.append("- **MB** is the communication of one inference of one image, offline + online, summed over all "
                     "parties (the figure papers report); **rounds** are its one-way message latencies on the critical "
                     "path (online rounds add up; offline work runs side by side, so its rounds are its longest "
                     "call's; a site's ReLU and polynomial pixels are independent branches sent together, so it "
                     "takes the longer branch's rounds); **s** is the network latency per image on each network, "
                     "ranked and plotted: the busiest party's expected bytes / bandwidth + rounds · RTT / 2 (parties "
                     "send in parallel). **compute s** is local compute, apart and never in **s**: "
                     + compute_sentence({p: kinds.get(p, "simulator") for p in profile_names}))
        if any(c.startswith("setup_mb@") for c in frame.columns):
            lines.append("- **setup** is what a client session pays once (HE keys, base and silent OTs), before its "
                         "first inference and never again: it is in no per-image figure. **client storage** is what "
                         "the client keeps from one inference's offline phase for its online phase (Delphi's garbled "
                         "circuits).")
    if "asset_epochs" in frame.columns and frame["asset_epochs"].notna().any():
        paid = frame.dropna(subset=["asset_epochs"]).groupby("method")["asset_epochs"].max()
        lines.append("- **One-time teachers**, trained once per suite and used by one method's entries alone (not in "
                     "their **epochs**): " + "; ".join(f"{m} {e:,.1f} epochs" for m, e in paid.items()) + ".")
    lines.append("- **epochs** (compute used) is the entry's whole mask search and finetune in epochs of training-image "
                 "equivalents (a forward-only image counts a third), the unit the matched-compute budget is set in. "
                 "Wall time is in the JSON records; it depends on the machine and its load, so it is not ranked here.")
    return lines


def completeness_lines(meta: dict) -> list[str]:
    """Whether the board shows the whole suite: entries finished of those planned, and a run still writing."""
    done = meta.get("completeness") or {}
    planned, finished = done.get("planned"), done.get("finished")
    if not planned or (finished == planned and not done.get("in_use")):
        return []
    writing = " A run was writing to the run directory when this board was made." if done.get("in_use") else ""
    return [f"- **Incomplete:** {finished} of the {planned} entries the suite plans have finished; the rest are "
            f"missing from every table and claim.{writing}"]


def attack_lines(records: list[dict]) -> list[str]:
    """The PGD settings and the outcome of its two sanity checks over every entry."""
    attacked = [r for r in records if (r.get("metrics") or {}).get("pgd")]
    if not attacked:
        return []
    pgd = attacked[0]["metrics"]["pgd"]
    flagged = [r["entry"] for r in attacked if r["metrics"]["pgd"].get("gradient_masking_suspected")]
    checks = ("both sanity checks passed on every entry (adversarial ≤ clean accuracy; the full attack no weaker "
              "than a short one beyond noise)" if not flagged else
              f"a sanity check failed — gradient masking suspected — on {', '.join(flagged)}")
    return [f"- **PGD:** L∞, ε = {pgd['eps']:.4g}, step {pgd['step']:.4g}, {pgd['steps']} steps, "
            f"{'random start' if pgd['random_start'] else 'no random start'}, on the first {pgd['images']:,} test "
            f"images, in pixel space [0, 1] before normalisation, in eval mode; {checks}."]


def autoattack_lines(records: list[dict]) -> list[str]:
    """AutoAttack's settings, its rule for ``unreliable`` and the entries it flagged, with their reasons."""
    attacked = [r for r in records if (r.get("metrics") or {}).get("autoattack")]
    if not attacked:
        return []
    aa = attacked[0]["metrics"]["autoattack"]
    flagged = [f"`{r['entry']}` ({'; '.join(r['metrics']['autoattack']['unreliable_reasons'])})"
               for r in attacked if r["metrics"]["autoattack"].get("unreliable")]
    return [f"- **AutoAttack** ({aa['library']}, {aa['version']} version): {', '.join(aa['attacks'])}, L∞, "
            f"ε = {aa['eps']:.4g}, {aa['target_classes']} target classes, Square {aa['square_queries']:,} queries, on "
            f"the first {aa['images']:,} test images, each attack on what the earlier ones left. Marked "
            f"**{UNRELIABLE}**: {aa['rule']}. "
            + (f"Flagged: {', '.join(flagged)}." if flagged else "No entry was flagged.")]


def compute_line(compute: dict) -> str:
    if compute.get("paper"):
        return ("- **Protocol: paper recipes.** Every method runs its published recipe (epochs, schedules, images per "
                "probe, teacher) without a compute limit; the compute each entry used is in the table, in epochs "
                "of training-image equivalents. Read it beside the matched-compute suite.")
    values = lambda v: ", ".join(f"{x:g}" for x in v) if isinstance(v, list) else f"{v:g}"  # noqa: E731
    limits = "; ".join(f"{values(compute[k])} {unit}" for k, unit in (("epochs", "epochs"), ("seconds", "s"))
                       if compute.get(k) is not None)
    levels = any(isinstance(compute.get(k), list) and len(compute[k]) > 1 for k in ("epochs", "seconds"))
    split = compute.get("finetune_share")
    return ("- **Protocol: matched compute.** Every entry (mask search + finetune) gets the same budget"
            + (f", at each compute level: {limits}" if levels else f": {limits}") + "."
            + (f" The budget is split: the finetune gets exactly {split:.0%} of it and the mask search at most the "
               "rest (an entry may set its own split)." if split else "")
            + " Parts of a method's published recipe that did not fit are listed under *Cut to fit the budget*.")


def metering_line() -> str:
    return ("- **Compute is metered by the core**, the same rule for every method: every call of every convolution "
            "and linear layer of the student and of the entry's copies of the teacher counts its multiply-accumulates "
            "three times when its weights train (forward and both backwards), twice when only its input needs a "
            "gradient (an attack step), once otherwise (a teacher's distillation pass, a validation pass, a probe of "
            "the layers after a site), in training images of the student. The per-kind totals are in each record; "
            "the CPU time the kernel counted for each entry's process is read against what its metered compute "
            "needs on the machine, and a row beyond it is flagged **⚠ unmetered compute**.")


def protocol_lines(meta: dict, records: list[dict]) -> list[str]:
    suite, data, teacher = meta["suite"], meta.get("data", {}), meta.get("teacher", {})
    first = next((r for r in records if r.get("versions")), {})
    versions = first.get("versions", {})
    commit = first.get("source_commit", {})
    hardware = first.get("hardware", {})
    cost = suite["secure_cost"]
    teacher_text = (f"trained here ({suite['teacher']['recipe']['epochs']:g} epochs, seed {suite['teacher']['seed']})"
                    if suite["teacher"].get("recipe") else f"loaded from {suite['teacher']['checkpoint']}")
    lines = [
        f"- **Data:** {suite['dataset']['name']}: {data.get('train', '?')} train / {data.get('val', '?')} validation "
        f"(split seed {suite['dataset']['split_seed']}) / {data.get('test', '?')} test images. "
        "Checkpoints are selected on validation; test is read once, at the end, by a measuring process in "
        "which no plugin code ran (the only process that holds it).",
        f"- **Model:** {suite['model']['name']}; ReLU convention: "
        + ("every ReLU counted, the stem ReLU included (the knapsack/RLNet model)." if suite["model"]["stem_relu"]
           else "built without a stem ReLU, every ReLU counted (the SNL/AutoReP model)."),
        f"- **Teacher:** one all-ReLU teacher shared by every entry, {teacher_text}; "
        f"test accuracy {100 * teacher.get('clean_accuracy', float('nan')):.2f}%.",
        f"- **Budgets (DReLUs over counted sites):** {', '.join(f'{b:,}' for b in suite['budgets'])}.",
        compute_line(suite["compute"]),
        *([] if suite["compute"].get("paper") else [metering_line()]),
        f"- **Seeds:** {', '.join(map(str, meta['seeds']))}.",
    ]
    lines += completeness_lines(meta)
    lines += attack_lines(records)
    lines += autoattack_lines(records)
    corrupted = next((r["metrics"]["corruptions"] for r in records if (r.get("metrics") or {}).get("corruptions")), None)
    if corrupted:
        source = corrupted["source"] if isinstance(corrupted["source"], str) else "official and generated"
        grey = source == "generated" and (data.get("input_shape") or [3])[0] == 1
        lines.append(f"- **Corruptions:** {len(corrupted['per_corruption'])} CIFAR-C corruptions × severities "
                     f"{', '.join(map(str, corrupted['severities']))} on {corrupted['images']:,} test images, "
                     + ("generated, applied per channel to grayscale." if grey else f"{source}."))
    if cost["enabled"]:
        nets = "; ".join(f"{n} {v['bandwidth_mbps']:g} Mbit/s, RTT {v['rtt_ms']:g} ms" for n, v in cost["networks"].items())
        lines.append(f"- **Secure cost:** {', '.join(f'`{p}`' for p in profiles(records))} (one inference of one "
                     "image, whole network: linear and non-linear layers, offline + online; latency = the busiest "
                     f"party's bytes / bandwidth + rounds · RTT / 2, compute apart; setup apart); {nets}. "
                     + coefficients_sentence(records))
    # records made before the suite's precision existed ran bf16 autocast on CUDA only
    precision = hardware.get("precision", "bf16" if str(hardware.get("device", "")).startswith("cuda") else "fp32")
    lines.append(f"- **Hardware:** {hardware.get('gpu', hardware.get('device', '?'))}, "
                 f"{hardware.get('cpu_count', '?')} CPUs, {precision}"
                 f"{' autocast' if precision == 'bf16' else ''}; **versions:** "
                 + ", ".join(f"{k} {v}" for k, v in versions.items())
                 + f"; **commit:** {commit.get('commit') or 'unknown'}{' (dirty)' if commit.get('dirty') else ''}.")
    repriced = {(r["priced"]["source_commit"].get("commit") or "unknown", bool(r["priced"]["source_commit"].get("dirty")))
                for r in records if r.get("priced")}
    if repriced:
        lines.append("- **Prices made again** from the entries' checkpoints by `benchbed reprice` at commit "
                     + ", ".join(f"{c}{' (dirty)' if d else ''}" for c, d in sorted(repriced))
                     + f" ({sum(1 for r in records if r.get('priced'))} of {len(records)} records); the training is "
                       "the commit above's.")
    return lines


def grid_lines(cells: dict[tuple[str, int], dict[tuple[str, str], float]], titles: dict[str, str]) -> list[str]:
    """The mask × finetune section, one grid per (metric, budget)."""
    if not cells:
        return []
    order = list(titles)
    lines = ["## Mask × finetune", "",
             "Each method's mask (rows) trained by each method's finetune (columns), under the same compute budget; "
             "the diagonal is each method as published. Mean over seeds, %."]
    for metric, budget in sorted(cells, key=lambda k: (k[1], order.index(k[0]) if k[0] in order else len(order))):
        pairs = cells[(metric, budget)]
        # only the methods a composition involves: the rest of the grid would be empty off its diagonal
        composed = {(m, f) for m, f in pairs if m.removesuffix(" + DaPa") != f}
        involved = {m.removesuffix(" + DaPa") for m, _ in composed} | {f for _, f in composed}
        masks = sorted({m for m, _ in pairs if m.removesuffix(" + DaPa") in involved})
        finetunes = sorted({f for _, f in pairs if f in involved})
        body = [[m] + [f"{100 * pairs[(m, f)]:.2f}" if (m, f) in pairs else "—" for f in finetunes] for m in masks]
        lines += ["", f"**{titles.get(metric, metric)}, {budget:,} DReLUs**", "",
                  markdown_table(["mask ↓ / finetune →"] + finetunes, body)]
    return lines


def settings_text(meta: dict) -> str:
    suite = meta["suite"]
    compute = suite["compute"]
    values = lambda v: "/".join(f"{x:g}" for x in v) if isinstance(v, list) else f"{v:g}"  # noqa: E731
    budget = ("paper recipes" if compute.get("paper") else
              ", ".join(f"{values(compute[k])} {k}" for k in ("epochs", "seconds") if compute.get(k) is not None)
              + " per entry")
    return (f"{suite['dataset']['name']} · {suite['model']['name']} ({'with' if suite['model']['stem_relu'] else 'no'} "
            f"stem ReLU) · {budget} · seeds {', '.join(map(str, meta['seeds']))}")


def page(**context) -> str:
    """The leaderboard page in markdown (``templates/board.md.j2``)."""
    return TEMPLATES.get_template("board.md.j2").render(**context)
