"""The types the hooks pass: what the core hands a method for one entry (method × budget × seed), what
it gets back, and how a method describes itself."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel
from torch import nn

from benchbed.config import Strict
from benchbed.data.bundle import TrainingData
from benchbed.train.session import Session

Protocol = Literal["matched", "paper"]


@dataclass(kw_only=True)
class EntryContext(Session):
    """Everything an entry may use: a training ``Session`` (``data`` holds the training and validation
    splits only: the test split reaches nothing but the core's evaluation; batches from
    ``train_batches`` charge the entry's compute budget, and the core also meters every forward pass of
    the student, so training on a loop of one's own is charged too) with the entry's method, ReLU
    budget (an int for every budgeted method: the core guarantees it), validated options and frozen
    teacher. ``notes`` and ``cuts`` are copied into the entry's record, and so is ``setup``: what the
    method reports it ran where a claim's conditions depend on it and the core cannot observe it (probe
    images, how a controller behaved); the board marks such facts as the method's word."""

    method: str
    budget: int | None
    teacher: nn.Module | None
    options: BaseModel
    workdir: Path = Path(".")
    protocol: Protocol = "matched"
    notes: dict[str, Any] = field(default_factory=dict)
    # A dry run (``benchbed run --dry-run``): every code path for a few steps at the suite's real shapes;
    # a method may sample a loop over units (knapsack's probes) to a few of them. Nothing is a result.
    dry_run: bool = False
    setup: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, *, method: str, budget: int | None, seed: int, data: TrainingData, teacher: nn.Module | None,
               options: BaseModel, device: torch.device, epochs: float | None = None, seconds: float | None = None,
               generator: torch.Generator | None = None, timer: Callable[[], float] = time.perf_counter,
               **rest) -> "EntryContext":
        """An entry's context with its compute clock (``epochs`` and/or ``seconds``; None: no limit) and a
        generator seeded by ``seed`` unless one is given; the one way the core and the tests make one."""
        return cls(method=method, budget=budget, seed=seed, data=data, teacher=teacher, options=options,
                   device=device, clock=Session.clock_for(data, device, epochs, seconds, timer),
                   generator=generator or torch.Generator(device=device).manual_seed(seed), **rest)


    def report_setup(self, fact: str, value: Any) -> None:
        """Report a fact about what the entry ran (a number, string, bool or None) that a claim's
        ``Condition`` may read as ``reported.<fact>``."""
        if not (value is None or isinstance(value, (bool, int, float, str))):
            raise TypeError(f"setup fact {fact!r} must be a number, string, bool or None, not {type(value).__name__}")
        self.setup[fact] = value


@dataclass
class MaskResult:
    """What ``build_mask`` returns: the model with every site frozen to a standard kernel."""

    model: nn.Module
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class FinetuneResult:
    """What ``finetune`` returns: the selected model (chosen on validation, never test)."""

    model: nn.Module
    info: dict[str, Any] = field(default_factory=dict)


# How far a published ReLU count may sit from a suite's budget and still be set beside it: papers
# report rounded counts (SNL's "14.9K" for a 15,000 budget).
PUBLISHED_BUDGET_TOLERANCE = 0.02


@dataclass(frozen=True)
class PublishedResult:
    """A top-1 accuracy the method's paper reports, for the leaderboard to set beside ours."""

    dataset: str
    model: str
    stem_relu: bool
    relus: int
    accuracy: float  # a fraction
    source: str = ""

    def matches(self, dataset: str, model: str, stem_relu: bool, budget: int | None) -> bool:
        return (budget is not None and (self.dataset, self.model, self.stem_relu) == (dataset, model, stem_relu)
                and abs(self.relus - budget) <= PUBLISHED_BUDGET_TOLERANCE * budget)


@dataclass(frozen=True)
class ClaimSide:
    """The entries one side of a claim stands for: ``mask``'s mask finetuned by ``finetune`` (the mask
    method's own finetune when None), with linearized pixels left as the identity."""

    mask: str
    finetune: str | None = None

    def matches(self, record: dict) -> bool:
        # the entry's parts, never its key: an entry with a budget split of its own is keyed "snl.ft0.5"
        part = record.get("composition") or {"mask_method": record.get("mask_method") or record.get("method"),
                                             "finetune_method": record.get("finetune_method") or record.get("method"),
                                             "bypass": "identity"}
        return (part.get("mask_method"), part.get("finetune_method"), part.get("bypass", "identity")) == (
            self.mask, self.finetune or self.mask, "identity")

    def __str__(self) -> str:
        return self.mask if self.finetune in (None, self.mask) else f"{self.mask} → {self.finetune}"


