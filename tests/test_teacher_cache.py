"""The teacher cache: a teacher is trained once per recipe, data and code, and reused by every run and suite
that asks for the same one; what it cost travels with it, and entries record what the core saw them run."""
from __future__ import annotations

import json

import pytest

from benchbed.run.runner import SuiteRun
from benchbed.run.rundir import teacher_cache_files
from benchbed.run.teacher import cache_key
from conftest import entry_records, keep_first_pixels, method_plugin

pytestmark = pytest.mark.usefixtures("fresh_teacher_cache")  # each test sees what its own runs cache


def _run(suite, out, plugins=None) -> list[str]:
    logs: list[str] = []
    run = SuiteRun.from_file(suite, out=out, quiet=True, plugins=plugins)
    run.reporter.log = logs.append
    run.run()
    return logs


def test_a_second_run_reuses_the_cached_teacher_and_its_cost(write_suite, tmp_path):
    suite = write_suite(methods=[{"name": "all_relu"}])
    first = _run(suite, tmp_path / "one")
    assert any("training a" in line for line in first) and len(list(teacher_cache_files('x')[0].parent.parent.iterdir())) == 1
    second = _run(suite, tmp_path / "two")
    assert not any("training a" in line for line in second), "the same recipe, data and code: not trained again"
    assert any("cached" in line for line in second)
    one, two = (json.loads((tmp_path / d / "teacher.json").read_text()) for d in ("one", "two"))
    assert one["cache_key"] == two["cache_key"] and two["source"]["cached"] == one["cache_key"]
    assert two["compute"] == one["compute"] and one["compute"]["used"]["epochs"] > 1.9, "2 epochs, metered"
    assert (tmp_path / "one" / "teacher.pt").read_bytes() == (tmp_path / "two" / "teacher.pt").read_bytes()


def test_the_key_follows_the_recipe_and_the_variant(write_suite, tmp_path):
    from benchbed.plugin.manager import Plugins, plugin_manager
    from benchbed.run.suite import load_suite

    plugins = Plugins(plugin_manager())
    a = load_suite(write_suite("a.yaml"), plugins).suite
    b = load_suite(write_suite("b.yaml", teacher={"recipe": {"epochs": 3}}), plugins).suite
    data = SuiteRun.from_file(write_suite("c.yaml"), out=tmp_path / "r", quiet=True).load_data()
    keys = {cache_key(a, data, "standard"), cache_key(b, data, "standard"), cache_key(a, data, "robust")}
    assert len(keys) == 3
    assert cache_key(a, data, "standard") == cache_key(load_suite(write_suite("d.yaml", seeds=[5]), plugins).suite,
                                                       data, "standard"), "the entries' seeds are not the teacher's"


def test_entries_record_the_setup_the_core_saw_and_the_method_reported(write_suite, methods_with, tmp_path):
    def reporting_mask(ctx, model):
        ctx.report_setup("probe_images", 12)
        return keep_first_pixels(ctx, model)

    plugins = methods_with(("reporter", method_plugin(reporting_mask)))
    suite = write_suite(methods=[{"name": "reporter"}], budgets=[64])
    _run(suite, tmp_path / "run", plugins)
    (record,) = entry_records(tmp_path / "run")
    assert record["status"] == "ok"
    assert record["setup"]["observed"] == {"teacher": "standard", "finetune_teacher": "standard", "dual_bn": False}
    assert record["setup"]["reported"] == {"probe_images": 12}
    assert record["stated_setup"] == [] and "method_assets" not in record
