"""Suite files: typed, strict, validated in full before any work starts.

``load_suite`` reports every problem at once, each as ``FILE: field.path: message``: YAML syntax,
unknown or mistyped fields, unknown datasets, models or methods, unknown method options, and
budgets the model cannot meet."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchbed.errors import SuiteError
from benchbed.training import TrainRecipe

if TYPE_CHECKING:
    from benchbed.plugins import Methods


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetConfig(Strict):
    name: str
    root: str = Field("data", description="where the dataset lives (relative to the working directory)")
    download: bool = False
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of train held out for model selection")
    split_seed: int = 0

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from benchbed.data import DATASETS

        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
        return name


class ModelConfig(Strict):
    name: str
    count_stem: bool = Field(True, description="count the stem ReLU in budgets (knapsack/RLNet) or leave it "
                                               "out and keep it as a ReLU (SNL/AutoReP)")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from benchbed.models import MODELS

        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
        return name


class RobustTraining(Strict):
    """RLNet's robust recipe: clean, AugMix and PGD inputs, the PGD ones through the adversarial BNs."""

    eps: float = Field(8 / 255, gt=0)
    step: float = Field(2 / 255, gt=0)
    pgd_steps: int = Field(7, ge=1)
    augmix_severity: int = Field(3, ge=1, le=10)
    augmix_width: int = Field(3, ge=1)
    augmix_depth: int = Field(-1, description="ops per chain; -1 draws 1 to 3")
    augmix_groups: int = Field(8, ge=1, description="a batch is augmented in this many groups, each with its "
                                                     "own sampled chains (per-image AugMix is too slow on a CPU)")


class TeacherConfig(Strict):
    recipe: TrainRecipe | None = None
    checkpoint: str | None = Field(None, description="a benchbed checkpoint of the suite's model to load instead")
    robust: RobustTraining | None = Field(None, description="train a dual-BN teacher on clean, AugMix and PGD "
                                                            "inputs (RLNet's recipe)")
    seed: int = 0

    @model_validator(mode="after")
    def _one_source(self) -> "TeacherConfig":
        if (self.recipe is None) == (self.checkpoint is None):
            raise ValueError("give exactly one of `recipe` (train the teacher) or `checkpoint` (load it)")
        return self


class ComputeBudget(Strict):
    """Identical for every method and budget of the suite: the entry's whole mask search + finetune."""

    epochs: float | None = Field(None, gt=0)
    seconds: float | None = Field(None, gt=0, description="device-seconds")

    @model_validator(mode="after")
    def _some_limit(self) -> "ComputeBudget":
        if self.epochs is None and self.seconds is None:
            raise ValueError("set `epochs`, `seconds` or both")
        return self


class MethodEntry(Strict):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class PGDSettings(Strict):
    """L∞ PGD with random start, in pixel space before normalisation, in eval mode."""

    eps: float = Field(8 / 255, gt=0)
    step: float = Field(2 / 255, gt=0)
    steps: int = Field(20, ge=1)
    random_start: bool = True
    check_steps: int = Field(5, ge=1, description="a weaker attack the full one must not lose to (gradient masking)")
    images: int = Field(1000, ge=1, description="test images attacked")


CIFAR_C = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
           "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")


class CorruptionSettings(Strict):
    names: list[str] = Field(default_factory=lambda: list(CIFAR_C))
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    images: int = Field(10_000, ge=1, description="test images per corruption and severity")

    @field_validator("names")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in CIFAR_C]
        if unknown or not names:
            raise ValueError(f"unknown corruptions {unknown}; choose from {', '.join(CIFAR_C)}")
        return names

    @field_validator("severities")
    @classmethod
    def _severities(cls, severities: list[int]) -> list[int]:
        if not severities or any(s not in (1, 2, 3, 4, 5) for s in severities):
            raise ValueError("severities are among 1..5")
        return severities


class EvaluationSettings(Strict):
    batch_size: int = Field(512, ge=1)
    pgd: PGDSettings | None = Field(None, description="adversarial accuracy; off when absent")
    corruptions: CorruptionSettings | None = Field(None, description="corruption accuracy; off when absent")


