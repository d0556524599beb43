"""Building blocks a method plugin composes from the core's pieces (re-exported by ``benchbed.api``)."""
from __future__ import annotations

from torch import nn

from benchbed.config import DistillationOptions, TrainRecipe
from benchbed.plugin.types import EntryContext
from benchbed.train.loop import fit
from benchbed.train.losses import distillation


def distilled_finetune(ctx: EntryContext, model: nn.Module, recipe: TrainRecipe, opts: DistillationOptions,
                       part: str | None = "finetune") -> dict:
    """Finetune a linearized model (sites frozen) on CE + KD from the suite's teacher; the weights kept are
    those of the best validation epoch. Returns the fit summary for the record. A recipe cut short by
    the compute budget is recorded as a cut of ``part`` (None: the recipe is no paper's)."""
    loss = distillation(ctx.teacher, opts.kd_temperature, opts.kd_weight)
    return fit(model, ctx, recipe, loss_fn=loss, label=f"{ctx.method} finetune", part=part).summary()
