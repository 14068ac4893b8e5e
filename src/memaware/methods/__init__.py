"""Methods behind one registry: `create(name, **hparams)`; `REGISTRY` lists them."""
from . import afr, dfr, erm, groupdro, jtt, lff, logit_adjustment, mat, rwg, subg  # noqa: F401  (registration)
from .base import REGISTRY, Method, TrainContext, UniformSampler, WeightedSampler, create, register
from .mat import MATLoss, calibration_matrix, mat_shift

__all__ = ["REGISTRY", "Method", "TrainContext", "UniformSampler", "WeightedSampler", "create", "register",
           "MATLoss", "calibration_matrix", "mat_shift"]
