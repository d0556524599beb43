"""benchbed: one protocol for the ReLU-linearization methods of private inference.

Commands: run, validate, plan, describe, plugins, leaderboard, publish, bench, secure-infer, calibrate, prices, reprice,
export, verify (``benchbed COMMAND -h``)."""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from tabulate import tabulate

from benchbed.config import EvaluationSettings
from benchbed.data.bundle import to_float
from benchbed.errors import BenchbedError, SuiteError
from benchbed.files import read_json, write_json
from benchbed.model.checkpoint import load_checkpoint, read_checkpoint
from benchbed.model.plain import ARRAYS, write_plain
from benchbed.preflight.bench import bench
from benchbed.plugin.manager import Plugins, plugin_manager
from benchbed.report.board import render
from benchbed.report.external import measure
from benchbed.submissions.describe import describe
from benchbed.preflight.dry import dry_run, phase_figures
from benchbed.preflight.forecast import forecast
from benchbed.run.progress import Reporter
from benchbed.run.reprice import reprice
from benchbed.run.rundir import RunDir
from benchbed.run.runner import SuiteRun
from benchbed.run.suite import load_suite, suite_entries, quick_evaluation
from benchbed.submissions.verify import external_result, split_claims, verdicts
from benchbed.secure.calibrate import calibrate, merged, polynomial_parts
from benchbed.secure.profiles import PROFILE_FILES
from benchbed.secure.measure import against_price, recorded_price, secure_inference
from benchbed.secure.published import comparison, linearized, markdown
from benchbed.secure.spu_runtime import DELAY_S, PROTOCOLS


