"""Methods behind one registry: `create(name, **hparams)`; `REGISTRY` lists them."""
from . import afr, dfr, erm, groupdro, jtt, lff, logit_adjustment, mat, rwg, subg  # noqa: F401  (registration)
from . import (alignment, balanced_softmax, cnc, crt, cvar, dfr_val, eiil, focal, irm, ldam, lisa,  # noqa: F401
               mixup, reweight, spare, vrex)
from .base import REGISTRY, Method, TrainContext, UniformSampler, WeightedSampler, create, register
from .mat import MATLoss, calibration_matrix, mat_shift

__all__ = ["REGISTRY", "Method", "TrainContext", "UniformSampler", "WeightedSampler", "create", "register",
           "MATLoss", "calibration_matrix", "mat_shift"]
