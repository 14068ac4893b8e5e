"""EIIL (Creager et al.): environments inferred as the split that most violates invariance of a reference model.

A reference model is trained by ERM on the train split (the run's TrainConfig). For the examples of a
split, with g_i the derivative of example i's cross-entropy with respect to a scale on the reference
logits (IRM's, `methods.irm.irm_scale_gradient`), soft assignments q_i = sigmoid(u_i) maximise the
IRM penalty of the two environments, (mean_i q_i g_i)^2 + (mean_i (1 - q_i) g_i)^2, by Adam
(STEPS = 1000 steps at learning rate LR = 0.01: the distance the paper's 10^4 steps at 10^-3 let
Adam travel; u_i ~ N(0, 1) to start); the inferred attribute is m_i = [q_i > 0.5]
and the group (y, m). `eiil(data)` gives a HeldOut (source "eiil") whose inferred groups serve
wherever XRM's do (its logits are the reference model's, not held-out); the `eiil+...` methods call
`eiil_train_groups` to infer their training groups themselves.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import SPLITS, Dataset, Split
from ..methods.base import UniformSampler
from ..methods.irm import irm_scale_gradient
from ..train.config import TrainConfig
from ..train.loop import optimize, predict_logits
from ..train.models import build_model
from .base import HeldOut, is_degenerate, split_labels

STEPS = 1_000
LR = 1e-2
SEED_OFFSET = 2_000_003


def eiil_environments(logits: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
                      steps: int = STEPS, lr: float = LR) -> torch.Tensor:
    """Inferred environment m in {0, 1} of each example, from a reference model's logits and the labels."""
    g = irm_scale_gradient(logits.double().cpu(), y.cpu()).detach()
    u = torch.randn(len(y), generator=generator, dtype=torch.float64).requires_grad_()
    optimizer = torch.optim.Adam([u], lr=lr)
    for _ in range(steps):
        q = torch.sigmoid(u)
        penalty = (q * g).mean() ** 2 + ((1 - q) * g).mean() ** 2
        optimizer.zero_grad()
        (-penalty).backward()
        optimizer.step()
    return (torch.sigmoid(u.detach()) > 0.5).long()


def reference_model(train: Split, config: TrainConfig) -> tuple[nn.Module, torch.Generator]:
    """An ERM model of `config.arch` trained on the train split, and the generator it drew from."""
    generator = torch.Generator().manual_seed(config.seed + SEED_OFFSET)
    model = build_model(train.x[0].numel(), train.n_classes, config, generator).to(config.device)
    sampler = UniformSampler(len(train), config.batch_size, generator)

    def batch_loss(idx):
        logits = model(train.x[idx])
        return F.cross_entropy(logits, train.y[idx]), logits

    optimize(model, config, sampler, batch_loss, name="eiil (reference model)")
    return model.eval(), generator


def eiil_train_groups(train: Split, config: TrainConfig) -> torch.Tensor:
    """Group ids y * 2 + m of the train split with EIIL's inferred environments m."""
    model, generator = reference_model(train, config)
    m = eiil_environments(predict_logits(model, train.x), train.y, generator)
    return train.y * 2 + m.to(train.y.device)


def eiil(data: Dataset, config: TrainConfig | None = None) -> HeldOut:
    """EIIL's inferred attribute for every split (each split inferred on its own) and the reference logits."""
    config = config or TrainConfig()
    splits = {s: data.get(s, config.device) for s in SPLITS}
    model, generator = reference_model(splits["train"], config)
    logits = {s: predict_logits(model, split.x) for s, split in splits.items()}
    inferred = {s: eiil_environments(logits[s], split.y, generator) for s, split in splits.items() if len(split)}
    degenerate = is_degenerate(split_labels(data), inferred, data.n_classes)
    return HeldOut(logits["train"].cpu(), inferred, "eiil", degenerate=degenerate)