def _dry_run(args: argparse.Namespace) -> int:
    plugins = Plugins(plugin_manager())
    rows = dry_run(load_suite(args.suite, plugins, need_data=False), plugins, log=lambda message: print(message, file=sys.stderr, flush=True))
    phase = lambda row, name: phase_figures(row["phases"][name]) if row["phases"].get(name) else "—"  # noqa: E731
    table = [[r["entry"], r["status"], phase(r, "build_mask"), phase(r, "finetune"), phase(r, "evaluate"),
              phase(r, "price"), phase({"phases": {"export": r.get("phases_export")}}, "export"),
              {True: "yes", False: "NO"}.get(r.get("export_agrees"), "—"),
              r["error"] or r.get("export_error", "")] for r in rows]
    print(tabulate(table, headers=["entry", "status", "mask search", "finetune", "evaluation", "price", "export",
                                   "JAX = torch", "error"], disable_numparse=True))
    print("each phase: seconds / the process's peak resident memory (own: the peak of its private memory, what it "
          "adds beside the run's process, whose data, teachers and freed pages it shares)")
    if args.json:
        write_json(Path(args.json), rows)
    failed = [r["entry"] for r in rows if r["status"] != "ok" or r.get("export_error") or r.get("export_agrees") is False]
    print(f"{len(rows) - len(failed)} of {len(rows)} entries ran every phase" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _run(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _dry_run(args)
    if args.quick_eval:
        loaded = quick_evaluation(load_suite(args.suite, Plugins(plugin_manager())), args.quick_eval)
        run = SuiteRun(loaded, out=args.out or Path("runs") / f"{loaded.suite.name}-quick", quiet=args.quiet)
    else:
        run = SuiteRun.from_file(args.suite, out=args.out, quiet=args.quiet)
    counts = run.run(executor=args.executor, address=args.address, workers=args.workers)
    board = render([run.rundir.path], run.rundir.path, stem="leaderboard")
    print(f"{counts['ok']} ok, {counts['error']} failed, {counts['over_budget']} over budget, "
          f"{counts['skipped']} already done; leaderboard: {board}")
    return 1 if counts["error"] else 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _validate(args: argparse.Namespace) -> int:
    plugins = Plugins(plugin_manager())
    suite = load_suite(args.suite, plugins).suite
    print(f"{args.suite}: valid — {count_entries(suite, plugins)}")
    return 0


def _plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else words or word + 's'}"


def count_entries(suite, plugins: Plugins) -> str:
    """How a suite's entries arise: budgeted methods × budgets, plus reference rows run once, × seeds."""
    budgeted = [m.name for m in suite.methods if plugins.get(m.name).info.budgeted]
    once = [m.name for m in suite.methods if m.name not in budgeted]
    parts = []
    levels = len(suite.compute.levels())
    if budgeted:
        parts.append(f"{_plural(len(budgeted), 'method')} × {_plural(len(suite.budgets), 'budget')}"
                     + (f" × {levels} compute levels" if levels > 1 else ""))
    if once:
        parts.append(f"{_plural(len(once), 'reference method')} without a budget ({', '.join(once)})")
    per_seed = "(" + " + ".join(parts) + ")" if len(parts) > 1 else parts[0]
    return f"{_plural(len(suite_entries(suite, plugins)), 'entry', 'entries')} = {per_seed} × {_plural(len(suite.seeds), 'seed')}"


def _describe(args: argparse.Namespace) -> int:
    print("\n".join(describe(args.suite)))
    return 0


def _plugins(args: argparse.Namespace) -> int:
    plugins = Plugins(plugin_manager())
    methods = plugins.all
    contributions = {
        "datasets": [{"name": d.name, "input_shape": list(d.input_shape), "classes": d.num_classes,
                      "description": d.description} for d in plugins.datasets.values()],
        "models": [{"name": m.name, "description": m.description} for m in plugins.models.values()],
        "cost_profiles": [{"name": p.name, "parties": p.parties, "description": p.description}
                          for p in plugins.cost_profiles.values()],
        "metrics": [{"name": m.name, "adversarial": m.adversarial, "description": m.description,
                                "settings": m.settings.model_json_schema()} for m in plugins.metrics.values()]}
    if args.json:
        print(json.dumps({"methods": [{"name": m.name, "package": m.package, "version": m.version, "hooks": list(m.hooks),
                                       "description": m.info.description, "paper": m.info.paper,
                                       "options": m.info.options.model_json_schema(),
                                       "defaults": m.info.options().model_dump(mode="json"),
                                       "paper_recipe": m.info.paper_recipe,
                                       "published": [asdict(p) for p in m.info.published],
                                       "claims": [asdict(c) for c in m.info.claims],
                                       "stated_setup": [asdict(c) for c in m.info.setup],
                                       "produces": sorted(m.info.produces), "accepts": sorted(m.info.accepts)}
                                      for m in methods.values()], **contributions}, indent=2))
        return 0
    print(tabulate([[m.name, m.package, m.version, ", ".join(m.hooks), m.info.description]
                    for m in methods.values()], headers=["method", "package", "version", "hooks", "description"]))
    for kind, rows in contributions.items():
        print(f"\n{kind.replace('_', ' ')}: " + ", ".join(row["name"] for row in rows))
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    print(render([Path(args.run_dir)], Path(args.run_dir), stem="leaderboard"))
    return 0


def _publish(args: argparse.Namespace) -> int:
    for run_dir in args.run_dirs:
        if (RunDir(run_dir).meta()["suite"].get("evaluation") or {}).get("quick_test_images"):
            raise BenchbedError(f"{run_dir} is a quick evaluation (`benchbed run --quick-eval`), for development; "
                                "run the suite without --quick-eval to publish it")
    path = render([Path(d) for d in args.run_dirs], Path(args.to), overwrite=args.overwrite,
                  external=[Path(f) for f in args.external])
    print(f"published {path} (and its .json, .png, .html) from {len(args.run_dirs)} run "
          f"{'directory' if len(args.run_dirs) == 1 else 'directories'}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    on_gpu = torch.cuda.is_available()
    plugins = Plugins(plugin_manager())
    # Defaults that finish in seconds on a CPU; the CIFAR ResNet-18 on a GPU.
    model = args.model or ("resnet18_cifar" if on_gpu else "resnet_narrow")
    dataset = args.dataset or ("cifar100" if on_gpu else "digits")
    steps = args.steps or (20 if on_gpu else 5)
    spec = plugins.datasets[dataset]
    print(f"bench: {model} on {dataset}-shaped synthetic data, batch {args.batch_size}, {steps} steps per measurement",
          file=sys.stderr)
    result = bench(plugins.models, model, spec.input_shape, spec.num_classes, batch_size=args.batch_size, steps=steps,
                   kinds=tuple(args.sites.split(",")), compile_model=args.compile, repeats=args.repeats,
                   infer_batch_size=args.infer_batch_size, min_seconds=args.min_seconds,
                   precision_choice=args.precision, log=lambda message: print(f"bench: {message}", file=sys.stderr, flush=True))
    rows = [[kind, f"{r['harness_train_images_per_s']:,.0f}", f"{r['reference_train_images_per_s']:,.0f}",
             f"{r['train_speedup']:.2f}x", f"{r['fraction_of_conv_limit']:.0%}", f"{r['harness_infer_images_per_s']:,.0f}",
             f"{r['reference_infer_images_per_s']:,.0f}", f"{r['infer_speedup']:.2f}x"] for kind, r in result["sites"].items()]
    print(f"{result['model']} on {result['gpu'] or result['device']} ({result['threads']} threads, "
          f"{result['precision']}), batch {result['batch_size']} (inference {result['infer_batch_size']}); "
          f"conv-only limit {result['conv_only_train_images_per_s']:,.0f} train images/s")
    print(tabulate(rows, headers=["sites", "train img/s", "reference", "speedup", "of conv limit",
                                  "infer img/s", "reference", "speedup"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _hours(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 3600:,.2f}"


def _plan(args: argparse.Namespace) -> int:
    plugins = Plugins(plugin_manager())
    loaded = load_suite(args.suite, plugins)
    bench_file = read_json(Path(args.bench)) if args.bench else None
    planned = forecast(loaded, plugins, bench_file)
    images, memory, total = planned["images"], planned["memory"], planned["total"]
    print(f"{planned['suite']}: {planned['entries']:,} entries of {planned['model']} on {planned['dataset']} "
          f"({images['train']:,} train / {images['val']:,} val / {images['test']:,} test images; "
          f"{planned['forward_macs'] / 1e6:,.1f} M multiply-accumulates a forward, {planned['relus']:,} ReLUs, "
          f"{planned['parameters'] / 1e6:,.2f} M parameters)")
    rows = [[t["variant"] + " teacher", 1, "—", f"{t['equivalents'] / images['train']:,.1f}", "—",
             f"{t['pflops']:,.2f}", _hours(t["seconds"]), _hours(t["seconds"])] for t in planned["teachers"]]
    rows += [[g["method"], g["entries"], g["level"], f"{g['training_equivalents_per_entry'] / images['train']:,.2f}",
              f"{g['evaluation_equivalents_per_entry'] / images['train']:,.2f}", f"{g['pflops_per_entry']:,.2f}",
              _hours(g["seconds_per_entry"]), _hours(g["seconds"])] for g in planned["groups"]]
    print(tabulate(rows, headers=["entries of", "n", "compute level", "train epochs/entry", "eval epochs/entry",
                                  "PFLOP/entry", "h/entry", "h in all"], disable_numparse=True))
    where = (f"on {planned['bench']['gpu'] or planned['bench']['device']} (bench: batch {planned['bench']['batch_size']}, "
             f"torch {planned['bench']['torch']}{', compiled' if planned['bench']['compiled'] else ''})"
             if planned["bench"] else "(pass --bench FILE from `benchbed bench --json` on the device for hours)")
    print(f"grid: {total['epochs']:,.0f} epochs of training-image equivalents, {total['pflops']:,.1f} PFLOP, "
          f"{_hours(total['hours'] * 3600 if total['hours'] is not None else None)} h {where}")
    print(f"peak memory ≈ {memory['peak_mb']:,.0f} MB: data {memory['data_mb']:,.0f}, model with optimiser "
          f"{memory['model_mb']:,.0f}, teacher copies {memory['teacher_copies_mb']:,.0f}, activations at batch "
          f"{memory['batch']} {memory['activations_mb']:,.0f}, per-pixel state {memory['per_pixel_state_mb']:,.0f}")
    print(f"note: {planned['note']}; evaluation per entry is the metrics' upper bound (AutoAttack attacks only "
          "what survives)")
    if args.json:
        write_json(Path(args.json), planned)
    return 0


def _secure_infer(args: argparse.Namespace) -> int:
    if args.images < 1 or args.batch_size < 1 or args.delay_ms <= 0:
        raise BenchbedError("--images and --batch-size must be at least 1, --delay-ms above 0")
    plugins = Plugins(plugin_manager())
    run_dir, entry = RunDir.of_entry(args.entry)
    predicted = recorded_price(run_dir.record(entry), args.protocol)
    spec = run_dir.meta()["suite"]["dataset"]
    data = plugins.datasets.load(spec["name"], spec["root"], spec["download"], spec["val_fraction"], spec["split_seed"])
    model = load_checkpoint(run_dir.checkpoint_path(entry), plugins.models).eval()
    measured = secure_inference(model, to_float(data.test_x[:args.images]), batch_size=args.batch_size,
                                protocol_name=args.protocol, delay_s=args.delay_ms / 1e3,
                                log=lambda message: print(f"secure-infer: {message}", file=sys.stderr, flush=True))
    result = against_price(entry, measured, predicted)
    result["path"] = str(run_dir.measurement_path(entry, args.protocol))
    run_dir.write_measurement(entry, args.protocol, result)
    m, checks = result["measured"], result["checks"]
    scale = {"bytes per image": 1e-6, "busiest party bytes per image": 1e-6, "setup bytes": 1e-6}
    rows = [[name.replace("bytes", "MB") if name in scale else name,
             f"{c['predicted'] * scale.get(name, 1):.4g}", f"{c['measured'] * scale.get(name, 1):.4g}",
             f"{c['ratio']:.3f}", {True: "yes", False: "NO", None: "(reported)"}[c["agree"]]] for name, c in checks.items()]
    print(tabulate(rows, headers=[entry, f"recorded price ({args.protocol})", f"SPU {args.protocol} (measured)",
                                  "measured / price", "agree"]))
    print(f"per inference = offline + online (SPU runs them as one); setup = a session's first run less its second. "
          f"Agreement with the plaintext model on {m['images']} images: top-1 {m['top1_agreement']:.1%}, "
          f"max logit error {m['max_logit_error']:.2e}; written to {result['path']}")
    return 0 if result["agree"] else 1


def _reprice(args: argparse.Namespace) -> int:
    counts = reprice(RunDir(args.run_dir), Plugins(plugin_manager()),
                     log=lambda message: print(f"reprice: {message}", file=sys.stderr, flush=True))
    print(f"repriced {counts['repriced']} finished entries of {args.run_dir}"
          + (f"; {counts['skipped']} left as they were (see above)" if counts["skipped"] else "")
          + "; `benchbed leaderboard` or `publish` shows the new prices")
    return 1 if counts["skipped"] else 0


def _export(args: argparse.Namespace) -> int:
    run_dir, entry = RunDir.of_entry(args.entry)
    manifest = write_plain(read_checkpoint(run_dir.checked_checkpoint(entry)).payload, Path(args.out))
    print(f"wrote {manifest} and its {ARRAYS}: {entry}'s model in the plain format")
    return 0


def _verify(args: argparse.Namespace) -> int:
    plugins = Plugins(plugin_manager())
    loaded = load_suite(args.suite, plugins)
    try:
        given = read_json(Path(args.claims)) if args.claims else {}
    except ValueError as exc:
        raise BenchbedError(f"{args.claims} is not JSON ({exc}); write the claimed figures as a JSON object") from None
    if not isinstance(given, dict):
        raise BenchbedError(f"{args.claims} must hold a JSON object of claimed figures")
    claims, _ = split_claims(given)
    reporter = Reporter(quiet=True)  # the evaluation takes minutes: say where it stands, on stderr
    figures = measure(Path(args.submission), loaded, plugins, claims, progress=reporter.progress, log=reporter.log)
    found_verdicts = verdicts(claims, figures)
    if args.json:
        write_json(Path(args.json), external_result(Path(args.submission), loaded, given, figures, found_verdicts))
    if not claims:
        for figure, value in figures.items():
            print(f"{figure}: {value:.6g}")
        return 0
    for verdict in found_verdicts:
        print(verdict.line())
    failed = [v.figure for v in found_verdicts if not v.holds]
    print(f"{len(found_verdicts) - len(failed)} of {len(found_verdicts)} claims hold"
          + (f"; these do not: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _prices(args: argparse.Namespace) -> int:
    profiles = Plugins(plugin_manager()).cost_profiles
    rows, linear = comparison(profiles), linearized(profiles)
    print(markdown(rows, linear), end="")
    if args.json:
        write_json(Path(args.json), {"published": rows, "linearized": linear})
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else PROFILE_FILES[args.protocol]
    if args.only == "polynomials":
        if not output.exists():
            raise BenchbedError(f"--only polynomials updates a calibrated profile, and {output} does not exist; "
                                f"run `benchbed calibrate --protocol {args.protocol}` first")
        profile = merged(read_json(output), polynomial_parts(args.protocol), datetime.date.today().isoformat())
        write_json(output, profile)
        print(f"updated the polynomial prices of {output}")
        return 0
    profile = calibrate(protocol_name=args.protocol, quick=args.quick)
    write_json(output, profile)
    print(f"wrote {output}")
    failed = [name for name, ok in profile["checks"].items() if not ok]
    if failed:
        print(f"warning: consistency checks failed: {', '.join(failed)}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchbed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a suite (resumes an earlier run in the same directory)")
    run.add_argument("suite")
    run.add_argument("--out", help="run directory (default runs/<suite name>)")
    run.add_argument("--quiet", action="store_true", help="plain log lines, no progress bars")
    run.add_argument("--workers", type=_positive_int, help="entries side by side on the local executor, each in a "
                                                        "process of its own (default: one per CPU core; one on a GPU)")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="run entries in this process, or as Ray tasks (pip install 'benchbed[ray]')")
    run.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    run.add_argument("--quick-eval", type=_positive_int, metavar="N",
                     help="for a plugin's development loop: evaluate clean accuracy on the first N test images, no "
                          "robustness metric, into runs/<suite>-quick; such a run can never be published")
    run.add_argument("--dry-run", action="store_true", help="every entry's code path for a few steps at the real "
                                                            "shapes (synthetic data when the dataset is absent): time "
                                                            "and peak memory per phase; nothing is recorded")
    run.add_argument("--json", help="with --dry-run: also write its rows to this file")
    run.set_defaults(func=_run)
    val = sub.add_parser("validate", help="check a suite file without running it")
    val.add_argument("suite")
    val.set_defaults(func=_validate)
    desc = sub.add_parser("describe", help="the model a suite measures (its sites: name, shape, ReLUs) and its "
                                           "splits' rule: what a lab that trains elsewhere needs")
    desc.add_argument("suite")
    desc.set_defaults(func=_describe)
    plug = sub.add_parser("plugins", help="list installed methods")
    plug.add_argument("--json", action="store_true")
    plug.set_defaults(func=_plugins)
    board = sub.add_parser("leaderboard", help="re-render a run directory's leaderboard")
    board.add_argument("run_dir")
    board.set_defaults(func=_leaderboard)
    pub = sub.add_parser("publish", help="merge runs of one suite (seeds) into LEADERBOARDS/<suite>.{md,json,png,html}")
    pub.add_argument("run_dirs", nargs="+")
    pub.add_argument("--to", default="leaderboards", help="folder to write into (default: leaderboards)")
    pub.add_argument("--overwrite", action="store_true", help="replace a leaderboard of the same suite already there")
    pub.add_argument("--external", action="append", default=[], metavar="RESULT",
                     help="a verified result (`benchbed verify --claims C --json RESULT`) to show as an external row; "
                          "repeat for several")
    pub.set_defaults(func=_publish)
    ben = sub.add_parser("bench", help="training/inference throughput: harness vs a plain loop vs conv-only limit")
    ben.add_argument("--model", help="default: resnet18_cifar on a GPU, resnet_narrow on a CPU")
    ben.add_argument("--dataset", help="input shape and classes of this dataset (data is synthetic); "
                                       "default: cifar100 on a GPU, digits on a CPU")
    ben.add_argument("--batch-size", type=int, default=256, help="training batch")
    ben.add_argument("--infer-batch-size", type=int, default=EvaluationSettings().batch_size,
                     help="inference batch (default: an evaluation's); at least this many images are inferred")
    ben.add_argument("--steps", type=int, help="batches per measurement (default: 20 on a GPU, 5 on a CPU)")
    ben.add_argument("--sites", default=",".join(("relu", "masked", "polynomial", "patch")))
    ben.add_argument("--compile", action="store_true", help="torch.compile the harness model")
    ben.add_argument("--precision", choices=("auto", "native", "fp32", "bf16"), default="auto",
                     help="the harness's precision, as a suite's `precision` (the reference is always fp32)")
    ben.add_argument("--repeats", type=int, default=3, help="at least this many timed rounds; each img/s is the "
                                                            "best round, each speedup the median of paired rounds")
    ben.add_argument("--min-seconds", type=float, default=1.0,
                     help="and more rounds until every loop has run this long in all")
    ben.add_argument("--json", help="also write the figures to this file")
    ben.set_defaults(func=_bench)
    pla = sub.add_parser("plan", help="a suite's compute (training-image equivalents, FLOPs), evaluation cost, "
                                      "peak memory and, from a bench file, its hours on that device")
    pla.add_argument("suite")
    pla.add_argument("--bench", help="a `benchbed bench --json` file measured on the device that will run the suite")
    pla.add_argument("--json", help="also write the plan to this file")
    pla.set_defaults(func=_plan)
    sec = sub.add_parser("secure-infer", help="run a finished entry in SPU's simulator (ABY3 3PC or Cheetah 2PC) "
                                              "and measure it against its recorded price")
    sec.add_argument("entry", help="RUN_DIR/ENTRY, e.g. runs/smoke/snl__256__s0")
    sec.add_argument("--images", type=int, default=8)
    sec.add_argument("--batch-size", type=int, default=1)
    sec.add_argument("--protocol", choices=sorted(PROTOCOLS), default="aby3")
    sec.add_argument("--delay-ms", type=float, default=DELAY_S * 1e3,
                     help="one-way delay of the links rounds are measured on (default %(default)g)")
    sec.set_defaults(func=_secure_infer)
    cal = sub.add_parser("calibrate", help="measure a protocol profile's per-operation costs in SPU's simulator")
    cal.add_argument("--protocol", choices=sorted(PROTOCOLS), default="aby3")
    cal.add_argument("--output", help="where to write the profile JSON (default: the packaged profile)")
    cal.add_argument("--quick", action="store_true", help="fewer timing repeats and sizes")
    cal.add_argument("--only", choices=["polynomials"],
                     help="re-measure only this part of the profile (polynomials: secret and public coefficients, "
                          "calls of every size, Cheetah's triple batches) and keep the rest")
    cal.set_defaults(func=_calibrate)
    rep = sub.add_parser("reprice", help="price a finished run's entries again from their checkpoints, with this "
                                         "checkout's cost model and profiles (no training, no plugin code)")
    rep.add_argument("run_dir", help="a run directory, e.g. runs/fmnist")
    rep.set_defaults(func=_reprice)
    exp = sub.add_parser("export", help="write a finished entry's model in the plain format (manifest.json + "
                                        "arrays.npz) for another engine or for `benchbed verify`")
    exp.add_argument("entry", help="RUN_DIR/ENTRY, e.g. runs/smoke/snl__256__s0")
    exp.add_argument("--format", choices=["plain"], default="plain")
    exp.add_argument("--out", required=True, help="folder to write")
    exp.set_defaults(func=_export)
    ver = sub.add_parser("verify", help="check a linearized model trained anywhere (plain folder or benchbed "
                                        "checkpoint) against its claimed figures under a suite; exit 1 when one fails")
    ver.add_argument("submission", help="a plain folder (manifest.json + arrays.npz) or a benchbed checkpoint")
    ver.add_argument("--suite", required=True, help="the suite whose data, evaluation and profiles to use")
    ver.add_argument("--claims", help="JSON object of claimed figures (budget, relus, drelus, clean_accuracy, "
                                      "comm_mb@aby3, ...); without it, the measured figures are printed")
    ver.add_argument("--json", help="also write the verified result (claims, measured figures, verdicts) to this "
                                    "file: what `benchbed publish --external` shows as an external row")
    ver.set_defaults(func=_verify)
    pri = sub.add_parser("prices", help="benchbed's prices beside the published figures of Delphi, Cheetah and "
                                        "CrypTFlow2 at their scale, and SNL's ResNet-18 masks under every profile")
    pri.add_argument("--json", help="also write the rows to this file")
    pri.set_defaults(func=_prices)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except SuiteError as exc:
        for problem in exc.problems:
            print(f"{exc.path}: {problem}", file=sys.stderr)
        return 2
    except BenchbedError as exc:
        print(f"benchbed: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder: say which file, keep what was finished
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"benchbed: error: {exc.strerror or exc}{where}; finished entries are kept, free space or pick "
              "another --out and run again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("benchbed: interrupted; finished entries are kept, run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
