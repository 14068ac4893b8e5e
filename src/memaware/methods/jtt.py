"""Just train twice (JTT): upweight the training errors of a briefly trained ERM model.

Stage 1 trains a copy of the model by ERM for `first_steps` steps on the train split (in
`wrap_model`, before the loop starts). Its training errors (argmax != y) form the error set. Stage 2
is the loop itself: the model trains from its initial weights on batches where each error example is
drawn with weight `upweight` (lambda_up) and every other example with weight 1, which in expectation
equals the paper's duplication of the error set lambda_up times. Groups are not used.
"""
from __future__ import annotations

import torch

from ..errors import MemawareError
from .base import Method, WeightedSampler, register
from .two_stage import train_first_model, training_errors


def jtt_weights(error: torch.Tensor, upweight: float) -> torch.Tensor:
    """Sampling weight of each example: `upweight` where the first model erred, 1 where it was right."""
    return torch.where(error.bool().cpu(), float(upweight), 1.0).double()


@register()
class JTT(Method):
    name = "jtt"
    defaults = {"first_steps": 100, "upweight": 20.0}
    bounds = {"first_steps": (1, float("inf")), "upweight": (1.0, float("inf"))}
    space = {"first_steps": lambda rng: int(round(10 ** rng.uniform(1, 3))),
             "upweight": lambda rng: float(rng.choice([2, 5, 10, 20, 50, 100]))}

    def wrap_model(self, model):
        first = train_first_model(model, self.ctx, self.hparams["first_steps"], self.name)
        self.errors = training_errors(first, self.ctx.x, self.ctx.y)
        if len(torch.unique(self.ctx.y[self.errors == 0])) < 2:
            raise MemawareError("jtt: the first model predicts a single class, so its errors are a whole class; "
                                "raise first_steps or the learning rate")
        return model

    def sampler(self, batch_size):
        return WeightedSampler(jtt_weights(self.errors, self.hparams["upweight"]), batch_size, self.ctx.generator)

    def state_dict(self):
        return {"errors": self.errors}