class NetworkSettings(Strict):
    bandwidth_mbps: float = Field(gt=0)
    rtt_ms: float = Field(ge=0)


class SecureCostSettings(Strict):
    enabled: bool = True
    profile: str = Field("aby3", description="a protocol profile from the cost_profiles hook (aby3, securenn, …)")
    networks: dict[str, NetworkSettings] = Field(default_factory=lambda: {
        "LAN": NetworkSettings(bandwidth_mbps=10_000, rtt_ms=0.2),
        "WAN": NetworkSettings(bandwidth_mbps=100, rtt_ms=40),
    })


class Suite(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    dataset: DatasetConfig
    model: ModelConfig
    teacher: TeacherConfig
    budgets: list[int] = Field(min_length=1, description="DReLU budgets over the counted sites")
    compute: ComputeBudget
    methods: list[MethodEntry] = Field(min_length=1)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    secure_cost: SecureCostSettings = Field(default_factory=SecureCostSettings)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, budgets: list[int]) -> list[int]:
        negative = [b for b in budgets if b < 0]
        if negative:
            raise ValueError(f"a ReLU budget cannot be negative: {negative}")
        if len(set(budgets)) != len(budgets):
            raise ValueError("budgets repeat")
        return sorted(budgets)

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, methods: list[MethodEntry]) -> list[MethodEntry]:
        names = [m.name for m in methods]
        if len(set(names)) != len(names):
            raise ValueError(f"a method is listed twice: {names}")
        return methods

    def fingerprint(self) -> str:
        """What must match for two runs to be merged: everything but the seeds."""
        body = self.model_dump(mode="json", exclude={"seeds"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _errors(exc: ValidationError, prefix: tuple = ()) -> list[str]:
    return [f"{_loc(prefix + tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]


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


def load_suite(path: str | Path, methods: "Methods") -> tuple[Suite, dict[str, BaseModel]]:
    """Parse and validate ``path``; return the suite and every method's validated options."""
    path = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise SuiteError(path, ["no such file"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SuiteError(path, [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if not isinstance(raw, dict):
        raise SuiteError(path, ["a suite is a YAML mapping with dataset, model, teacher, budgets, compute, methods"])
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        raise SuiteError(path, _errors(exc)) from None

    problems: list[str] = []
    options: dict[str, BaseModel] = {}
    installed = methods.all
    for i, entry in enumerate(suite.methods):
        if entry.name not in installed:
            problems.append(f"methods.{i}.name: unknown method {entry.name!r}; installed: {', '.join(installed) or 'none'}")
            continue
        try:
            options[entry.name] = validate_options(installed[entry.name].info.options, entry.options)
        except ValidationError as exc:
            problems.extend(_errors(exc, ("methods", i, "options")))
    if suite.secure_cost.enabled and suite.secure_cost.profile not in methods.cost_profiles:
        problems.append(f"secure_cost.profile: unknown profile {suite.secure_cost.profile!r}; "
                        f"installed: {', '.join(methods.cost_profiles)}")
    problems += _budget_problems(suite)
    if suite.teacher.checkpoint and not Path(suite.teacher.checkpoint).expanduser().is_file():
        problems.append(f"teacher.checkpoint: no file at {suite.teacher.checkpoint}")
    if problems:
        raise SuiteError(path, problems)
    return suite, options


def _budget_problems(suite: Suite) -> list[str]:
    from benchbed.data import DATASETS
    from benchbed.models import build_model
    from benchbed.sites import capacity, set_stem_counted

    spec = DATASETS[suite.dataset.name]
    model = build_model(suite.model.name, num_classes=spec.num_classes, input_shape=spec.input_shape)
    set_stem_counted(model, suite.model.count_stem)
    limit = capacity(model)
    return [f"budgets.{i}: {b:,} exceeds the {limit:,} counted ReLUs of {suite.model.name} on "
            f"{suite.dataset.name} (count_stem={suite.model.count_stem})"
            for i, b in enumerate(suite.budgets) if b > limit]
