"""memaware: memorization-aware training (MAT) and its baselines for worst-group accuracy.

Names are imported on first use, so that `import memaware` (and the command line's --help) does not
pay for PyTorch until something needs it.
"""
import importlib

__version__ = "0.1.0"

_SUBMODULES = ("data", "heldout", "methods", "metrics", "train", "saved")
_NAMES = {"Dataset": "data", "load": "data", "HeldOut": "heldout", "crossfit": "heldout", "xrm": "heldout",
          "MATLoss": "methods", "create": "methods", "TrainConfig": "train", "fit": "train",
          "load_model": "saved"}

__all__ = [*_NAMES, *_SUBMODULES, "__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'memaware' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
