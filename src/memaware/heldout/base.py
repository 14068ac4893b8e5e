"""What phase 1 produces: held-out logits for every training example and inferred groups."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import SPLITS, Dataset
from ..errors import DataError


@dataclass
class HeldOut:
    """Held-out logits (n_train, K), by position in the train split, and inferred attributes.

    `inferred[split]` holds, for each example of that split, the inferred attribute m in {0, 1}
    (1: a held-out or twin model mistakes it); the inferred group is (y, m).
    """

    logits: torch.Tensor
    inferred: dict[str, torch.Tensor] = field(default_factory=dict)
    source: str = "user"
    flip_rate: float | None = None
    degenerate: bool = False
    info: dict = field(default_factory=dict)

    def save(self, path) -> None:
        """Write to .npz (logits, inferred_<split>, and a JSON string of the rest)."""
        import json

        from ..data.io import atomic_write

        meta = json.dumps({"source": self.source, "flip_rate": self.flip_rate, "degenerate": self.degenerate,
                           "info": self.info})
        arrays = {"logits": self.logits.cpu().numpy(), "meta": np.asarray(meta)}
        arrays.update({f"inferred_{k}": v.cpu().numpy() for k, v in self.inferred.items()})

        def write(tmp: Path):
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        atomic_write(Path(path), write)

    @classmethod
    def load(cls, path) -> "HeldOut":
        with np.load(path, allow_pickle=False) as f:
            return cls.from_arrays(f)

    @classmethod
    def from_arrays(cls, f) -> "HeldOut":
        """From the arrays `save` writes (an open .npz)."""
        import json

        meta = json.loads(str(f["meta"]))
        inferred = {k[len("inferred_"):]: torch.as_tensor(f[k]) for k in f.files if k.startswith("inferred_")}
        return cls(torch.as_tensor(f["logits"]), inferred, meta["source"], meta["flip_rate"], meta["degenerate"],
                   meta["info"])


def from_logits(data: Dataset, train_logits, val_logits=None, test_logits=None, source: str = "user") -> HeldOut:
    """Wrap a user's held-out logits; inferred attribute m = 1 where the logits' argmax differs from y."""
    given = {"train": train_logits, "val": val_logits, "test": test_logits}
    logits, inferred = {}, {}
    for split, value in given.items():
        if value is None:
            continue
        value = torch.as_tensor(np.asarray(value), dtype=torch.float32)
        y = torch.as_tensor(data.y[data.mask(split)])
        if value.ndim != 2 or value.shape != (len(y), data.n_classes):
            raise DataError(f"{split} held-out logits must have shape ({len(y)}, {data.n_classes}), got {tuple(value.shape)}")
        if not torch.isfinite(value).all():
            raise DataError(f"{split} held-out logits contain NaN or infinite values")
        logits[split] = value
        inferred[split] = (value.argmax(1) != y).long()
    if "train" not in logits:
        raise DataError("held-out logits for the train split are required")
    ys = {s: torch.as_tensor(data.y[data.mask(s)]) for s in inferred}
    return HeldOut(logits["train"], inferred, source,
                   degenerate=is_degenerate(ys, inferred, data.n_classes, splits=tuple(inferred)))


def is_degenerate(y: dict[str, torch.Tensor], m: dict[str, torch.Tensor], n_classes: int,
                  splits: tuple[str, ...] = ("train", "val")) -> bool:
    """True when some class present in a split is not split into both inferred groups m=0 and m=1."""
    for split in splits:
        if split not in m:
            continue
        counts = torch.bincount(y[split].cpu() * 2 + m[split].cpu(), minlength=2 * n_classes).view(n_classes, 2)
        present = counts.sum(1) > 0
        if ((counts[present] == 0).any(1)).any():
            return True
    return False


def split_labels(data: Dataset) -> dict[str, torch.Tensor]:
    return {s: torch.as_tensor(data.y[data.mask(s)]) for s in SPLITS}