@dataclass(frozen=True)
class Condition:
    """A setup a claim's statement depends on, checked on every entry the claim compares (``side``: the
    claiming side ``a``, the other ``b``, or both). ``fact`` is a path into the entry's record:
    ``observed.<name>`` (what the core saw itself: ``teacher``, the variant the mask was made with;
    ``dual_bn``, whether the final model has dual BatchNorms), ``options.<path>`` (the method's options
    as the core validated them) or ``reported.<name>`` (``EntryContext.report_setup``: the method's
    word). An entry departs when the fact is missing or ``fact relation value`` is false; a comparison
    with a departing entry is "not tested as stated", never supported or contradicted."""

    requirement: str                # what the paper's setup is, e.g. "RLNet's robust dual-BN teacher"
    fact: str
    relation: Literal["==", "!=", ">=", "<=", "in"] = "=="
    value: Any = True
    side: Literal["a", "b", "both"] = "a"


@dataclass(frozen=True)
class Claim:
    """A claim, as benchbed tests it: side ``a`` against side ``b`` — or, with ``b`` None, against every
    other method (``versus: "each"``) or against the best other method at each budget and level by
    ``best_by`` (``versus: "best"``) — on ``metric`` (several: A must be better on each), at every budget
    or the lowest, paired over seeds at each compute level. ``same`` says what the entries compared must
    share besides the budget and the level: ``total compute`` (the level's whole budget; where ``b`` ran
    under several splits, the one whose finetune got the most), or ``finetune compute`` (the same fixed
    finetune part of a split budget, ``compute.finetune_share``: entries that differ only in their mask).

    ``source`` says whose claim it is (a paper, or "benchbed" for the benchmark's own); ``quote`` is the
    paper's own sentence and figures with where they stand; ``conditions`` the setup the statement
    depends on — a comparison whose entries depart from one is "not tested as stated"."""

    key: str
    statement: str
    source: str
    a: ClaimSide
    b: ClaimSide | None = None
    relation: Literal[">", "≥"] = ">"
    metric: str | tuple[str, ...] = "clean_accuracy"
    budgets: Literal["every", "lowest"] = "every"
    same: Literal["total compute", "finetune compute"] = "total compute"
    versus: Literal["each", "best"] = "each"
    best_by: str = "clean_accuracy"
    quote: str = ""
    conditions: tuple[Condition, ...] = ()

    def __post_init__(self) -> None:
        allowed = {"relation": (">", "≥"), "budgets": ("every", "lowest"), "same": ("total compute", "finetune compute"),
                   "versus": ("each", "best")}
        for name, values in allowed.items():
            if getattr(self, name) not in values:
                raise ValueError(f"claim {self.key!r}: {name} {getattr(self, name)!r} is none of {', '.join(map(repr, values))}")
        if self.versus == "best" and self.b is not None:
            raise ValueError(f"claim {self.key!r}: versus 'best' compares with the best other method; leave b unset")
        for c in self.conditions:
            if c.relation not in ("==", "!=", ">=", "<=", "in") or c.side not in ("a", "b", "both") \
                    or c.fact.split(".")[0] not in ("observed", "options", "reported"):
                raise ValueError(f"claim {self.key!r}: condition {c.requirement!r} needs a relation of ==, !=, >=, <=, "
                                 "in, a side a/b/both and a fact under observed., options. or reported.")

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric,) if isinstance(self.metric, str) else tuple(self.metric)


@dataclass
class MethodInfo:
    """A method's self-description. Its name is the name its plugin is registered under."""

    description: str
    paper: str = ""
    options: type[BaseModel] = Strict
    budgeted: bool = True  # False for reference rows (all-ReLU) that run once, whatever the budgets
    # Option overrides that make the method run its published recipe (epochs, schedule, images per
    # probe) under ``compute: paper``; merged over the defaults, under the suite's own options.
    paper_recipe: dict[str, Any] = field(default_factory=dict)
    # The teacher variant an entry with these options distils from: "standard" (the suite's teacher)
    # or "robust" (dual-BN, trained on clean, AugMix and PGD inputs). The runner trains each once.
    teacher: Callable[[BaseModel], str] = lambda options: "standard"
    # The paper's own figures; the leaderboard shows the one at a suite's dataset, model and budget.
    published: list[PublishedResult] = field(default_factory=list)
    # The paper's claims; every leaderboard of a run with the entries they compare tests them.
    claims: list[Claim] = field(default_factory=list)
    # The setup the paper's figures come from (its teacher, search, probes): every claim that compares
    # this method's entries — its own or another method's — is "not tested as stated" where they depart.
    setup: tuple[Condition, ...] = ()
    # Composition: the site kinds ``build_mask`` leaves (relu, masked, patch) and those ``finetune`` can
    # train. A suite that pairs one method's mask with a finetune that cannot take it fails validation.
    produces: frozenset[str] = frozenset({"relu", "masked", "patch"})
    accepts: frozenset[str] = frozenset({"relu", "masked", "patch"})
