"""An interrupted training stage (the teacher's) resumes where it stopped and ends exactly where an
uninterrupted one would."""
from __future__ import annotations

import pytest
import torch

from benchbed.config import TrainRecipe
from benchbed.train.loop import fit


class Interrupted(Exception):
    pass


def test_an_interrupted_fit_resumes_to_the_same_weights(make_ctx, tmp_path):
    recipe = TrainRecipe(epochs=4, lr=0.05, batch_size=128)
    ctx, model = make_ctx(None, budget=None, epochs=10.0)
    whole = fit(model, ctx, recipe)

    ctx2, model2 = make_ctx(None, budget=None, epochs=10.0)
    path = tmp_path / "teacher.partial.pt"

    def stop_after_two(epoch: int, val: float) -> None:
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(model2, ctx2, recipe, resume=path, on_epoch_end=stop_after_two)
    assert path.exists()
    ctx3, model3 = make_ctx(None, budget=None, epochs=10.0)
    resumed = fit(model3, ctx3, recipe, resume=path)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    assert resumed.best_val_accuracy == whole.best_val_accuracy
    assert ctx3.clock.usage == pytest.approx(ctx.clock.usage), "the interrupted epochs stay charged"
    for (name, a), b in zip(model.state_dict().items(), model3.state_dict().values()):
        assert torch.equal(a, b), name
