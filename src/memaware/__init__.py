"""memaware: memorization-aware training (MAT) and its baselines for worst-group accuracy."""
__version__ = "0.1.0"

from . import data, heldout, methods, metrics, train  # noqa: E402
from .data import Dataset, load  # noqa: E402
from .heldout import HeldOut, crossfit, xrm  # noqa: E402
from .methods import MATLoss, create  # noqa: E402
from .train import TrainConfig, fit  # noqa: E402

__all__ = ["Dataset", "load", "HeldOut", "crossfit", "xrm", "MATLoss", "create", "TrainConfig", "fit",
           "data", "heldout", "methods", "metrics", "train", "__version__"]
