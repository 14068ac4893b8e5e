"""The batched engine: many runs of one method on one data set, trained together by the one loop.

The runs' models (linear heads and MLPs on features, and XRM's twins) are stacked along a leading model
dimension, and `memaware.train.loop.optimize` trains the stack: the loss it differentiates has one entry
per run, and a stacked optimizer applies each run's own learning rate, weight decay and momentum. Each run
keeps what the one-model path gives it: its method set up by `prepare` from its own seeded generator, its
own sampler (drawn ahead on the host, a chunk of steps at a time, and padded to the largest batch), its
own method state (stacked: `Method.stack_state`, `batched_loss`, `batched_update`), its own evaluation
records and best checkpoints. A run whose loss stops being finite fails alone.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import SPLITS, Dataset
from ..errors import MemawareError
from ..methods.base import Method, UniformSampler
from .config import TrainConfig
from .loop import BestTracker, check_finite, evaluate, lr_decay, optimize, prepare, run_result

SHARED_SETTINGS = ("steps", "device", "optimizer", "lr_schedule", "checkpoint_freq", "arch", "hidden", "bias")
"""Training settings that every run of a stack shares; the others (lr, weight decay, momentum, batch size,
seed, head initialisation) are each run's own."""
MAX_STACK = 256  # runs per stack: bounds the memory of the gathered batches (runs x batch x features)
_CHUNK_ENTRIES = 1 << 22  # example positions drawn ahead per transfer to the device
_EVAL_ENTRIES = 1 << 25  # activations per chunk of a stacked evaluation


class NotStackable(MemawareError):
    """The runs cannot be stacked (inputs that are not in-memory features, models that are not stacks of
    Linear layers): the caller trains them with the one-model path instead."""


def towers(module: nn.Module) -> list[list[nn.Linear]] | None:
    """The Linear layers of each model in `module` (XRM's Twins hold two), or None when a model is not
    Flatten, then Linear layers with ReLU between."""
    from ..heldout.xrm import Twins

    out = []
    for model in (module.twins if isinstance(module, Twins) else [module]):
        layers = list(model) if isinstance(model, nn.Sequential) else []
        layers = layers[1:] if layers and isinstance(layers[0], nn.Flatten) else layers
        linears, relus = layers[0::2], layers[1::2]
        if not (len(layers) % 2 and all(isinstance(l, nn.Linear) for l in linears)
                and all(isinstance(r, nn.ReLU) for r in relus)):
            return None
        out.append(linears)
    return out


class OwnRows(torch.autograd.Function):
    """x[idx[m, :n_m]] @ w[m].T for each model m, zero on its padding: one matrix product per model and
    no padded rows (on a CPU, faster than a batched product of skinny matrices)."""

    @staticmethod
    def forward(ctx, x, idx, lengths, w):
        rows = [x.index_select(0, idx[m, :n]) for m, n in enumerate(lengths)]
        out = x.new_zeros(idx.shape[0], idx.shape[1], w.shape[1])
        for m, r in enumerate(rows):
            torch.mm(r, w[m].T, out=out[m, :len(r)])
        ctx.rows, ctx.shape = rows, w.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        grad = grad_out.new_empty(ctx.shape)
        for m, r in enumerate(ctx.rows):
            torch.mm(grad_out[m, :len(r)].T, r, out=grad[m])
        return None, None, None, grad


