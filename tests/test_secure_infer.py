"""``benchbed secure-infer`` on a finished run: the measurement sits next to the entries, not among
them, so the run still renders its leaderboard, publishes and resumes."""
from __future__ import annotations

import pytest

pytest.importorskip("spu")

from benchbed.cli import main  # noqa: E402
from benchbed.errors import BenchbedError  # noqa: E402
from benchbed.files import read_json  # noqa: E402
from benchbed.report.board import render  # noqa: E402
from benchbed.run.rundir import RunDir  # noqa: E402
from benchbed.run.runner import SuiteRun  # noqa: E402
from benchbed.secure.measure import recorded_price  # noqa: E402
from conftest import entry_records  # noqa: E402


def secure_infer(target: str, images: int, protocol_name: str = "aby3", delay_ms: int = 50) -> dict:
    """``benchbed secure-infer`` on ``target``, and the measurement it wrote."""
    assert main(["secure-infer", target, "--images", str(images), "--protocol", protocol_name,
                 "--delay-ms", str(delay_ms)]) == 0
    run_dir, entry = RunDir.of_entry(target)
    return read_json(run_dir.measurement_path(entry, protocol_name))


def test_a_measured_run_still_renders_and_resumes(write_suite, tmp_path):
    suite = write_suite(methods=[{"name": "all_relu"}], budgets=[64], secure_cost={"profiles": ["aby3", "cheetah"]})
    run_dir = tmp_path / "run"
    SuiteRun.from_file(suite, out=run_dir, quiet=True).run()
    (entry,) = entry_records(run_dir)
    assert set(entry["secure_cost"]) == {"aby3", "cheetah"}, "priced under every profile of the suite"
    result = secure_infer(str(run_dir / entry["entry"]), images=2)

    path = run_dir / "secure_infer" / f"{entry['entry']}.aby3.json"
    assert read_json(path) == result
    assert sorted(p.name for p in (run_dir / "entries").glob("*.json")) == [f"{entry['entry']}.json"]
    # the comparison is with the price recorded in the entry, not a fresh one
    assert result["predicted"]["comm_mb"] == recorded_price(entry, "aby3")["comm_mb"]
    assert result["agree"] and set(result["checks"]) == {"bytes per image", "busiest party bytes per image",
                                                         "rounds per inference", "setup bytes", "setup rounds"}
    assert result["checks"]["bytes per image"]["ratio"] == pytest.approx(1, abs=1e-3)
    assert result["measured"]["phases"]["delay_s"] == 0.05
    # (Cheetah's secure inference against its price, setup included: tests/test_cheetah.py)

    board = render([run_dir], run_dir).read_text()
    # the ranked table with the first profile's WAN latency, then a secure-cost table per profile
    lines = board.splitlines()
    assert "aby3 WAN s" in next(line for line in lines if line.startswith("| #"))
    for profile, setup in (("aby3", False), ("cheetah", True)):
        at = lines.index(f"Secure cost under `{profile}`:")
        header = lines[at + 2]
        assert all(f"| {column} " in header for column in ("MB", "rounds", "LAN s", "WAN s")), header
        assert ("| setup MB " in header) == setup, "a session's setup is Cheetah's, in its own columns"
    assert "summed over all parties" in board and "busiest party's bytes" in board
    SuiteRun.from_file(suite, out=run_dir, quiet=True).run()  # resumes: nothing left to run
    assert [r["entry"] for r in entry_records(run_dir)] == [entry["entry"]]
    assert read_json(run_dir / "entries" / f"{entry['entry']}.json") == entry


def test_a_profile_the_suite_did_not_price_is_a_one_line_error():
    record = {"entry": "e", "secure_cost": {"aby3": {"comm_mb": 1.0}}}
    with pytest.raises(BenchbedError, match="no recorded 'cheetah' price .*secure_cost.profiles"):
        recorded_price(record, "cheetah")
    single = {"entry": "e", "secure_cost": {"profile": "aby3", "comm_mb": 2.0}}
    assert recorded_price(single, "aby3")["comm_mb"] == 2.0
