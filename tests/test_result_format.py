"""The versioned result format, the model zoo and external rows: every record and leaderboard validates
against its JSON Schema (the published ones included), a board carries the hash of its records and
where each checkpoint lies, ``benchbed.load_model`` returns the same model from a run, a board and a
URL, and a model verified elsewhere reaches a board only as a marked external row."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import pytest
import torch

import benchbed
from benchbed import schemas
from benchbed.cli import main
from benchbed.errors import BenchbedError
from benchbed.files import read_json
from benchbed.run.rundir import RunDir
from conftest import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
METHODS = [{"name": "all_relu"}, {"name": "random_mask", "options": {"finetune": {"batch_size": 64}}}]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import yaml

    from benchbed.run.runner import SuiteRun
    from conftest import TINY_SUITE, _merge

    root = tmp_path_factory.mktemp("format")
    suite = root / "tiny.yaml"
    suite.write_text(yaml.safe_dump(_merge(TINY_SUITE, {"methods": METHODS, "budgets": [64],
                                                        "secure_cost": {"profiles": ["aby3"]}})))
    SuiteRun.from_file(suite, out=root / "run", quiet=True).run()
    return root, suite, root / "run"


@pytest.mark.parametrize("board", sorted((ROOT / "leaderboards").glob("*.json")), ids=lambda p: p.stem)
def test_every_published_leaderboard_validates(board):
    version = read_json(board)["schema_version"]
    assert schemas.problems(read_json(board), "leaderboard" if version == 2 else "leaderboard.v1") == []
    assert benchbed.read_leaderboard(board)["rows"], "and reads back as version 2"


def test_records_and_board_validate_and_carry_their_hashes(run):
    root, _, run_dir = run
    records = RunDir(run_dir).records()
    assert records and all(r["schema_version"] == schemas.ENTRY_VERSION for r in records)
    for r in records:
        assert schemas.problems(r, "entry") == []
    assert main(["publish", str(run_dir), "--to", str(root / "boards")]) == 0
    board = read_json(root / "boards" / "tiny.json")
    assert schemas.problems(board, "leaderboard") == []
    assert board["records_sha256"] == schemas.records_sha256(records)
    for item in board["entries"]:  # every checkpoint, where the board says, with the bytes it says
        file = (root / "boards" / item["checkpoint"]["path"]).resolve()
        assert file == (run_dir / "entries" / f"{item['entry']}.pt").resolve()
        assert hashlib.sha256(file.read_bytes()).hexdigest() == item["checkpoint"]["sha256"]


def test_a_record_off_the_format_is_refused_with_its_field():
    bad = {"schema_version": 1, "entry": "x__1__s0", "suite": "s", "fingerprint": "f", "method": "m", "label": "m",
           "budget": 1, "seed": 0, "status": "ok", "started": "now", "compute": {"used": {"epochs": 1.0}},
           "relus": 1, "drelus": 1, "checkpoint": "x.pt", "checkpoint_sha256": "0" * 64,
           "metrics": {"clean_accuracy": 1.7, "columns": {}}}
    assert schemas.problems(bad, "entry") == ["metrics/clean_accuracy: 1.7 is greater than the maximum of 1"]
    with pytest.raises(BenchbedError, match="metrics/clean_accuracy"):
        schemas.check(bad, "entry", "x.json")


def test_load_model_from_a_run_a_board_and_a_url(run, tmp_path, monkeypatch):
    root, _, run_dir = run
    main(["publish", str(run_dir), "--to", str(root / "boards"), "--overwrite"])
    monkeypatch.setenv("BENCHBED_CACHE", str(tmp_path / "cache"))
    entry = "random_mask__64__s0"
    expected = load_checkpoint(run_dir / "entries" / f"{entry}.pt")
    x = torch.rand(4, 1, 8, 8)
    board = root / "boards" / "tiny.json"
    with _served(root) as address:  # the download path, over a real HTTP server on this machine
        url = f"{address}/boards/tiny.json"
        for source in (run_dir, board, board.as_uri(), url):
            model = benchbed.load_model(source, entry)
            assert not model.training
            assert torch.equal(model(x), expected.eval()(x))
        cached = list((tmp_path / "cache" / "models").iterdir())
        sha = next(e["checkpoint"]["sha256"] for e in read_json(board)["entries"] if e["entry"] == entry)
        assert [p.name for p in cached] == [f"{sha}.pt"], "only the download is cached; a file:// board is read in place"
        cached[0].write_bytes(b"tampered")  # a damaged cache is fetched again, never trusted
        assert torch.equal(benchbed.load_model(url, entry)(x), expected(x))
    with pytest.raises(BenchbedError, match="lists no entry 'snl__64__s0'"):
        benchbed.load_model(board, "snl__64__s0")
    # a plain-format folder, as `benchbed export` writes it and an outside lab submits it
    assert main(["export", str(run_dir / entry), "--format", "plain", "--out", str(tmp_path / "plain")]) == 0
    assert torch.equal(benchbed.load_model(tmp_path / "plain")(x), expected.eval()(x))
    with pytest.raises(BenchbedError, match="name the entry to load"):
        benchbed.load_model(run_dir)


@contextlib.contextmanager
def _served(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_load_model_refuses_what_is_no_board_in_one_line(tmp_path):
    fifo = tmp_path / "board.json"
    os.mkfifo(fifo)  # reading it would wait forever: it is never opened
    for source in (fifo, fifo.as_uri()):
        with pytest.raises(BenchbedError, match="no run directory, leaderboard JSON or URL"):
            benchbed.load_model(source, "x__1__s0")
    cases = {"binary.json": b"\x89PNG\r\n", "list.json": b"[1, 2]", "items.json": b'{"entries": [1, "x"]}',
             "checkpoint.json": b'{"entries": [{"entry": "x__1__s0", "checkpoint": "x.pt"}]}',
             "elsewhere.json": b'{"entries": [{"entry": "x__1__s0", "checkpoint": {"path": "none.pt", "sha256": "0"}}]}'}
    for name, body in cases.items():
        (tmp_path / name).write_bytes(body)
        with pytest.raises(BenchbedError):
            benchbed.load_model(tmp_path / name, "x__1__s0")


def test_a_swapped_checkpoint_is_refused(run, tmp_path):
    import shutil

    _, _, run_dir = run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    board_dir = tmp_path / "boards"
    main(["publish", str(copy), "--to", str(board_dir)])
    (copy / "entries" / "random_mask__64__s0.pt").write_bytes((copy / "entries" / "all_relu__all__s0.pt").read_bytes())
    with pytest.raises(BenchbedError, match="not the checkpoint"):
        benchbed.load_model(board_dir / "tiny.json", "random_mask__64__s0")


def _verified(run, tmp_path, capsys, claims: dict) -> tuple[int, Path]:
    _, suite, run_dir = run
    plain = tmp_path / "submission"
    if not plain.exists():
        assert main(["export", str(run_dir / "random_mask__64__s0"), "--format", "plain", "--out", str(plain)]) == 0
    path, result = tmp_path / "claims.json", tmp_path / "result.json"
    path.write_text(json.dumps(claims))
    code = main(["verify", str(plain), "--suite", str(suite), "--claims", str(path), "--json", str(result)])
    capsys.readouterr()
    return code, result


def test_submission_flow_export_verify_publish_as_external(run, tmp_path, capsys):
    root, _, run_dir = run
    record = RunDir(run_dir).record("random_mask__64__s0")
    figures = {"budget": 64, "drelus": record["drelus"], "clean_accuracy": record["metrics"]["clean_accuracy"],
               "comm_mb@aby3": record["secure_cost"]["aby3"]["comm_mb"]}
    source = {"paper": "https://example.org/paper", "code": "https://example.org/code"}
    code, result = _verified(run, tmp_path, capsys, {"name": "Lab X mask", "source": source, **figures})
    assert code == 0
    verified = read_json(result)
    assert schemas.problems(verified, "external") == [] and verified["holds"]
    assert verified["measured"]["clean_accuracy"] == pytest.approx(figures["clean_accuracy"])

    out = tmp_path / "boards"
    assert main(["publish", str(run_dir), "--to", str(out), "--external", str(result)]) == 0
    md = (out / "tiny.md").read_text()
    assert md.startswith("# Leaderboard: tiny")
    row = next(line for line in md.splitlines() if "| Lab X mask (external) |" in line)
    assert row.rstrip(" |").endswith("external") and row.split("|")[3].strip() == "64", "ranked, flagged, its DReLUs"
    assert "## External submissions" in md and "https://example.org/code" in md
    board = read_json(out / "tiny.json")
    assert schemas.problems(board, "leaderboard") == []
    external = [r for r in board["rows"] if r["external"]]
    assert len(external) == 1 and external[0]["label"] == "Lab X mask (external)"
    assert "epochs_used" not in external[0].get("compute", {}), "its compute is unknown"
    assert sum(not r["external"] for r in board["rows"]) == 2, "the suite's own rows, unchanged"
    assert board["external"][0]["name"] == "Lab X mask"
    assert all(e["method"] != "external" for e in board["entries"])
    # the board says where the submission lies: the external row loads back, checked against its hash
    assert board["external"][0]["submission"]["sha256"] == verified["submission_sha256"]
    theirs, ours = benchbed.load_model(out / "tiny.json", "Lab X mask"), benchbed.load_model(run_dir, "random_mask__64__s0")
    assert all(torch.equal(a, b) for a, b in zip(theirs.state_dict().values(), ours.state_dict().values()))

    # refused: a claim that does not hold, no source, another suite's protocol
    code, failing = _verified(run, tmp_path, capsys, {"name": "n", "source": source, **figures,
                                                      "clean_accuracy": figures["clean_accuracy"] + 0.05})
    assert code == 1
    assert main(["publish", str(run_dir), "--to", str(out), "--overwrite", "--external", str(failing)]) == 2
    assert "these do not hold: clean_accuracy" in capsys.readouterr().err
    code, unsourced = _verified(run, tmp_path, capsys, {"name": "n", **figures})
    assert code == 0
    assert main(["publish", str(run_dir), "--to", str(out), "--overwrite", "--external", str(unsourced)]) == 2
    assert "names no source" in capsys.readouterr().err
    moved = read_json(result)
    moved["protocol_sha256"] = "1" * 64
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    assert main(["publish", str(run_dir), "--to", str(out), "--overwrite", "--external", str(tmp_path / "moved.json")]) == 2
    assert "another suite configuration" in capsys.readouterr().err

    # refused: a result edited after verify wrote it, in any field its verdicts depend on
    drelus = verified["measured"]["drelus"]
    edits = {"measured": lambda r: r["measured"].update(clean_accuracy=0.999),
             "drelus": lambda r: r["measured"].update(drelus=0),
             "holds": lambda r: (r["verdicts"][0].update(holds=False), r.update(holds=True)),
             "verdicts": lambda r: r.update(verdicts=[]),
             "budget": lambda r: (r.update(budget=0), r["claims"].update(budget=0)),
             "over budget": lambda r: r["measured"].update(drelus=drelus + 1)}
    for what, edit in edits.items():
        edited = read_json(result)
        edit(edited)
        (tmp_path / "edited.json").write_text(json.dumps(edited))
        assert main(["publish", str(run_dir), "--to", str(out), "--overwrite", "--external",
                     str(tmp_path / "edited.json")]) == 2, what
        assert "disagrees with itself" in capsys.readouterr().err, what

    # refused: a result edited consistently (claims, measured figures and verdicts agree with each other),
    # a submission changed since it was verified, and one whose result does not say where it lies
    forged = json.loads(json.dumps(verified))  # the first, good result: `result` now holds the last one verified
    forged["claims"]["clean_accuracy"] = forged["measured"]["clean_accuracy"] = 0.999
    forged["verdicts"] = [{**v, "claimed": 0.999, "measured": 0.999} if v["figure"] == "clean_accuracy" else v
                          for v in forged["verdicts"]]
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    assert main(["publish", str(run_dir), "--to", str(out), "--overwrite", "--external", str(tmp_path / "forged.json")]) == 2
    assert "not what its submission measures now (clean_accuracy)" in capsys.readouterr().err
    unplaced = {k: v for k, v in verified.items() if k != "submission_path"}
    (tmp_path / "unplaced.json").write_text(json.dumps(unplaced))
    assert main(["publish", str(run_dir), "--to", str(out), "--overwrite", "--external", str(tmp_path / "unplaced.json")]) == 2
    assert "does not say where its submission lies" in capsys.readouterr().err
    arrays = tmp_path / "submission" / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes() + b"\0")
    (tmp_path / "good.json").write_text(json.dumps(verified))
    assert main(["publish", str(run_dir), "--to", str(out), "--overwrite", "--external", str(tmp_path / "good.json")]) == 2
    assert "sha256 mismatch" in capsys.readouterr().err


def test_a_version_1_board_is_still_read():
    flat = read_json(ROOT / "tests" / "data" / "leaderboard_v1.json")
    board = benchbed.read_leaderboard(ROOT / "tests" / "data" / "leaderboard_v1.json")
    assert board["schema_version"] == 2 and board["upgraded_from"] == 1
    old, new = flat["rows"][1], board["rows"][1]
    assert new["label"] == old["label"] and new["budget"] == old["budget"]
    assert new["metrics"]["clean_accuracy"] == {"mean": old["clean_accuracy"], "ci95": old["clean_accuracy_ci"],
                                                "images": int(old["n:clean_accuracy"])}
    assert new["secure_cost"]["aby3"]["latency_s"]["WAN"]["mean"] == old["latency_WAN@aby3"]
    assert new["secure_cost"]["cheetah"]["setup"]["mb"]["mean"] == old["setup_mb@cheetah"]
    assert new["counts"]["relus"]["mean"] == old["relus"] != new["counts"]["drelus"]["mean"], "knapsack's patches"


def test_a_board_of_an_unknown_version_is_refused_in_one_line(tmp_path):
    board = read_json(ROOT / "tests" / "data" / "leaderboard_v1.json")
    (tmp_path / "b.json").write_text(json.dumps({**board, "schema_version": 7}))
    with pytest.raises(BenchbedError, match="schema version 7; this benchbed reads versions 1 and 2"):
        benchbed.read_leaderboard(tmp_path / "b.json")