class StackedModels(nn.Module):
    """M models of one shape, each of T towers (T = 2 for XRM's twins) of Linear layers with ReLU between.

    forward(x, idx, lengths) -> logits (M, T, B, K): model m on rows idx[m] of x (its first lengths[m]
    are its own), or on all of x when idx is None. The first layer of a model's towers is one
    (T * width, d) matrix, later layers one (in, out) matrix per tower.
    """

    def __init__(self, members: list[list[list[nn.Linear]]]):
        super().__init__()
        shapes = {tuple((l.in_features, l.out_features, l.bias is not None) for t in m for l in t) for m in members}
        if len(shapes) != 1:
            raise MemawareError("the batched engine stacks models of one shape only")
        self.n_models, self.n_towers = len(members), len(members[0])
        n_layers = len(members[0][0])
        self.has_bias = members[0][0][0].bias is not None
        with torch.no_grad():
            first = [torch.cat([t[0].weight for t in m], 0) for m in members]
            rest = [[t[i].weight.T for m in members for t in m] for i in range(1, n_layers)]
            self.weights = nn.ParameterList([nn.Parameter(torch.stack(first).contiguous())] +
                                            [nn.Parameter(torch.stack(w).contiguous()) for w in rest])
            if self.has_bias:
                first_b = [torch.cat([t[0].bias for t in m])[None] for m in members]
                rest_b = [[t[i].bias[None] for m in members for t in m] for i in range(1, n_layers)]
                self.biases = nn.ParameterList([nn.Parameter(torch.stack(first_b))] +
                                               [nn.Parameter(torch.stack(b)) for b in rest_b])

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None, lengths: list[int] | None = None):
        m, t, w0 = self.n_models, self.n_towers, self.weights[0]
        if x.device.type == "cpu" and len(self.weights) > 1:
            if idx is None:
                return torch.stack([self.one(i, x) for i in range(m)])
            return torch.stack([F.pad(self.one(i, x.index_select(0, idx[i, :n])), (0, 0, 0, idx.shape[1] - n))
                                for i, n in enumerate(lengths)])
        if idx is None:
            h = (x @ w0.reshape(-1, x.shape[1]).T).view(len(x), m, -1).transpose(0, 1)
        elif x.device.type == "cpu":
            h = OwnRows.apply(x, idx, lengths, w0)
        else:
            h = torch.bmm(x.index_select(0, idx.reshape(-1)).view(*idx.shape, -1), w0.transpose(1, 2))
        if self.has_bias:
            h = h + self.biases[0]
        b = h.shape[1]
        h = h.view(m, b, t, -1).transpose(1, 2).reshape(m * t, b, -1)
        for i in range(1, len(self.weights)):
            h = torch.bmm(h.relu(), self.weights[i])
            if self.has_bias:
                h = h + self.biases[i]
        return h.view(m, t, b, -1)

    def one(self, m: int, x: torch.Tensor) -> torch.Tensor:
        """Model m's logits (T, n, K) on its own rows x (n, d): on a CPU, deeper models run one by one,
        without the padding of a batched product."""
        t, rows = self.n_towers, slice(m * self.n_towers, (m + 1) * self.n_towers)
        h = x @ self.weights[0][m].T
        if self.has_bias:
            h = h + self.biases[0][m]
        h = h.view(len(x), t, -1).transpose(0, 1)
        for i in range(1, len(self.weights)):
            h = torch.bmm(h.relu(), self.weights[i][rows])
            if self.has_bias:
                h = h + self.biases[i][rows]
        return h

    @torch.no_grad()
    def write(self, m: int, member: list[list[nn.Linear]]) -> None:
        """Copy model m's weights into its own module's Linear layers."""
        for t, layers in enumerate(member):
            for i, layer in enumerate(layers):
                if i == 0:
                    cols = slice(t * layer.out_features, (t + 1) * layer.out_features)
                    layer.weight.copy_(self.weights[0][m, cols])
                    if self.has_bias:
                        layer.bias.copy_(self.biases[0][m, 0, cols])
                else:
                    layer.weight.copy_(self.weights[i][m * self.n_towers + t].T)
                    if self.has_bias:
                        layer.bias.copy_(self.biases[i][m * self.n_towers + t, 0])

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (M, T, n, K) on inputs (n, d) shared by every model, a chunk of rows at a time."""
        width = max(w.shape[-1] for w in self.weights) * self.n_models * self.n_towers
        rows = max(1, _EVAL_ENTRIES // width)
        return torch.cat([self(x[i:i + rows]) for i in range(0, len(x), rows)], 2)


class StackedOptimizer:
    """torch.optim's SGD (momentum, weight decay), Adam or AdamW update, with each stacked model's own
    learning rate, weight decay and momentum, times the schedule's factor (`schedule` steps it)."""

    betas, eps = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, as make_optimizer uses them

    def __init__(self, params, configs: list[TrainConfig]):
        self.params = list(params)
        self.kind = configs[0].optimizer
        self.use_momentum = any(c.momentum > 0 for c in configs)
        self.use_decay = any(c.weight_decay > 0 for c in configs)
        self.schedule = Schedule(lr_decay(configs[0]))
        self.state: dict = {p: {} for p in self.params}
        values = {k: [float(getattr(c, k)) for c in configs] for k in ("lr", "weight_decay", "momentum")}
        self.per_model = {}
        for p in self.params:
            shape = (-1,) + (1,) * (p.dim() - 1)
            repeat = p.shape[0] // len(configs)
            self.per_model[p] = {k: torch.tensor(v, device=p.device).repeat_interleave(repeat).view(shape)
                                 for k, v in values.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        factor = self.schedule.factor
        for p in self.params:
            if p.grad is None:
                continue
            h = self.per_model[p]
            lr = h["lr"] if factor == 1.0 else h["lr"] * factor
            if self.kind == "sgd":
                self._sgd(p, lr, h)
            else:
                self._adam(p, lr, h)

    def _sgd(self, p, lr, h):
        d_p = torch.addcmul(p.grad, h["weight_decay"], p) if self.use_decay else p.grad
        if self.use_momentum:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = d_p
            else:
                state["momentum_buffer"].mul_(h["momentum"]).add_(d_p)
            d_p = state["momentum_buffer"]
        p.sub_(lr * d_p)

    def _adam(self, p, lr, h):
        state = self.state[p]
        if not state:
            state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        state["step"] += 1
        grad = p.grad
        if self.use_decay and self.kind == "adamw":
            p.mul_(1 - lr * h["weight_decay"])
        elif self.use_decay:
            grad = torch.addcmul(grad, h["weight_decay"], p)
        beta1, beta2 = self.betas
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = state["exp_avg_sq"].sqrt().div_(math.sqrt(1 - beta2 ** state["step"])).add_(self.eps)
        p.addcdiv_(state["exp_avg"], denom.mul_((1 - beta1 ** state["step"]) / lr), value=-1)


class Schedule:
    """LambdaLR's factor without torch.optim: decay(t) for the optimizer's step t."""

    def __init__(self, decay):
        self.decay, self.taken = decay, 0
        self.factor = decay(0)

    def step(self) -> None:
        self.taken += 1
        self.factor = self.decay(self.taken)


@dataclass
class StackBatch:
    """One step's batches of every stacked model, on the device."""

    idx: torch.Tensor  # (M, B) example positions; a model's padding repeats its first example
    y: torch.Tensor  # (M, B) their labels
    weight: torch.Tensor  # (M, B) 1 / B_m on a model's own B_m examples, 0 on its padding
    draws: torch.Tensor | None  # (M, B) the random numbers of the method's update (XRM's flips)

    def to(self, device) -> "StackBatch":
        return self


class StackSampler:
    """Each model's own sampler (and its method's draws, from the same generator, in the one-model path's
    order), drawn ahead a chunk of steps at a time and sent to the device in one transfer per chunk.

    `shared` is True when every model trains on the whole train split each step (no gather needed)."""

    def __init__(self, samplers: list, methods: list[Method], y: torch.Tensor, steps: int, device):
        self.samplers, self.methods, self.y, self.steps, self.device = samplers, methods, y, steps, device
        self.lengths = [s.batch_size for s in samplers]
        self.width = max(self.lengths)
        self.shared = all(isinstance(s, UniformSampler) and s.everything for s in samplers)
        self.noisy = type(methods[0]).draws is not Method.draws
        self.chunk = max(1, _CHUNK_ENTRIES // (len(samplers) * self.width))
        self.drawn = 0
        self.queue: deque[StackBatch] = deque()

    def __iter__(self):
        return self

    def __next__(self) -> StackBatch:
        if not self.queue:
            self.fill(min(self.chunk, max(1, self.steps - self.drawn)))
        return self.queue.popleft()

    def fill(self, n_steps: int) -> None:
        shape = (n_steps, len(self.samplers), self.width)
        idx, weight = np.empty(shape, np.int64), np.zeros(shape, np.float32)
        draws = np.zeros(shape, np.float32) if self.noisy else None
        for s in range(n_steps):
            for m, (sampler, method) in enumerate(zip(self.samplers, self.methods)):
                batch = next(sampler).numpy()
                if len(batch) != self.lengths[m]:
                    raise MemawareError("the batched engine needs samplers of a fixed batch size")
                idx[s, m, :len(batch)], idx[s, m, len(batch):] = batch, batch[0]
                weight[s, m, :len(batch)] = 1.0 / len(batch)
                if draws is not None:
                    draws[s, m, :len(batch)] = method.draws(len(batch)).numpy()
        self.drawn += n_steps
        on_device = [None if a is None else torch.from_numpy(a).to(self.device) for a in (idx, weight, draws)]
        on_device.insert(1, self.y[on_device[0]])
        for s in range(n_steps):
            self.queue.append(StackBatch(*(None if a is None else a[s] for a in on_device)))


class FailureWatch:
    """optimize's finiteness check for a stack: keeps each checked loss vector on the device and, when
    settled (at evaluations and at the end), fails each model whose loss was not finite, with the message
    the one-model path raises."""

    def __init__(self):
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.failed: dict[int, MemawareError] = {}
        self.name = "training"

    def __call__(self, loss: torch.Tensor, name: str, step: int) -> None:
        self.name = name
        self.pending.append((step, loss))

    def settle(self) -> None:
        if not self.pending:
            return
        losses = torch.stack([loss for _, loss in self.pending]).cpu()
        for (step, _), row in zip(self.pending, losses):
            for m in torch.nonzero(~torch.isfinite(row)).squeeze(1).tolist():
                if m not in self.failed:
                    try:
                        check_finite(row[m], self.name, step)
                    except MemawareError as err:
                        self.failed[m] = err
        self.pending.clear()


class _Weights:
    """Model m's weights as a state dict, written into its own module only when asked for."""

    def __init__(self, stack: StackedModels, m: int, member, module: nn.Module):
        self.stack, self.m, self.member, self.module = stack, m, member, module

    def state_dict(self):
        self.stack.write(self.m, self.member)
        return self.module.state_dict()


def check_stackable(methods: list[Method], configs: list[TrainConfig]) -> None:
    if len({m.registry_name for m in methods}) > 1:
        raise MemawareError("the runs of a stack must share their method")
    for key in SHARED_SETTINGS:
        if len({str(getattr(c, key)) for c in configs}) > 1:
            raise MemawareError(f"the runs of a stack must share '{key}'")


@dataclass
class Stack:
    """A trained stack: its models and, per run, a RunResult or the MemawareError that stopped it."""

    models: StackedModels
    outcomes: list


def train_stack(data: Dataset, methods: list[Method], configs: list[TrainConfig], heldout=None,
                modules: list[nn.Module | None] | None = None, evaluate_splits: bool = True) -> Stack:
    """Train one run per (method, config) together; every method of one class, every config sharing
    SHARED_SETTINGS. `modules` are the runs' own models (default: those the configs name)."""
    check_stackable(methods, configs)
    config, n_models = configs[0], len(configs)
    splits = {s: data.get(s, config.device) for s in SPLITS}
    train = splits["train"]
    if not isinstance(train.x, torch.Tensor):
        raise NotStackable("the batched engine trains on in-memory features only")
    runs = [prepare(data, splits, method, c, heldout, module)
            for method, c, module in zip(methods, configs, modules or [None] * n_models)]
    members = [towers(model) for model, _, _ in runs]
    if any(m is None for m in members):
        raise NotStackable("the batched engine stacks Linear and ReLU layers only")
    stack = StackedModels(members).to(config.device)
    state = stack_states([m.stack_state() for m in methods])
    optimizer = StackedOptimizer(stack.parameters(), configs)
    sampler = StackSampler([s for _, _, s in runs], methods, train.y, config.steps, config.device)
    x, lead, watch = train.x.reshape(len(train), -1), methods[0], FailureWatch()
    histories, trackers = [[] for _ in runs], [BestTracker() for _ in runs]
    eval_splits = {s: split.to("cpu") for s, split in splits.items()}
    inferred = None if heldout is None else heldout.inferred

    def batch_loss(batch):
        logits = stack(x) if sampler.shared else stack(x, batch.idx, sampler.lengths)
        logits = logits.squeeze(1) if stack.n_towers == 1 else logits
        return lead.batched_loss(state, logits, batch.y, batch.idx, batch.weight), logits

    def after_step(step, batch, logits, loss):
        lead.batched_update(state, logits, batch.y, batch.idx, batch.weight, batch.draws)
        if evaluate_splits and (step == config.steps - 1 or (config.checkpoint_freq and
                                                             step % config.checkpoint_freq == 0)):
            watch.settle()
            evaluate_stack(stack, splits, eval_splits, inferred, step, loss.cpu(), members, runs, histories,
                           trackers, watch.failed)

    optimize(stack, config, sampler, batch_loss, after_step, lead.registry_name,
             optimizer=(optimizer, optimizer.schedule), check=watch)
    watch.settle()
    outcomes = []
    for m, (method, c, (model, predictor, _)) in enumerate(zip(methods, configs, runs)):
        stack.write(m, members[m])
        method.load_state_dict({k: state[k][m] for k in method.state_dict() if k in state})
        outcomes.append(watch.failed.get(m) or run_result(method, c, heldout, histories[m], trackers[m], predictor))
    return Stack(stack, outcomes)


def evaluate_stack(stack: StackedModels, splits, eval_splits, inferred, step, loss, members, runs, histories,
                   trackers, failed) -> None:
    """Every live model's evaluation record at `step`: logits of all models at once, then, per model,
    the one-model path's `evaluate` on them."""
    logits = {s: stack.predict(split.x.reshape(len(split), -1))[:, 0].cpu() for s, split in splits.items()}
    for m, (_, predictor, _) in enumerate(runs):
        if m in failed:
            continue
        own = {s: replace(split, x=logits[s][m]) for s, split in eval_splits.items()}
        record = {"step": step, "loss": float(loss[m]), **evaluate(nn.Identity(), own, inferred)}
        histories[m].append(record)
        trackers[m].offer(record, _Weights(stack, m, members[m], predictor))


def stack_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Each key's tensors along a new leading model dimension (a view of one copy when all are equal)."""
    out = {}
    for key, first in states[0].items():
        same = all(s[key] is first or torch.equal(s[key], first) for s in states[1:])
        out[key] = first.unsqueeze(0).expand(len(states), *first.shape) if same else torch.stack(
            [s[key] for s in states])
    return out


def fit_many(data: Dataset, methods: list[Method], configs: list[TrainConfig], heldout=None) -> list:
    """`fit` for many runs at once: per run a RunResult, or the MemawareError that stopped it (a run whose
    loss stopped being finite), as `fit` would have raised it."""
    return train_stack(data, methods, configs, heldout).outcomes


def xrm_many(data: Dataset, configs: list[TrainConfig]) -> list:
    """`heldout.xrm` for many runs at once: one HeldOut per config."""
    from ..heldout.xrm import XRMTwins, build_twins, heldout_from_twin_logits

    methods = [XRMTwins() for _ in configs]
    done = train_stack(data, methods, configs, modules=[build_twins(data, c) for c in configs],
                       evaluate_splits=False)
    failure = next((o for o in done.outcomes if isinstance(o, MemawareError)), None)
    if failure is not None:
        raise failure
    device = configs[0].device
    logits = {s: done.models.predict(torch.as_tensor(data.x[data.mask(s)]).reshape(int(data.mask(s).sum()), -1)
                                     .to(device)) for s in SPLITS}
    return [heldout_from_twin_logits(data, {s: v[m] for s, v in logits.items()}, method)
            for m, method in enumerate(methods)]
