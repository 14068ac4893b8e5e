"""Just train twice (JTT): upweight the training errors of a briefly trained ERM model.

Stage 1 trains a copy of the model by ERM for `first_epochs` passes over the train split, with the
run's optimizer and batch size (in `wrap_model`, before the loop starts). Its training errors (argmax != y) form the error set. Stage 2
is the loop itself: the model trains from its initial weights on batches where each error example is
drawn with weight `upweight` (lambda_up) and every other example with weight 1, which in expectation
equals the paper's duplication of the error set lambda_up times. Groups are not used.
"""
from __future__ import annotations

import torch

from ..errors import MemawareError
from .base import Method, WeightedSampler, register
from .two_stage import train_for_epochs, training_errors


def jtt_weights(error: torch.Tensor, upweight: float) -> torch.Tensor:
    """Sampling weight of each example: `upweight` where the first model erred, 1 where it was right."""
    return torch.where(error.bool().cpu(), float(upweight), 1.0).double()


@register()
class JTT(Method):
    name = "jtt"
    defaults = {"first_epochs": 2.0, "upweight": 5.0}
    bounds = {"first_epochs": (0.01, 1000.0), "upweight": (1.0, float("inf"))}
    batched = True  # the first models train one by one as the runs are set up; the second stage is stacked
    space = {"first_epochs": lambda rng: float(rng.choice([1, 2, 5, 10, 20])),
             "upweight": lambda rng: float(rng.choice([4, 5, 6, 20, 50, 100]))}

    def wrap_model(self, model):
        first = train_for_epochs(model, self.ctx, self.hparams["first_epochs"], self.name)
        self.errors = training_errors(first, self.ctx.x, self.ctx.y)
        if len(torch.unique(self.ctx.y[self.errors == 0])) < 2:
            raise MemawareError("jtt: the first model predicts a single class, so its errors are a whole class; "
                                "raise first_epochs or the learning rate")
        return model

    def sampler(self, batch_size):
        return WeightedSampler(jtt_weights(self.errors, self.hparams["upweight"]), batch_size, self.ctx.generator)

    def state_dict(self):
        return {"errors": self.errors}
