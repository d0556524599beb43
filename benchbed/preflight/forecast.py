"""``benchbed plan``: what a suite will cost before it runs — per entry group and for the grid, the
compute in training-image equivalents (the unit the compute budget and the core's meter use) and in
FLOPs, the evaluation's cost, the peak memory, and the wall time projected from a ``benchbed bench
--json`` file measured on the device that will run it.

The rules, the meter's: a training image is one forward and both backwards of the student (three
forwards' multiply-accumulates); a no-grad forward a third of one; an attack step two thirds. Under
matched compute an entry's budget includes every pass it makes (teacher, probes, attacks), so the
budget is its compute's upper bound; under paper recipes it is the sum of the recipe's training epochs
(searches may stop sooner; the extra passes are not in it, and the plan says so)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import BaseModel
from torch import nn

from benchbed.config import TrainRecipe
from benchbed.errors import BenchbedError
from benchbed.model.passes import probe_forward
from benchbed.model.sites import counted_sites, relu_count
from benchbed.plugin.manager import Plugins
from benchbed.robustness.training import robust_teacher_cost, robust_teacher_recipe
from benchbed.run.suite import LoadedSuite, suite_entries
from benchbed.run.teacher import robust_recipe
from benchbed.train.meter import FORWARD_SHARE, forward_macs

FLOPS_PER_MAC = 2
FLOAT = 4                     # bytes
OPTIMISER_COPIES = 4          # weights, gradients and two optimiser moments (Adam; SGD's momentum is one)


@dataclass
class Cost:
    """A piece of work: gradient passes in training images, and no-grad forwards in images."""

    train_images: float = 0.0
    forwards: float = 0.0

    @property
    def equivalents(self) -> float:
        return self.train_images + self.forwards * FORWARD_SHARE

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.train_images + other.train_images, self.forwards + other.forwards)

    def __mul__(self, k: float) -> "Cost":
        return Cost(self.train_images * k, self.forwards * k)


def recipes(options: BaseModel) -> list[TrainRecipe]:
    """Every training recipe in a method's options (its search's and its finetune's)."""
    found = []
    for value in dict(options).values():
        if isinstance(value, TrainRecipe):
            found.append(value)
        elif isinstance(value, BaseModel):
            found += recipes(value)
    return found


def largest_batch(loaded: LoadedSuite) -> int:
    """The largest batch any of the suite's recipes (the teacher's, every method's) trains with."""
    suite = loaded.suite
    return max([suite.teacher.recipe.batch_size if suite.teacher.recipe else 128]
               + [r.batch_size for o in loaded.options.values() for r in recipes(o)])


def evaluation_cost(loaded: LoadedSuite, plugins: Plugins, n_val: int, n_test: int, classes: int) -> Cost:
    """One entry's evaluation: clean test and validation accuracy, then every robustness metric's own cost."""
    cost = Cost(forwards=n_val + n_test)
    for name, given in loaded.suite.evaluation.metrics.items():
        metric = plugins.metrics[name]
        settings = plugins.metrics.settings(name, given)
        if metric.cost is None:
            raise BenchbedError(f"robustness metric {name!r} states no cost; its plugin must give `cost`")
        train, forwards = metric.cost(settings, classes)
        cost += Cost(train, forwards)
    return cost


