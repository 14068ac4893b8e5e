"""Checkpoints: model and method state written atomically, read back with weights_only=True."""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.io import atomic_write
from ..errors import MemawareError


def save_checkpoint(path, model_state: dict, method_state: dict | None = None, meta: dict | None = None,
                    **sections: dict) -> Path:
    """Write tensors (and a JSON-able `meta` dict of plain values) to `path` atomically; `sections` are more
    named dicts of tensors and plain values (a resumable run's optimizer, sampler...: memaware.train.resume)."""
    payload = {"model": model_state, "method": method_state or {}, "meta": meta or {}, **sections}
    atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))
    return Path(path)


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by save_checkpoint; never unpickles arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MemawareError(f"{path}: no such checkpoint") from None
    except Exception as err:
        raise MemawareError(f"{path}: not a memaware checkpoint ({type(err).__name__})") from None
