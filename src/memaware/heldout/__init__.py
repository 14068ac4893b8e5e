"""Phase 1: held-out logits and inferred groups, from XRM twins, K-fold cross-fitting, EIIL, or the user."""
from .base import HeldOut, from_logits, is_degenerate
from .crossfit import crossfit
from .eiil import eiil
from .xrm import Twins, XRMTwins, class_balanced_loss, flip_probability, select_xrm_run, xrm

__all__ = ["HeldOut", "from_logits", "is_degenerate", "crossfit", "eiil", "Twins", "XRMTwins", "class_balanced_loss",
           "flip_probability", "select_xrm_run", "xrm"]