def activation_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Bytes of every module's output for one image in fp32: what a training step keeps for its backward."""
    total = [0]

    def keep(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() // output.shape[0] * FLOAT

    probe_forward(model, input_shape, {m: keep for m in model.modules() if not list(m.children())})
    return total[0]


def _rate(bench: dict | None, kind: str, key: str) -> float | None:
    if bench is None:
        return None
    return bench["sites"].get(kind, next(iter(bench["sites"].values())))[key]


def forecast(loaded: LoadedSuite, plugins: Plugins, bench: dict | None = None) -> dict:
    """The plan of ``loaded``'s suite: groups of entries (method × compute level), the teachers, totals."""
    suite = loaded.suite
    spec = plugins.datasets[suite.dataset.name]
    if spec.sizes is None:
        raise BenchbedError(f"dataset {spec.name!r} states no sizes; its plugin must give `sizes` to plan a suite")
    train_total, n_test = spec.sizes
    n_val = round(train_total * suite.dataset.val_fraction)
    n_train = train_total - n_val
    model = plugins.models.build(suite.model.name, num_classes=spec.num_classes, input_shape=spec.input_shape,
                                 stem_relu=suite.model.stem_relu)
    if bench is not None and (bench["model"] != suite.model.name or tuple(bench["input_shape"]) != spec.input_shape):
        raise BenchbedError(f"the bench file measured {bench['model']} at {bench['input_shape']}, the suite runs "
                            f"{suite.model.name} at {list(spec.input_shape)}; run `benchbed bench --model "
                            f"{suite.model.name} --dataset {spec.name} --json FILE` on the device")
    macs = forward_macs(model, spec.input_shape)
    params = sum(p.numel() for p in model.parameters())
    relus = relu_count(model)
    channels = sum(site.shape[0] for site in counted_sites(model).values())
    evaluation = evaluation_cost(loaded, plugins, n_val, n_test, spec.num_classes)
    entries = suite_entries(suite, plugins)
    groups: dict[tuple[str, str], dict] = {}
    variants = set()
    for entry in entries:
        level, options = entry.level, loaded.options[entry.method]
        variants.add(plugins.get(entry.mask_method).info.teacher(options))
        if level is None:                 # a reference row computes nothing but its evaluation
            training, budget_seconds = Cost(), None
        elif level.epochs is not None or level.seconds is not None:
            training, budget_seconds = Cost(train_images=(level.epochs or 0) * n_train), level.seconds
        else:                             # paper recipes: the recipes' epochs
            training, budget_seconds = Cost(train_images=sum(r.epochs for r in recipes(options)) * n_train), None
        key = (entry.label or entry.method, "—" if level is None else level.label or "paper recipe")
        group = groups.setdefault(key, {"entries": 0, "budgets": set(), "training": training,
                                        "budget_seconds": budget_seconds})
        group["entries"] += 1
        group["budgets"].add(entry.budget)
    teachers = {}
    if suite.teacher.recipe is not None:
        for variant in sorted(variants | {"standard"}):
            robust, recipe = robust_recipe(suite, variant), suite.teacher.recipe
            per_image = 1.0
            if robust is not None:  # the authors' recipe: its epochs, each batch split between the views
                recipe = robust_teacher_recipe(recipe, robust)
                per_image = robust_teacher_cost(robust, recipe.batch_size)
            teachers[variant] = Cost(train_images=per_image * recipe.epochs * n_train) + Cost(forwards=n_val + n_test)
    data_bytes = (train_total + n_test) * math.prod(spec.input_shape) + (train_total + n_test) * 8
    batch = largest_batch(loaded)
    memory = {"data_mb": data_bytes / 1e6,
              "model_mb": params * FLOAT * OPTIMISER_COPIES / 1e6,
              "teacher_copies_mb": params * FLOAT * 2 / 1e6,  # the shared teacher and an entry's own copy
              "activations_mb": activation_bytes(model, spec.input_shape) * 2 * batch / 1e6,  # output and saved input
              "per_pixel_state_mb": relus * FLOAT * OPTIMISER_COPIES / 1e6,  # SNL's alphas, AutoReP's scores
              "batch": batch}
    memory["peak_mb"] = sum(v for k, v in memory.items() if k.endswith("_mb"))
    train_rate = _rate(bench, "masked", "harness_train_images_per_s")
    infer_rate = _rate(bench, "masked", "harness_infer_images_per_s")

    def seconds(cost: Cost, budget_seconds: float | None = None) -> float | None:
        if budget_seconds is not None:  # a seconds budget is spent whatever the device
            return budget_seconds
        return None if train_rate is None else cost.train_images / train_rate + cost.forwards / infer_rate

    pflops = lambda cost: cost.equivalents * 3 * macs * FLOPS_PER_MAC / 1e15  # noqa: E731
    rows = []
    for (label, level), g in groups.items():
        train_s, eval_s = seconds(g["training"], g["budget_seconds"]), seconds(evaluation)
        per_entry = None if train_s is None or eval_s is None else train_s + eval_s
        rows.append({"method": label, "level": level, "entries": g["entries"],
                     "budgets": len(g["budgets"] - {None}) or None,
                     "training_equivalents_per_entry": g["training"].equivalents,
                     "evaluation_equivalents_per_entry": evaluation.equivalents,
                     "pflops_per_entry": pflops(g["training"] + evaluation),
                     "seconds_per_entry": per_entry,
                     "seconds": None if per_entry is None else per_entry * g["entries"]})
    teacher_rows = [{"variant": v, "equivalents": c.equivalents, "pflops": pflops(c), "seconds": seconds(c)}
                    for v, c in teachers.items()]
    total_equivalents = (sum((r["training_equivalents_per_entry"] + r["evaluation_equivalents_per_entry"])
                             * r["entries"] for r in rows) + sum(t["equivalents"] for t in teacher_rows))
    known = [r["seconds"] for r in rows] + [t["seconds"] for t in teacher_rows]
    return {
        "suite": suite.name, "protocol": suite.protocol, "dataset": spec.name, "model": suite.model.name,
        "images": {"train": n_train, "val": n_val, "test": n_test}, "forward_macs": macs, "parameters": params,
        "relus": relus, "channels": channels, "entries": len(entries), "groups": rows, "teachers": teacher_rows,
        "evaluation_per_entry": {"train_images": evaluation.train_images, "forwards": evaluation.forwards,
                                 "equivalents": evaluation.equivalents},
        "memory": memory,
        "total": {"equivalents": total_equivalents, "epochs": total_equivalents / n_train,
                  "pflops": total_equivalents * 3 * macs * FLOPS_PER_MAC / 1e15,
                  "hours": None if any(s is None for s in known) else sum(known) / 3600},
        "bench": None if bench is None else {k: bench.get(k) for k in ("model", "device", "gpu", "batch_size", "torch",
                                                                         "compiled")},
        "note": ("matched compute: an entry's budget includes every pass it makes (teacher, probes, attacks), so "
                 "it is the entry's compute, an upper bound" if suite.protocol == "matched" else
                 "paper recipes: an entry's compute is the sum of its recipe's training epochs; searches that reach "
                 "their budget stop sooner, and the extra passes (teacher, probes, attacks) are not in it")}
