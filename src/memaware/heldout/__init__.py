"""Phase 1: held-out logits and inferred groups, from XRM twins, K-fold cross-fitting, EIIL, or the user."""
from .base import HeldOut, from_logits, is_degenerate
from .crossfit import crossfit
from .eiil import eiil
from .phase1 import train_phase1
from .xrm import Twins, XRMTwins, class_balanced_loss, flip_probability, select_xrm_run, xrm

__all__ = ["HeldOut", "from_logits", "is_degenerate", "crossfit", "eiil", "train_phase1", "Twins", "XRMTwins",
           "class_balanced_loss", "flip_probability", "select_xrm_run", "xrm"]
