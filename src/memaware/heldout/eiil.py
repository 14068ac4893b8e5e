"""EIIL's inferred groups as a phase-1 product (memaware.methods.eiil infers them)."""
from __future__ import annotations

from ..data.dataset import SPLITS, Dataset
from ..methods.eiil import eiil_environments, reference_model
from ..train.backbones import phase1_data
from ..train.config import TrainConfig
from ..train.loop import predict_logits
from .base import HeldOut, is_degenerate, split_labels


def eiil(data: Dataset, config: TrainConfig | None = None) -> HeldOut:
    """EIIL's inferred attribute for every split (each split inferred on its own) and the reference logits;
    its inferred groups serve wherever XRM's do (its logits are the reference model's, not held-out).
    `data`: features or a StreamData (the reference model as `memaware.methods.eiil` trains it)."""
    config = config or TrainConfig()
    source = phase1_data(data, config)
    splits = {s: source.get(s, config.device) for s in SPLITS}
    model, generator = reference_model(source, splits["train"], config)
    logits = {s: predict_logits(model, split.x) for s, split in splits.items()}
    inferred = {s: eiil_environments(logits[s], split.y, generator) for s, split in splits.items() if len(split)}
    degenerate = is_degenerate(split_labels(data), inferred, data.n_classes)
    return HeldOut(logits["train"].cpu(), inferred, "eiil", degenerate=degenerate)
