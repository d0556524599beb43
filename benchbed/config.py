"""The schema of a suite file and of the recipes methods share: typed and strict (``extra="forbid"``).
Loading a suite file and checking it against what is installed is ``benchbed.suite``."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

# A suite's, a method's or an entry's name: it becomes a file or folder name, so nothing that can climb out.
PLAIN_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$"
# Seeds are whole numbers (YAML's true/false are not) that torch and numpy accept.
Seed = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]


class Strict(BaseModel):
    # No unknown fields, and no NaN or infinity where a number is asked for (JSON records cannot hold them).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TrainRecipe(Strict):
    """Optimiser and schedule for one training stage."""

    epochs: float = Field(30, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    batch_size: int = Field(128, ge=1)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75],
                                    description="step schedule: fractions of training at which lr is multiplied by gamma")
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up, in epochs of the recipe; under a cut "
                                                         "budget it keeps its share of the stage")
    warmup_start: float = Field(0.0, ge=0, le=1, description="the warm-up's first lr, as a fraction of the lr")
    min_lr: float = Field(0.0, ge=0, description="floor of the scheduled lr (the warm-up may start below it)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    compile: bool = Field(False, description="train through torch.compile (pays a compile once per stage)")


class DistillationOptions(Strict):
    """Options every distilling method shares; a method's options model inherits them."""

    kd_temperature: float = Field(4.0, gt=0, description="distillation temperature T")
    kd_weight: float = Field(1.0, ge=0, description="weight of KD(T) next to cross-entropy")


class DatasetConfig(Strict):
    name: str
    root: str = Field("data", description="where the dataset lives (relative to the working directory)")
    download: bool = False
    val_fraction: float = Field(0.1, ge=0.01, le=0.5, description="share of train held out for model selection")
    split_seed: Seed = 0


class ModelConfig(Strict):
    name: str
    stem_relu: bool = Field(True, description="keep the ReLU after the stem conv (ResNet-18: 557,056 ReLUs, the "
                                              "knapsack and RLNet model) or build the model without it (491,520, "
                                              "the SNL and AutoReP model); every ReLU that exists is counted")


class RobustTraining(Strict):
    """RLNet's robust recipe: clean, AugMix and PGD inputs, the PGD ones through the adversarial BNs.
    The ``teacher_*`` fields are the robust teacher's alone (``teacher.robust``, or RLNet's robust
    teacher variant); RLNet's own student stages split their batches as the authors' code does."""

    eps: float = Field(8 / 255, gt=0)
    step: float = Field(2 / 255, gt=0)
    pgd_steps: int = Field(7, ge=1)
    augmix_severity: int = Field(3, ge=1, le=10)
    augmix_width: int = Field(3, ge=1)
    augmix_depth: int = Field(-1, description="ops per chain; -1 draws 1 to 3")
    augmix_all_ops: bool = Field(False, description="AugMix may also use brightness, contrast, color and sharpness; "
                                                    "RLNet's code leaves them out, as they overlap the CIFAR-C test "
                                                    "corruptions and would inflate corruption accuracy")
    teacher_split: Literal["halves", "thirds"] = Field(
        "halves", description="robust teacher: how a batch is split into its clean, AugMix and PGD parts; halves "
                              "(the authors' loops_robust.py): one half clean and, the same images, AugMix, the "
                              "other half PGD; thirds: three disjoint parts")
    teacher_lr: float | None = Field(0.05, gt=0, description="robust teacher: the learning rate (the authors' 0.05); "
                                                             "null keeps the suite teacher recipe's")
    teacher_epochs_factor: float = Field(1.5, gt=0, description="robust teacher: its epochs are the suite teacher "
                                                                "recipe's times this (the authors: 240 against the "
                                                                "standard teacher's 160)")


class TeacherConfig(Strict):
    recipe: TrainRecipe | None = None
    checkpoint: str | None = Field(None, description="a benchbed checkpoint of the suite's model to load instead")
    robust: RobustTraining | None = Field(None, description="train a dual-BN teacher on clean, AugMix and PGD "
                                                            "inputs (RLNet's recipe)")
    seed: Seed = 0

    @model_validator(mode="after")
    def _one_source(self) -> "TeacherConfig":
        if (self.recipe is None) == (self.checkpoint is None):
            raise ValueError("give exactly one of `recipe` (train the teacher) or `checkpoint` (load it)")
        return self


