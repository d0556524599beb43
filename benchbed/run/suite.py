"""Loading a suite file and checking it against what is installed, before any work starts; and the
plan of entries (method × budget × seed) it asks for.

``load_suite`` reports every problem at once, each as ``FILE: field.path: message``: YAML syntax,
unknown or mistyped fields, unknown datasets, models or methods, unknown method options, and
budgets the model cannot meet."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from benchbed.config import ComputeLevel, DatasetConfig, EvaluationSettings, MethodEntry, ModelConfig, Suite
from benchbed.errors import BenchbedError, SuiteError
from benchbed.model.checkpoint import CheckpointFile, model_from_payload, read_checkpoint
from benchbed.model.sites import capacity
from benchbed.plugin.manager import Plugins
from benchbed.run.locate import did_you_mean, fields_at, located, yaml_lines
from benchbed.run.rundir import entry_id
from benchbed.run.teacher import all_relu


@dataclass(frozen=True)
class Entry:
    """One row-to-be: ``method`` is the suite entry's key (``snl``, ``snl-rlnet``, ``snl+dapa``); the mask
    comes from ``mask_method``, the finetune from ``finetune_method`` (the same method unless composed);
    ``level`` is its compute level (None for a reference row, which computes nothing) and
    ``finetune_epochs`` the finetune's fixed part of it under a split budget."""

    method: str
    budget: int | None
    seed: int
    mask_method: str = ""
    finetune_method: str = ""
    bypass: str = "identity"
    label: str = ""
    level: ComputeLevel | None = None
    finetune_epochs: float | None = None
    tagged: bool = False  # the suite has several compute levels: the level is part of the id

    @property
    def id(self) -> str:
        return entry_id(self.method, self.budget, self.seed, self.level.tag if self.tagged and self.level else None)

    @property
    def composed(self) -> bool:
        return self.mask_method != self.finetune_method or self.bypass != "identity"


def suite_entries(suite: Suite, plugins: Plugins) -> list[Entry]:
    """Every entry of the suite: a budgeted method at each budget and compute level (so its
    ``ctx.budget`` is always an int), a reference method once, for every seed."""
    levels = suite.compute.levels()
    entries = []
    for seed in suite.seeds:
        for m in suite.methods:
            share = m.finetune_share if m.finetune_share is not None else suite.compute.finetune_share
            parts = dict(mask_method=m.name, finetune_method=m.finetune or m.name, bypass=m.bypass, label=m.label)
            if not plugins.get(m.name).info.budgeted:
                entries.append(Entry(m.key, None, seed, **parts))
                continue
            entries += [Entry(m.key, b, seed, **parts, level=level, finetune_epochs=level.finetune_epochs(share),
                              tagged=len(levels) > 1) for level in levels for b in suite.budgets]
    return entries


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _errors(exc: ValidationError, prefix: tuple = (), model: type[BaseModel] | None = None) -> list[str]:
    """Every error of ``exc`` as ``path: message``; a field ``model`` does not know names the nearest it does."""
    found = []
    for e in exc.errors():
        hint = ""
        if e["type"] == "extra_forbidden" and model is not None and e["loc"]:
            hint = did_you_mean(str(e["loc"][-1]), fields_at(model, tuple(e["loc"])))
        found.append(f"{_loc(prefix + tuple(e['loc']))}: {e['msg']}{hint}")
    return found


