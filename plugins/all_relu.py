"""Reference row: the shared all-ReLU teacher, unchanged."""
from benchbed.api import EntryContext, FinetuneResult, MaskResult, MethodInfo, Strict, hookimpl


class Options(Strict):
    """No options: the teacher is evaluated as it is."""


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(description="the shared all-ReLU teacher as is (reference row, one per seed)",
                      options=Options, budgeted=False, produces=frozenset({"relu"}))


@hookimpl
def build_mask(ctx: EntryContext, model) -> MaskResult:
    return MaskResult(model, {"changed_sites": 0})


@hookimpl
def finetune(ctx: EntryContext, model) -> FinetuneResult:
    return FinetuneResult(model, {"epochs": 0})