@dataclass(frozen=True)
class ComputeLevel:
    """One compute level of a suite: every entry at it gets ``epochs`` and/or ``seconds``; with
    ``finetune_share`` the finetune gets exactly that share of the epochs and the mask search the rest."""

    index: int
    epochs: float | None
    seconds: float | None
    finetune_share: float | None = None

    @property
    def label(self) -> str:
        return ", ".join(f"{v:g} {unit}" for v, unit in ((self.epochs, "epochs"), (self.seconds, "s")) if v is not None)

    @property
    def tag(self) -> str:
        """The level in entry ids: ``e8``, ``t600``, ``e8t600``."""
        return "".join(f"{p}{v:g}" for p, v in (("e", self.epochs), ("t", self.seconds)) if v is not None)

    def finetune_epochs(self, share: float | None) -> float | None:
        """The finetune's fixed part of the epochs under ``share`` (the entry's or the suite's); None unsplit."""
        return None if share is None or self.epochs is None else self.epochs * share


PositiveNumbers = float | list[float]


class ComputeBudget(Strict):
    """Matched compute: identical for every method and budget of the suite, the entry's whole mask search
    + finetune. Lists make compute an axis: ``epochs: [2, 8]`` runs every entry at each level (the
    teacher and the reference rows are shared). ``finetune_share`` splits every level: the finetune gets
    exactly that share of the epochs and the mask search at most the rest, so that entries differing
    only in their mask get the same finetune. ``compute: paper`` instead runs each method's published
    recipe without a limit, and records what it used in the same units."""

    epochs: PositiveNumbers | None = Field(None, description="epochs of training-image equivalents per entry")
    seconds: PositiveNumbers | None = Field(None, description="device-seconds per entry")
    finetune_share: float | None = Field(None, gt=0, le=1, description="share of every level's epochs that is the "
                                                                       "finetune's alone (the search gets the rest)")
    paper: bool = Field(False, description="the paper-recipe protocol (write `compute: paper`)")

    @model_validator(mode="before")
    @classmethod
    def _paper_word(cls, data: Any) -> Any:
        return {"paper": True} if data == "paper" else data

    @field_validator("epochs", "seconds")
    @classmethod
    def _positive(cls, value: PositiveNumbers | None) -> PositiveNumbers | None:
        values = value if isinstance(value, list) else [] if value is None else [value]
        if isinstance(value, list) and not value:
            raise ValueError("give at least one compute level")
        if any(not math.isfinite(v) or v <= 0 for v in values):
            raise ValueError("compute levels must be positive finite numbers")
        if len(set(values)) != len(values):
            raise ValueError("compute levels repeat")
        return value

    @model_validator(mode="after")
    def _some_limit(self) -> "ComputeBudget":
        if self.paper and (self.epochs is not None or self.seconds is not None or self.finetune_share is not None):
            raise ValueError("`compute: paper` runs each method's own recipe; it takes no epochs, seconds or split")
        if not self.paper and self.epochs is None and self.seconds is None:
            raise ValueError("set `epochs`, `seconds` or both, or write `compute: paper`")
        lengths = {len(v) for v in (self.epochs, self.seconds) if isinstance(v, list)}
        if len(lengths) > 1:
            raise ValueError("`epochs` and `seconds` list different numbers of compute levels")
        if self.finetune_share is not None and self.epochs is None:
            raise ValueError("`finetune_share` splits epochs; give `epochs`")
        tags: dict[str, ComputeLevel] = {}
        for level in self.levels():  # a level is part of every entry id: two that print alike would share ids
            if level.tag in tags:
                raise ValueError(f"compute levels {tags[level.tag].epochs or tags[level.tag].seconds!r} and "
                                 f"{level.epochs or level.seconds!r} both read {level.tag!r} in entry ids; give levels "
                                 "that differ within 6 significant digits")
            tags[level.tag] = level
        return self

    def levels(self) -> list[ComputeLevel]:
        """The suite's compute levels, in the order given (one for a plain number; one unlimited for paper)."""
        if self.paper:
            return [ComputeLevel(0, None, None)]
        count = max(len(v) if isinstance(v, list) else 1 for v in (self.epochs, self.seconds))
        at = lambda v, i: v[i] if isinstance(v, list) else v  # noqa: E731
        return [ComputeLevel(i, at(self.epochs, i), at(self.seconds, i), self.finetune_share) for i in range(count)]


