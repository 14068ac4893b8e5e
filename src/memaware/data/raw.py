"""Raw data sets: image paths or texts with labels, before featurization turns them into a Dataset."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .dataset import Dataset


@dataclass
class RawData:
    """Items (image file paths or texts) with labels y, attribute a, split, and optional overlapping attributes.

    attributes: optional (n, m) 0/1 array of m possibly overlapping attributes (e.g. CivilComments'
    identities), named by attribute_names; `a` then holds one derived attribute used for training groups.
    """

    items: list[str]
    modality: str  # "image" or "text"
    y: np.ndarray
    split: np.ndarray
    a: np.ndarray | None = None
    name: str = "data"
    attributes: np.ndarray | None = None
    attribute_names: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def with_features(self, x: np.ndarray) -> Dataset:
        """The Dataset of features `x` (one row per item) with this data's labels and splits."""
        return Dataset(x, self.y, self.split, self.a, name=self.name, info={**self.info, "modality": self.modality},
                       attributes=self.attributes, attribute_names=list(self.attribute_names))
