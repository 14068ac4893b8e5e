"""EIIL (Creager et al.): environments inferred as the split that most violates invariance of a reference
model, and the group methods on them (`eiil+groupdro`, `eiil+rwg`, `eiil+subg`; `eiil+irm` is in irm).

A reference model is trained by ERM on the train split (the run's TrainConfig) as phase 1 sees it
(`memaware.train.backbones.phase1_data`): the model `config.arch` on features (a pretrained backbone's
frozen features among them), or a randomly initialised network trained end to end. For the
examples of a split, with g_i the derivative of example i's cross-entropy with respect to a scale on the
reference logits (IRM's, `methods.irm.irm_scale_gradient`), soft assignments q_i = sigmoid(u_i) maximise
the IRM penalty of the two environments, (mean_i q_i g_i)^2 + (mean_i (1 - q_i) g_i)^2, by Adam
(STEPS = 1000 steps at learning rate LR = 0.01: the distance the paper's 10^4 steps at 10^-3 let
Adam travel; u_i ~ N(0, 1) to start); the inferred attribute is m_i = [q_i > 0.5] and the group (y, m).
With groups="eiil" a method infers its training groups so (`eiil_train_groups`, called by
`Method.training_groups`), with no group labels and no phase 1; `memaware.heldout.eiil` gives the inferred
groups of every split as a HeldOut.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import UniformSampler, register
from .groupdro import GroupDRO
from .irm import irm_scale_gradient
from .rwg import RWG
from .subg import SUBG

STEPS = 1_000
LR = 1e-2
SEED_OFFSET = 2_000_003

for _name, _cls in (("eiil+groupdro", GroupDRO), ("eiil+rwg", RWG), ("eiil+subg", SUBG)):
    register(_name, groups="eiil")(_cls)


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


def reference_model(data, train, config) -> tuple[nn.Module, torch.Generator]:
    """An ERM model of `data` (`memaware.train.models.model_for`) trained on its train split `train`, in
    evaluation mode, and the generator it drew from."""
    from ..train.loop import batch_inputs, optimize
    from ..train.models import model_for

    generator = torch.Generator().manual_seed(config.seed + SEED_OFFSET)
    model = model_for(data, config, generator).to(config.device)
    sampler = UniformSampler(len(train), config.batch_size, generator)
    inputs = batch_inputs(train, config, everything=False)

    def batch_loss(idx):
        logits = model(inputs(idx))
        return F.cross_entropy(logits, train.y[idx]), logits

    optimize(model, config, sampler, batch_loss, name="eiil (reference model)")
    return model.eval(), generator


def eiil_train_groups(data, train, config) -> torch.Tensor:
    """Group ids y * 2 + m of the train split `train` of `data` with EIIL's inferred environments m."""
    from ..train.backbones import phase1_data
    from ..train.loop import predict_logits

    source = phase1_data(data, config)
    train = train if source is data else source.get("train", config.device)
    model, generator = reference_model(source, train, config)
    m = eiil_environments(predict_logits(model, train.x), train.y, generator)
    return train.y * 2 + m.to(train.y.device)
