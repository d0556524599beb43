"""`benchbed reprice`: a finished run's entries priced again from their checkpoints, with this checkout's
cost model, without training; the record says so and a board names the commit that priced it."""
from __future__ import annotations

import json

from benchbed import schemas
from benchbed.cli import main
from benchbed.config import SecureCostSettings
from benchbed.run.runner import SuiteRun
from benchbed.secure.cost import price
from benchbed.secure.profiles import aby3_profile
from conftest import entry_records, load_checkpoint


def test_reprice_rebuilds_every_price_from_the_checkpoints(write_suite, tmp_path, capsys):
    out = tmp_path / "run"
    SuiteRun.from_file(write_suite(budgets=[64]), out=out, quiet=True).run()
    paths = sorted((out / "entries").glob("*.json"))
    stale = {}
    for path in paths:  # as an older pricing left them
        record = json.loads(path.read_text())
        record["secure_cost"]["aby3"].update(rounds=1.0, comm_mb=9.0)
        stale[record["entry"]] = record
        path.write_text(json.dumps(record))
    assert main(["reprice", str(out)]) == 0
    assert f"repriced {len(paths)} finished entries" in capsys.readouterr().out
    for record in entry_records(out):
        model = load_checkpoint(out / "entries" / record["checkpoint"]).eval()
        fresh = price(model, (1, 8, 8), SecureCostSettings(), aby3_profile())
        assert record["secure_cost"]["aby3"]["rounds"] == fresh["rounds"] != 1.0
        assert record["secure_cost"]["aby3"]["comm_mb"] == fresh["comm_mb"]
        assert record["priced"]["by"] == "benchbed reprice" and "commit" in record["priced"]["source_commit"]
        assert record["metrics"] == stale[record["entry"]]["metrics"], "nothing but the prices changes"
        assert not schemas.problems(record, "entry")
    assert main(["leaderboard", str(out)]) == 0
    assert "**Prices made again** from the entries' checkpoints by `benchbed reprice`" in (out / "leaderboard.md").read_text()


def test_reprice_leaves_an_entry_whose_checkpoint_is_not_its_own(write_suite, tmp_path, capsys):
    out = tmp_path / "run"
    SuiteRun.from_file(write_suite(budgets=[64], methods=[{"name": "all_relu"}]), out=out, quiet=True).run()
    checkpoint = next((out / "entries").glob("*.pt"))
    checkpoint.write_bytes(checkpoint.read_bytes() + b"x")
    before = entry_records(out)[0]
    assert main(["reprice", str(out)]) == 1
    err = capsys.readouterr().err
    assert "its checkpoint is missing or not the one its record's hash names; left as it was" in err
    assert entry_records(out)[0] == before