class MethodEntry(Strict):
    """One method of a suite — or, composed, one method's mask with another method's finetune."""

    name: str = Field(description="the method whose build_mask places the ReLUs (and, alone, finetunes too)")
    options: dict[str, Any] = Field(default_factory=dict)
    finetune: str | None = Field(None, description="another method whose finetune trains the linearized model")
    finetune_options: dict[str, Any] = Field(default_factory=dict, description="options of the finetune method")
    bypass: Literal["identity", "dapa"] = Field(
        "identity", description="what linearized pixels compute: the identity, or AutoReP's DaPa quadratic fitted "
                                "per channel to the teacher's pre-activations")
    finetune_share: float | None = Field(
        None, gt=0, le=1, description="this entry's own split of every level (the suite's `compute.finetune_share` "
                                      "otherwise): 1 gives a mask-only method's finetune the whole budget")

    @model_validator(mode="after")
    def _finetune_options_need_a_finetune(self) -> "MethodEntry":
        if self.finetune_options and self.finetune is None:
            raise ValueError("`finetune_options` without `finetune`: name the method whose finetune they are for")
        return self

    @property
    def key(self) -> str:
        """The entry's name in ids and file names: ``snl``, ``snl+dapa``, ``snl-rlnet``, ``random_mask-snl.ft1``."""
        share = f".ft{self.finetune_share:g}" if self.finetune_share is not None else ""
        return (self.name + ("+dapa" if self.bypass == "dapa" else "") + (f"-{self.finetune}" if self.finetune else "")
                + share)

    @property
    def label(self) -> str:
        """The row's name in a leaderboard: ``snl``, ``snl + DaPa``, ``snl → rlnet``, ``random_mask → snl (finetune 100%)``."""
        share = f" (finetune {self.finetune_share:.0%})" if self.finetune_share is not None else ""
        return (self.name + (" + DaPa" if self.bypass == "dapa" else "") + (f" → {self.finetune}" if self.finetune else "")
                + share)


class EvaluationSettings(BaseModel):
    """``batch_size``, and under every other key a robustness metric (``pgd``, ``corruptions``, ``autoattack``
    or a plugin's, see ``benchbed plugins``) with its settings; a metric that is absent is off. Suite
    loading checks each key against the installed metrics and their settings models."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    batch_size: int = Field(512, ge=1)
    quick_test_images: int | None = Field(
        None, ge=1, description="development only (`benchbed run --quick-eval N`): clean accuracy on the first N test "
                                "images, no robustness metric; a board of such a run can never be published")

    @property
    def metrics(self) -> dict[str, Any]:
        """The robustness metrics the suite turns on, by name, with their settings as given."""
        return dict(self.model_extra or {})


class NetworkSettings(Strict):
    bandwidth_mbps: float = Field(gt=0)
    rtt_ms: float = Field(ge=0)


class SecureCostSettings(Strict):
    enabled: bool = True
    profiles: list[str] = Field(default_factory=lambda: ["aby3"], min_length=1,
                                description="protocol profiles from the cost_profiles hook (aby3, cheetah, securenn, …); "
                                            "every entry is priced under each")
    networks: dict[str, NetworkSettings] = Field(default_factory=lambda: {
        "LAN": NetworkSettings(bandwidth_mbps=10_000, rtt_ms=0.2),
        "WAN": NetworkSettings(bandwidth_mbps=100, rtt_ms=40),
    })
    polynomial_coefficients: dict[str, Literal["public", "secret"]] = Field(
        default_factory=dict, description="per profile, price polynomial coefficients as public (both parties know "
                                          "them) or secret (model weights), overriding the protocol's own choice "
                                          "(Delphi: public; the SPU profiles and SecureNN: secret)")


class Suite(Strict):
    name: str = Field(pattern=PLAIN_NAME, description="letters, digits, '_', '.' and '-', not starting with '.' or '-', "
                                                    "at most 80: it names files and folders")
    description: str = ""
    dataset: DatasetConfig
    model: ModelConfig
    teacher: TeacherConfig
    budgets: list[StrictInt] = Field(min_length=1, description="DReLU budgets over the counted sites")
    compute: ComputeBudget
    methods: list[MethodEntry] = Field(min_length=1)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    secure_cost: SecureCostSettings = Field(default_factory=SecureCostSettings)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "native", "fp32", "bf16"] = Field(
        "auto", description="bf16 autocast or plain fp32 for training and evaluation: auto is bf16 on CUDA and fp32 "
                            "on a CPU; native is bf16 also on CPUs that compute it in hardware (AMX, AVX-512 BF16), "
                            "about twice as fast there. Recorded with every result.")

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
        keys = [m.key for m in methods]
        if len(set(keys)) != len(keys):
            raise ValueError(f"a method is listed twice: {keys}")
        return methods

    @property
    def protocol(self) -> Literal["matched", "paper"]:
        return "paper" if self.compute.paper else "matched"

    def fingerprint(self) -> str:
        """What must match for two runs to be merged: everything but the seeds."""
        body = self.model_dump(mode="json", exclude={"seeds"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
