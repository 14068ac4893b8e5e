"""The batched engine: many runs of one method on one data set, trained together by the one loop.

The runs' models (linear heads and MLPs on features, and XRM's twins) are stacked along a leading model
dimension, and `memaware.train.loop.optimize` trains the stack: the loss it differentiates has one entry
per run, and a stacked optimizer applies each run's own learning rate, weight decay and momentum. Each run
keeps what the one-model path gives it: its method set up by `prepare` from its own seeded generator, its
own sampler (drawn ahead on the host, a chunk of steps at a time, and padded to the largest batch), its
own method state (stacked: `Method.stack_state`, `batched_loss`, `batched_update`), its own evaluation
records and best checkpoints. A run whose loss stops being finite fails alone. On a GPU every training
step after the first few is replayed from a CUDA graph (`GraphedStep`), and each evaluation computes the
metrics of all models on the device, with one transfer to the host.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import SPLITS, Dataset
from ..errors import MemawareError
from ..metrics import host_copy, to_host
from ..methods.base import Method, UniformSampler
from .config import TrainConfig
from .loop import (BestTracker, check_finite, evaluation_records, evaluation_values, lr_decay, optimize,
                   prepare, run_result)
from .models import Twins

SHARED_SETTINGS = ("steps", "device", "optimizer", "lr_schedule", "checkpoint_freq", "arch", "hidden", "bias")
"""Training settings that every run of a stack shares; the others (lr, weight decay, momentum, batch size,
seed, head initialisation) are each run's own."""
MAX_STACK = 256  # runs per stack: bounds the memory of the gathered batches (runs x batch x features)
_CHUNK_ENTRIES = 1 << 22  # example positions drawn ahead per transfer to the device
_EVAL_ENTRIES = 1 << 25  # activations per chunk of a stacked evaluation
NARROW_PRODUCT = 1280
"""On a GPU, a first-layer product of fewer outputs than this (models x the layer's width x batch rows)
gets a slow kernel from cuBLAS (on an H100 with CUDA 13, about 50 us for a step's product and gradient
against 18 us just above it): the engine pads such batches with rows of weight 0 up to this size."""


class NotStackable(MemawareError):
    """The runs cannot be stacked (inputs that are not in-memory features, models that are not stacks of
    Linear layers): the caller trains them with the one-model path instead."""