def _deep_merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _deep_merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def validate_options(model: type[BaseModel], given: dict[str, Any]) -> BaseModel:
    """A method's options: what the suite gives, merged into the method's defaults at every depth,
    so that ``search: {lr: 0.01}`` changes the lr and keeps the rest of the method's search recipe."""
    try:
        defaults = model().model_dump()
    except ValidationError:  # options without a default for every field: nothing to merge into
        return model.model_validate(given)
    return model.model_validate(_deep_merge(defaults, given))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that gives one key twice (the plain loader keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_suite(path: str | Path) -> Suite:
    """Parse ``path`` against the schema alone."""
    raw, text = _read_raw(str(path))
    try:
        return Suite.model_validate(raw)
    except ValidationError as exc:
        raise SuiteError(str(path), [located(p, yaml_lines(text), raw) for p in _errors(exc, model=Suite)]) from None
    except RecursionError:
        raise SuiteError(str(path), ["nested too deeply to be a suite"]) from None


def _read_raw(path: str) -> tuple[dict, str]:
    """The suite file's YAML mapping and its text."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise SuiteError(path, ["no such file"]) from None
    except IsADirectoryError:
        raise SuiteError(path, ["a folder, not a suite file"]) from None
    except UnicodeDecodeError:
        raise SuiteError(path, ["not a text file: a suite is YAML in UTF-8"]) from None
    except RecursionError:
        raise SuiteError(path, ["nested too deeply to be a suite"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SuiteError(path, [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if not isinstance(raw, dict):
        raise SuiteError(path, ["a suite is a YAML mapping with dataset, model, teacher, budgets, compute, methods"])
    return raw, text


@dataclass
class LoadedSuite:
    """A validated suite: every entry's options (of the method that builds its mask) and the composed
    entries' finetune-method options, both by entry key, and the teacher checkpoint as validation read it
    (read once per run)."""

    suite: Suite
    options: dict[str, BaseModel]
    finetune_options: dict[str, BaseModel]
    path: str = ""
    teacher_checkpoint: CheckpointFile | None = None


def quick_evaluation(loaded: LoadedSuite, test_images: int) -> LoadedSuite:
    """The suite for a plugin's development loop: clean accuracy on the first ``test_images`` test
    images and no robustness metric, everything else as the suite says. Its fingerprint differs from
    the suite's, so its records never mix with a real run's, and `publish` refuses its run."""
    evaluation = EvaluationSettings(batch_size=loaded.suite.evaluation.batch_size, quick_test_images=test_images)
    return replace(loaded, suite=loaded.suite.model_copy(update={"evaluation": evaluation}))


def load_suite(path: str | Path, plugins: Plugins, need_data: bool = True) -> LoadedSuite:
    """Parse and validate ``path`` against the schema and against what is installed (and, with
    ``need_data``, that its dataset is there or may be downloaded: a dry run does without it)."""
    raw, text = _read_raw(str(path))
    where = lambda problems: [located(p, yaml_lines(text), raw) for p in problems]  # noqa: E731
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:  # every other part that parses on its own is checked too: one pass
        raise SuiteError(str(path), where(_errors(exc, model=Suite) + _partial_problems(raw, plugins))) from None
    except RecursionError:
        raise SuiteError(str(path), ["nested too deeply to be a suite"]) from None
    unknown_parts = _registry_problems(suite, plugins)
    problems = list(unknown_parts)
    method_problems, options, finetune_options = _method_problems(suite.methods, plugins, suite.protocol)
    problems += method_problems
    for i, name in enumerate(suite.secure_cost.profiles if suite.secure_cost.enabled else []):
        if name not in plugins.cost_profiles:
            problems.append(f"secure_cost.profiles.{i}: unknown profile {name!r}; "
                            f"installed: {', '.join(sorted(plugins.cost_profiles))}")
    for name in suite.secure_cost.polynomial_coefficients:
        if name not in suite.secure_cost.profiles:
            problems.append(f"secure_cost.polynomial_coefficients.{name}: not one of this suite's profiles "
                            f"({', '.join(suite.secure_cost.profiles)}); name a profile it prices")
    metric_problems = plugins.metrics.problems(suite.evaluation.metrics)
    problems += metric_problems
    if not metric_problems:  # every metric's settings in full, defaults included: what the fingerprint covers
        sections = {name: plugins.metrics.settings(name, given).model_dump(mode="json")
                    for name, given in suite.evaluation.metrics.items()}
        suite = suite.model_copy(update={"evaluation": EvaluationSettings(batch_size=suite.evaluation.batch_size,
                                                                          quick_test_images=suite.evaluation.quick_test_images,
                                                                          **sections)})
    checkpoint = None
    if not unknown_parts:
        problems += _budget_problems(suite, plugins)
        data_problems, checkpoint = _data_problems(suite, plugins, need_data)
        problems += data_problems
    if problems:
        raise SuiteError(str(path), where(problems))
    return LoadedSuite(suite, options, finetune_options, str(path), checkpoint)


def _method_problems(entries: list[MethodEntry], plugins: Plugins, protocol: str
                     ) -> tuple[list[str], dict[str, BaseModel], dict[str, BaseModel]]:
    """Every method entry's problems (unknown methods, options, compositions), and the options of those
    that validate, by entry key: the mask method's, and a composed entry's finetune method's."""
    problems: list[str] = []
    options: dict[str, BaseModel] = {}
    finetune_options: dict[str, BaseModel] = {}
    for i, entry in enumerate(entries):
        parts = [("name", entry.name, entry.options, "options", options)]
        if entry.finetune is not None:
            parts.append(("finetune", entry.finetune, entry.finetune_options, "finetune_options", finetune_options))
        for field, name, given, options_field, into in parts:
            problem = _unknown_method(plugins, name)
            if problem:
                problems.append(f"methods.{i}.{field}: {problem}")
                continue
            info = plugins.all[name].info
            given = _deep_merge(info.paper_recipe, given) if protocol == "paper" else given
            try:
                into[entry.key] = validate_options(info.options, given)
            except ValidationError as exc:
                problems.extend(_errors(exc, ("methods", i, options_field), model=info.options))
        if not any(p.startswith(f"methods.{i}.") for p in problems):
            problems += [f"methods.{i}: {p}" for p in _composition_problems(entry, plugins)]
    return problems, options, finetune_options


def _partial_problems(raw: dict, plugins: Plugins) -> list[str]:
    """The problems of a suite that fails its schema, in the parts that parse on their own: each method
    entry's options, and the budgets against the model (a schema error is not the only one reported)."""
    entries = raw.get("methods") if isinstance(raw.get("methods"), list) else []
    parsed = {}
    for i, item in enumerate(entries):
        try:
            parsed[i] = MethodEntry.model_validate(item)
        except (ValidationError, TypeError):
            continue  # the schema's errors name it already
    compute = raw.get("compute")
    protocol = "paper" if compute == "paper" or (isinstance(compute, dict) and compute.get("paper")) else "matched"
    problems = []
    for i, entry in parsed.items():
        found, _, _ = _method_problems([entry], plugins, protocol)
        problems += [p.replace("methods.0", f"methods.{i}", 1) for p in found]
    try:
        partial = SimpleNamespace(dataset=DatasetConfig.model_validate(raw.get("dataset")),
                                  model=ModelConfig.model_validate(raw.get("model")),
                                  budgets=[b for b in raw.get("budgets") or [] if isinstance(b, int) and b > 0])
    except (ValidationError, TypeError):
        return problems
    if not _registry_problems(partial, plugins):
        problems += _budget_problems(partial, plugins)
    return problems


def _unknown_method(plugins: Plugins, name: str) -> str | None:
    if name in plugins.broken:
        return plugins.broken[name]
    if name not in plugins.all:
        return f"unknown method {name!r}; installed: {', '.join(plugins.all) or 'none'}"
    return None


def _composition_problems(entry: MethodEntry, plugins: Plugins) -> list[str]:
    """Why ``entry``'s mask cannot go with its finetune or its bypass, before any work starts."""
    mask = plugins.all[entry.name].info
    problems = []
    if entry.finetune is not None:
        finetune = plugins.all[entry.finetune].info
        if not mask.budgeted and finetune.budgeted:
            problems.append(f"{entry.name} makes no mask to finetune (it is a reference row)")
        refused = sorted(set(mask.produces) - set(finetune.accepts))
        if refused:
            problems.append(f"{entry.finetune}'s finetune cannot train {' or '.join(refused)} sites, which "
                            f"{entry.name}'s mask makes ({entry.finetune} accepts {', '.join(sorted(finetune.accepts))})")
    if entry.bypass == "dapa" and not {"masked", "patch"} & set(mask.produces):
        problems.append(f"bypass: dapa gives linearized pixels of masked or patch sites a polynomial; {entry.name} "
                        f"makes {', '.join(sorted(mask.produces)) or 'no'} sites")
    return problems


def _registry_problems(suite: Suite, plugins: Plugins) -> list[str]:
    problems = []
    if suite.dataset.name not in plugins.datasets:
        problems.append(f"dataset.name: unknown dataset {suite.dataset.name!r}; choose one of "
                        f"{', '.join(plugins.datasets.names())}")
    if suite.model.name not in plugins.models:
        problems.append(f"model.name: unknown model {suite.model.name!r}; choose one of {', '.join(plugins.models.names())}")
    return problems


def _data_problems(suite: Suite, plugins: Plugins, need_data: bool) -> tuple[list[str], CheckpointFile | None]:
    """The dataset is there (or may be downloaded), and a teacher checkpoint loads and fits the suite;
    the checkpoint as read, for the run to use."""
    spec, problems, checkpoint = plugins.datasets[suite.dataset.name], [], None
    if need_data and not suite.dataset.download and not spec.present(Path(suite.dataset.root)):
        problems.append(f"dataset.root: no {suite.dataset.name} under {suite.dataset.root}; set `dataset.download: true` "
                        "or point `dataset.root` at the folder that holds it")
    if suite.teacher.checkpoint:
        try:
            checkpoint = read_checkpoint(suite.teacher.checkpoint)
            all_relu(model_from_payload(checkpoint.payload, checkpoint.path, models=plugins.models,
                                        expect_model=suite.model.name, expect_classes=spec.num_classes,
                                        expect_input_shape=spec.input_shape), checkpoint.path)
        except BenchbedError as exc:
            problems.append(f"teacher.checkpoint: {exc}")
    return problems, checkpoint


def _budget_problems(suite: Suite, plugins: Plugins) -> list[str]:
    spec = plugins.datasets[suite.dataset.name]
    model = plugins.models.build(suite.model.name, num_classes=spec.num_classes, input_shape=spec.input_shape,
                                 stem_relu=suite.model.stem_relu)
    limit = capacity(model)
    return [f"budgets.{i}: {b:,} exceeds the {limit:,} ReLUs of {suite.model.name} on "
            f"{suite.dataset.name} (stem_relu={suite.model.stem_relu})"
            for i, b in enumerate(suite.budgets) if b > limit]