def towers(module: nn.Module) -> list[list[nn.Linear]] | None:
    """The Linear layers of each model in `module` (XRM's Twins hold two), or None when a model is not
    Flatten, then Linear layers with ReLU between."""
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
    """rows[m, :n_m] @ w[m].T for each model m, zero on its padding: one matrix product per model and
    no padded rows (on a CPU, faster than a batched product of skinny matrices)."""

    @staticmethod
    def forward(ctx, gathered, lengths, w):
        rows = [gathered[m, :n] for m, n in enumerate(lengths)]
        out = gathered.new_zeros(gathered.shape[0], gathered.shape[1], w.shape[1])
        for m, r in enumerate(rows):
            torch.mm(r, w[m].T, out=out[m, :len(r)])
        ctx.rows, ctx.shape = rows, w.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        grad = grad_out.new_empty(ctx.shape)
        for m, r in enumerate(ctx.rows):
            torch.mm(grad_out[m, :len(r)].T, r, out=grad[m])
        return None, None, grad


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
        self.rows_buffer: torch.Tensor | None = None  # see gather
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
        rows = None if idx is None or x.device.type != "cpu" else self.gather(x, idx)
        if x.device.type == "cpu" and len(self.weights) > 1:
            layers = self.per_model()
            if idx is None:
                return torch.stack([self.one(i, x, layers) for i in range(m)])
            return torch.stack([F.pad(self.one(i, rows[i, :n], layers), (0, 0, 0, idx.shape[1] - n))
                                for i, n in enumerate(lengths)])
        if idx is None:  # one product for every model, (M * T * width, d) by (d, n): the faster order on a CPU
            h = (w0.reshape(-1, x.shape[1]) @ x.T).view(m, -1, len(x)).transpose(1, 2)
        elif rows is not None and min(lengths) < idx.shape[1]:
            h = OwnRows.apply(rows, lengths, w0)
        else:  # one batched product, in the order that is faster on a CPU (no padding) and on an H100
            rows = rows if rows is not None else x.index_select(0, idx.reshape(-1)).view(*idx.shape, -1)
            h = torch.bmm(w0, rows.transpose(1, 2)).transpose(1, 2)
        if self.has_bias:
            h = h + self.biases[0]
        b = h.shape[1]
        h = h.view(m, b, t, -1).transpose(1, 2).reshape(m * t, b, -1)
        for i in range(1, len(self.weights)):
            h = torch.bmm(h.relu(), self.weights[i])
            if self.has_bias:
                h = h + self.biases[i]
        return h.view(m, t, b, -1)

    def gather(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The rows idx (M, B) of x, (M, B, d), in a buffer this stack keeps from step to step: on a CPU a
        step's batches can take tens of megabytes, and a fresh allocation of that size is new memory
        mapped and zeroed by the system at every step (several times the cost of the gather itself). A
        step's backward pass reads the buffer before the next step's forward pass writes it."""
        shape = (*idx.shape, x.shape[1])
        buffer = self.rows_buffer
        if buffer is None or buffer.shape != shape or buffer.dtype != x.dtype:
            buffer = self.rows_buffer = x.new_empty(shape)
        torch.index_select(x, 0, idx.reshape(-1), out=buffer.view(-1, x.shape[1]))
        return buffer

    def per_model(self) -> list[tuple]:
        """Each layer's weights and biases split along the stacked dimension (model, or model and tower):
        one model's product then reads its own slices, and their gradients are gathered by one stack."""
        biases = self.biases if self.has_bias else [None] * len(self.weights)
        return [(w.unbind(0), None if b is None else b.unbind(0)) for w, b in zip(self.weights, biases)]

    def one(self, m: int, x: torch.Tensor, layers: list[tuple]) -> torch.Tensor:
        """Model m's logits (T, n, K) on its own rows x (n, d), from `per_model`'s layers: on a CPU,
        deeper models run one by one, without the padding of a batched product."""
        t = self.n_towers
        (w0, b0), towers = layers[0], slice(m * t, (m + 1) * t)
        h = x @ w0[m].T if b0 is None else torch.addmm(b0[m], x, w0[m].T)
        if t == 1:  # one tower: products of matrices, as nn.Linear computes them
            for w, b in layers[1:]:
                h = h.relu() @ w[m] if b is None else torch.addmm(b[m], h.relu(), w[m])
            return h.unsqueeze(0)
        h = h.view(len(x), t, -1).transpose(0, 1)
        for w, b in layers[1:]:
            h = torch.bmm(h.relu(), torch.stack(w[towers]))
            if b is not None:
                h = h + torch.stack(b[towers])
        return h

    @torch.no_grad()
    def write(self, m: int, member: list[list[nn.Linear]], snapshot: list[torch.Tensor] | None = None) -> None:
        """Copy model m's weights (from `snapshot`, a copy of the stack's parameters, if given) into its own
        module's Linear layers."""
        params = list(self.parameters()) if snapshot is None else snapshot
        weights, biases = params[:len(self.weights)], params[len(self.weights):]
        for t, layers in enumerate(member):
            for i, layer in enumerate(layers):
                if i == 0:
                    cols = slice(t * layer.out_features, (t + 1) * layer.out_features)
                    layer.weight.copy_(weights[0][m, cols])
                    if self.has_bias:
                        layer.bias.copy_(biases[0][m, 0, cols])
                else:
                    layer.weight.copy_(weights[i][m * self.n_towers + t].T)
                    if self.has_bias:
                        layer.bias.copy_(biases[i][m * self.n_towers + t, 0])

    def snapshot(self) -> list[torch.Tensor]:
        """A copy of the stack's parameters (on their device, without waiting), for `write`."""
        return [p.detach().clone() for p in self.parameters()]

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (M, T, n, K) on inputs (n, d) shared by every model, a chunk of rows at a time."""
        width = max(w.shape[-1] for w in self.weights) * self.n_models * self.n_towers
        rows = max(1, _EVAL_ENTRIES // width)
        return torch.cat([self(x[i:i + rows]) for i in range(0, len(x), rows)], 2)


class StackedOptimizer:
    """torch.optim's SGD (momentum, weight decay), Adam or AdamW update, with each stacked model's own
    learning rate, weight decay and momentum, times the schedule's factor. What changes from one step to
    the next (the schedule's factor, Adam's bias corrections) is read from tables on the device at the
    step count that `counter` keeps there, so that a step can be captured in a CUDA graph and replayed."""

    betas, eps = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, as make_optimizer uses them

    def __init__(self, params, configs: list[TrainConfig]):
        self.params = list(params)
        config, device = configs[0], self.params[0].device
        self.kind = config.optimizer
        self.use_momentum = any(c.momentum > 0 for c in configs)
        self.use_decay = any(c.weight_decay > 0 for c in configs)
        self.counter = StepCounter(device)
        decay = lr_decay(config)
        factors = [decay(t) for t in range(config.steps)]
        self.factors = None if all(f == 1.0 for f in factors) else torch.tensor(factors, device=device)
        step = np.arange(1, config.steps + 1, dtype=np.float64)  # Adam's step number at each step
        beta1, beta2 = self.betas
        self.corrections = torch.tensor(np.stack([1 - beta1 ** step, np.sqrt(1 - beta2 ** step)], 1),
                                        dtype=torch.float32, device=device)
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
        taken = self.counter.taken
        factor = None if self.factors is None else self.factors.index_select(0, taken)
        corrections = None if self.kind == "sgd" else self.corrections.index_select(0, taken)[0]
        for p in self.params:
            if p.grad is None:
                continue
            h = self.per_model[p]
            lr = h["lr"] if factor is None else h["lr"] * factor
            if self.kind == "sgd":
                self._sgd(p, lr, h)
            else:
                self._adam(p, lr, h, corrections)

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

    def _adam(self, p, lr, h, corrections):
        state = self.state[p]
        if not state:  # denom: a buffer kept from step to step (see StackedModels.gather)
            state.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p), denom=torch.empty_like(p))
        grad = p.grad
        if self.use_decay and self.kind == "adamw":
            p.mul_(1 - lr * h["weight_decay"])
        elif self.use_decay:
            grad = torch.addcmul(grad, h["weight_decay"], p)
        beta1, beta2 = self.betas
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = torch.sqrt(state["exp_avg_sq"], out=state["denom"]).div_(corrections[1]).add_(self.eps)
        p.addcdiv_(state["exp_avg"], denom.mul_(corrections[0] / lr), value=-1)


class StepCounter:
    """The stacked optimizer's scheduler: the number of steps taken, on the device."""

    def __init__(self, device):
        self.taken = torch.zeros(1, dtype=torch.long, device=device)

    def step(self) -> None:
        self.taken.add_(1)


def record_cuda_graph(compute: Callable[[], Any]) -> Callable[[], Any]:
    """`compute()` (returning tensors) captured once in a CUDA graph: a function that replays the graph
    and returns its outputs, the same tensors at every replay (each replay overwrites them)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = compute()

    def replay():
        graph.replay()
        return outputs

    return replay


def on_side_stream(stream, compute: Callable[[], Any]) -> Any:
    """`compute()` on `stream` (CUDA's warm-up before a capture), ordered after and before the current
    stream's work; on the current stream when `stream` is None."""
    if stream is None:
        return compute()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        output = compute()
    torch.cuda.current_stream().wait_stream(stream)
    return output


class GraphedStep:
    """optimize's step replayed from a recording (its `wrap_step`; `record_cuda_graph` on a GPU): the first
    WARMUP steps run as they are (on a side stream on a GPU, as capture asks), the next one is recorded
    once, and every later step replays it. The recorded step reads its batch from the sampler's chunk on
    the device at the position that the sampler keeps there and moves on (`StackSampler.batch_on_device`):
    a replay is one launch, with no copy. A method's state entry that a step replaces is copied back,
    within the step, into the tensor that the next step reads."""

    WARMUP = 3

    def __init__(self, take_step, state: dict[str, torch.Tensor], sampler: "StackSampler", record):
        self.take_step, self.state, self.sampler, self.record = take_step, state, sampler, record
        self.taken, self.replay = 0, None
        self.stream = torch.cuda.Stream() if torch.device(sampler.device).type == "cuda" else None

    def __call__(self, batch: StackBatch) -> tuple[torch.Tensor, torch.Tensor]:
        self.taken += 1
        if self.taken <= self.WARMUP:
            return on_side_stream(self.stream, lambda: self.take_step(batch))
        if self.replay is None:
            self.sampler.follow_on_device()
            self.replay = self.record(self.step_on_device)
        return self.replay()

    def step_on_device(self) -> tuple[torch.Tensor, torch.Tensor]:
        read = dict(self.state)
        output = self.take_step(self.sampler.batch_on_device())
        for key, value in self.state.items():
            if value is not read[key]:
                read[key].copy_(value)
        self.state.update(read)
        return output


@dataclass
class StackBatch:
    """One step's batches of every stacked model, on the device."""

    idx: torch.Tensor  # (M, B) example positions; a model's padding repeats its first example
    y: torch.Tensor  # (M, B) their labels
    weight: torch.Tensor  # (M, B) 1 / B_m on a model's own B_m examples, 0 on its padding
    draws: torch.Tensor | None  # (M, B) the random numbers of the method's update (XRM's flips)

    def to(self, device) -> "StackBatch":
        return self

    def tensors(self) -> tuple:
        return self.idx, self.y, self.weight, self.draws


ON_DEVICE = StackBatch(None, None, None, None)
"""What a StackSampler serves once followed on the device: the recorded step reads the batch there."""


class StackSampler:
    """Each model's own sampler (and its method's draws, from the same generator, in the one-model path's
    order), drawn ahead a chunk of steps at a time and sent to the device in one transfer per chunk and
    tensor; each step's StackBatch is a view of its row of the chunk. When `graphed`, the chunks go into
    buffers that every chunk reuses and, after `follow_on_device`, the sampler keeps the row of the step
    being served in a tensor on the device, so that a recorded step (a CUDA graph) reads its batch there
    and moves the position on itself (`batch_on_device`).

    `shared` is True when every model trains on the whole train split each step (no gather needed)."""

    def __init__(self, samplers: list, methods: list[Method], y: torch.Tensor, steps: int, device,
                 graphed: bool = False, min_width: int = 1):
        self.samplers, self.methods, self.y, self.steps, self.device = samplers, methods, y, steps, device
        self.graphed = graphed  # chunks in buffers that every chunk reuses, for a recorded step to read
        self.lengths = [s.batch_size for s in samplers]
        self.width = max(*self.lengths, min_width)  # rows of a step's batch; each model's own come first
        self.shared = all(isinstance(s, UniformSampler) and s.everything for s in samplers)
        self.noisy = type(methods[0]).draws is not Method.draws
        self.chunk = max(1, min(steps, _CHUNK_ENTRIES // (len(samplers) * self.width)))
        self.drawn = self.filled = 0
        self.buffers: StackBatch | None = None
        self.position: torch.Tensor | None = None  # on the device, once followed: the row being served
        self.rows: StackBatch | None = None  # the chunk's batches, a row a step
        self.queue: deque[int] = deque()  # the rows not served yet

    def __iter__(self):
        return self

    def __next__(self) -> StackBatch:
        if not self.queue:
            self.fill(min(self.chunk, max(1, self.steps - self.drawn)))
        s = self.queue.popleft()
        if self.position is not None:  # the step reads its batch at the position on the device
            return ON_DEVICE
        return StackBatch(*(None if b is None else b[s] for b in self.rows.tensors()))

    def fill(self, n_steps: int) -> None:
        shape = (n_steps, len(self.samplers), self.width)
        idx, weight = np.empty(shape, np.int64), np.zeros(shape, np.float32)
        draws = np.zeros(shape, np.float32) if self.noisy else None
        for m, (sampler, method, n) in enumerate(zip(self.samplers, self.methods, self.lengths)):
            step = 0
            for block in batch_blocks(sampler, n_steps):
                if block.shape[1] != n:
                    raise MemawareError("the batched engine needs samplers of a fixed batch size")
                steps = slice(step, step + len(block))
                idx[steps, m, :n], idx[steps, m, n:] = block.numpy(), block[:, :1].numpy()
                weight[steps, m, :n] = 1.0 / n
                if draws is not None:
                    draws[steps, m, :n] = method.draws(block.numel()).view(block.shape).numpy()
                step += len(block)
        self.drawn, self.filled = self.drawn + n_steps, n_steps
        host = [torch.from_numpy(a) if a is not None else None for a in (idx, weight, draws)]
        if self.graphed:
            self.rows = self.rows_in_buffers(host, n_steps)
        else:
            idx, weight, draws = (None if a is None else a.to(self.device) for a in host)
            self.rows = StackBatch(idx, self.y[idx], weight, draws)
        self.queue.extend(range(n_steps))

    def rows_in_buffers(self, host: list, n_steps: int) -> StackBatch:
        """The chunk's first n_steps rows, written from the host arrays (idx, weight, draws) into the
        buffers that every chunk reuses (a CUDA graph reads them), the position back to the first row."""
        if self.buffers is None:
            chunk = (self.chunk, *host[0].shape[1:])
            self.buffers = StackBatch(*(None if a is None else torch.empty(chunk, dtype=a.dtype, device=self.device)
                                        for a in (host[0], self.y, host[1], host[2])))
        rows = StackBatch(*(None if b is None else b[:n_steps] for b in self.buffers.tensors()))
        for buffer, values in zip((rows.idx, rows.weight, rows.draws), host):
            if values is not None:
                buffer.copy_(values)
        torch.index_select(self.y, 0, rows.idx.reshape(-1), out=rows.y.view(-1))
        if self.position is not None:
            self.position.zero_()
        return rows

    def follow_on_device(self) -> None:
        """Keep, from now on, the chunk's row of the batch last served in a tensor on the device."""
        self.position = torch.full((1,), self.filled - len(self.queue) - 1, dtype=torch.long, device=self.device)

    def batch_on_device(self) -> StackBatch:
        """The batch at the device's position, which moves on by one: for a step captured in a CUDA graph."""
        batch = StackBatch(*(None if b is None else b.index_select(0, self.position).squeeze(0)
                             for b in self.buffers.tensors()))
        self.position.add_(1)
        return batch


def batch_rows(stack: StackedModels, device) -> int:
    """The fewest rows of a step's batch: on a GPU, enough for a first-layer product of NARROW_PRODUCT
    outputs."""
    if torch.device(device).type != "cuda":
        return 1
    return -(-NARROW_PRODUCT // (stack.n_models * stack.weights[0].shape[1]))


def batch_blocks(sampler, n_steps: int) -> Iterator[torch.Tensor]:
    """The sampler's next n_steps batches as (k, batch size) blocks (UniformSampler.blocks; one step a
    block for other samplers)."""
    if isinstance(sampler, UniformSampler):
        return sampler.blocks(n_steps)
    return (next(sampler).unsqueeze(0) for _ in range(n_steps))


class FailureWatch:
    """optimize's finiteness check for a stack: keeps a copy of each checked loss vector on the host (made
    without waiting for the device) and, when settled (as each checkpoint is offered, and at the end),
    fails each model whose loss was not finite, with the message the one-model path raises."""

    def __init__(self):
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.failed: dict[int, MemawareError] = {}
        self.name, self.on_gpu = "training", False

    def __call__(self, loss: torch.Tensor, name: str, step: int) -> None:
        self.name, self.on_gpu = name, loss.device.type == "cuda"
        self.pending.append((step, host_copy(loss)))  # a graph's replay writes its next loss where this one is

    def settle(self, upto: int | None = None) -> None:
        """Check the losses of the steps up to `upto` (the host has waited for the device up to there), or
        of every step checked (waiting for the device)."""
        if upto is None and self.on_gpu:
            torch.cuda.current_stream().synchronize()
        ready = [(step, loss) for step, loss in self.pending if upto is None or step <= upto]
        self.pending = self.pending[len(ready):]
        for step, row in ready:
            for m in torch.nonzero(~torch.isfinite(row)).squeeze(1).tolist():
                if m not in self.failed:
                    try:
                        check_finite(row[m], self.name, step)
                    except MemawareError as err:
                        self.failed[m] = err


class _Weights:
    """Model m's weights (in a snapshot of the stack's) as a state dict, written into its own module only
    when asked for."""

    def __init__(self, stack: StackedModels, m: int, member, module: nn.Module, snapshot: list[torch.Tensor]):
        self.stack, self.m, self.member, self.module, self.snapshot = stack, m, member, module, snapshot

    def state_dict(self):
        self.stack.write(self.m, self.member, self.snapshot)
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
                modules: list[nn.Module | None] | None = None, evaluate_splits: bool = True,
                graphs: bool | Callable = True, splits: dict | None = None) -> Stack:
    """Train one run per (method, config) together; every method of one class, every config sharing
    SHARED_SETTINGS. `modules` are the runs' own models (default: those the configs name). On a GPU the
    training steps and the evaluations replay CUDA graphs unless `graphs` is False; a function in their
    place records them on any device (`record_cuda_graph`'s interface; tests emulate graphs with it).
    `splits`: `data`'s splits already on the configs' device (a sweep keeps them from stack to stack)."""
    check_stackable(methods, configs)
    config, n_models = configs[0], len(configs)
    splits = splits or device_splits(data, config.device)
    train = splits["train"]
    if not isinstance(train.x, torch.Tensor):
        raise NotStackable("the batched engine trains on in-memory features only")
    if any(c.grad_clip is not None for c in configs):
        raise NotStackable("the batched engine does not clip each run's gradients")
    runs = [prepare(data, splits, method, c, heldout, module)
            for method, c, module in zip(methods, configs, modules or [None] * n_models)]
    members = [towers(model) for model, _, _ in runs]
    if any(m is None for m in members):
        raise NotStackable("the batched engine stacks Linear and ReLU layers only")
    record = graphs if callable(graphs) else (
        record_cuda_graph if graphs and torch.device(config.device).type == "cuda" else None)
    stack = StackedModels(members).to(config.device)
    state = stack_states([m.stack_state() for m in methods])
    optimizer = StackedOptimizer(stack.parameters(), configs)
    sampler = StackSampler([s for _, _, s in runs], methods, train.y, config.steps, config.device,
                           graphed=record is not None, min_width=batch_rows(stack, config.device))
    x, lead, watch = train.x.reshape(len(train), -1), methods[0], FailureWatch()
    histories, trackers = [[] for _ in runs], [BestTracker() for _ in runs]
    evaluation = StackEvaluation(stack, splits, None if heldout is None else heldout.inferred, record)

    def batch_loss(batch):
        """The runs' losses, and the method's update of its state (which the loss's gradient does not read)."""
        logits = stack(x) if sampler.shared else stack(x, batch.idx, sampler.lengths)
        logits = logits.squeeze(1) if stack.n_towers == 1 else logits
        loss = lead.batched_loss(state, logits, batch.y, batch.idx, batch.weight)
        lead.batched_update(state, logits.detach(), batch.y, batch.idx, batch.weight, batch.draws)
        return loss, logits

    pending: deque[Checkpoint] = deque()

    def offer(checkpoint: Checkpoint) -> None:
        checkpoint.wait()
        watch.settle(upto=checkpoint.step)
        offer_records(checkpoint, splits, stack, members, runs, histories, trackers, watch.failed)

    def after_step(step, batch, logits, loss):
        """At a checkpoint, the evaluation set going on the device, and the one before offered meanwhile."""
        if evaluate_splits and (step == config.steps - 1 or (config.checkpoint_freq and
                                                             step % config.checkpoint_freq == 0)):
            pending.append(Checkpoint(step, evaluation(), loss, stack))
            while len(pending) > 1:
                offer(pending.popleft())

    optimize(stack, config, sampler, batch_loss, after_step, lead.registry_name,
             optimizer=(optimizer, optimizer.counter), check=watch,
             wrap_step=(lambda take_step: GraphedStep(take_step, state, sampler, record)) if record else None)
    while pending:
        offer(pending.popleft())
    watch.settle()
    outcomes = []
    for m, (method, c, (model, predictor, _)) in enumerate(zip(methods, configs, runs)):
        stack.write(m, members[m])
        method.load_state_dict({k: state[k][m] for k in method.state_dict() if k in state})
        outcomes.append(watch.failed.get(m) or run_result(method, c, heldout, histories[m], trackers[m], predictor))
    return Stack(stack, outcomes)


class StackEvaluation:
    """Every model's figures at a checkpoint, those of `evaluate`'s record: the logits of all models on
    each split at once, their metrics computed for all models on the device (memaware.train.loop.
    evaluation_values; a Checkpoint takes them to the host). With `record` (CUDA graphs on a GPU), that
    work is recorded at the second checkpoint and replayed at every later one."""

    def __init__(self, stack: StackedModels, splits: dict, inferred: dict | None, record=None):
        device = next(stack.parameters()).device
        self.stack, self.splits, self.record = stack, splits, record
        self.inferred = {name: groups.to(device) for name, groups in (inferred or {}).items()}
        self.calls, self.replay = 0, None
        self.stream = torch.cuda.Stream() if record is not None and device.type == "cuda" else None

    def values(self) -> dict:
        logits = {s: self.stack.predict(split.x.reshape(len(split), -1))[:, 0] for s, split in self.splits.items()}
        return evaluation_values(logits, self.splits, self.inferred)

    def __call__(self) -> dict:
        """The figures (evaluation_values), on the device."""
        self.calls += 1
        if self.record is None or self.calls == 1:
            return on_side_stream(self.stream, self.values)
        if self.replay is None:
            self.replay = self.record(self.values)
        return self.replay()


class Checkpoint:
    """A stack's evaluation at `step` on its way to the host: its figures and the losses copied without
    the host waiting (so that the device goes on with the next steps while the host makes the records of
    the checkpoint before), and the weights as they were then (a copy on the device)."""

    def __init__(self, step: int, values: dict, loss: torch.Tensor, stack: StackedModels):
        self.step, self.snapshot = step, stack.snapshot()
        self.values, self.loss = to_host(values, wait=False), host_copy(loss)
        self.done = torch.cuda.Event() if loss.device.type == "cuda" else None
        if self.done is not None:
            self.done.record()

    def wait(self) -> None:
        if self.done is not None:
            self.done.synchronize()


def offer_records(checkpoint: Checkpoint, splits: dict, stack: StackedModels, members, runs, histories, trackers,
                  failed) -> None:
    """Each live model's record at the checkpoint into its history and its best-record tracker."""
    records, losses = evaluation_records(checkpoint.values, splits), checkpoint.loss.tolist()
    for m, (_, predictor, _) in enumerate(runs):
        if m in failed:
            continue
        record = {"step": checkpoint.step, "loss": losses[m], **records[m]}
        histories[m].append(record)
        trackers[m].offer(record, _Weights(stack, m, members[m], predictor, checkpoint.snapshot))


def stack_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Each key's tensors along a new leading model dimension (a view of one copy when all are equal)."""
    out = {}
    for key, first in states[0].items():
        same = all(s[key] is first or torch.equal(s[key], first) for s in states[1:])
        out[key] = first.unsqueeze(0).expand(len(states), *first.shape) if same else torch.stack(
            [s[key] for s in states])
    return out


def device_splits(data: Dataset, device) -> dict:
    """`data`'s splits on `device`, by name."""
    return {s: data.get(s, device) for s in SPLITS}


def fit_many(data: Dataset, methods: list[Method], configs: list[TrainConfig], heldout=None,
             splits: dict | None = None) -> list:
    """`fit` for many runs at once: per run a RunResult, or the MemawareError that stopped it (a run whose
    loss stopped being finite), as `fit` would have raised it. `splits`: as train_stack's."""
    return train_stack(data, methods, configs, heldout, splits=splits).outcomes


def xrm_many(data: Dataset, configs: list[TrainConfig], splits: dict | None = None) -> list:
    """`heldout.xrm` for many runs at once: one HeldOut per config. `splits`: as train_stack's."""
    from ..heldout.xrm import XRMTwins, build_twins, heldout_from_twin_logits

    methods = [XRMTwins() for _ in configs]
    splits = splits or device_splits(data, configs[0].device)
    done = train_stack(data, methods, configs, modules=[build_twins(data, c) for c in configs],
                       evaluate_splits=False, splits=splits)
    failure = next((o for o in done.outcomes if isinstance(o, MemawareError)), None)
    if failure is not None:
        raise failure
    logits = {s: done.models.predict(split.x.reshape(len(split), -1)) for s, split in splits.items()}
    return [heldout_from_twin_logits(data, {s: v[m] for s, v in logits.items()}, method)
            for m, method in enumerate(methods)]
