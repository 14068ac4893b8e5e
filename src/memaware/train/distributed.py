"""Several processes training one model: DistributedDataParallel under torchrun.

Every process draws the same global batch of example positions (the same sampler, from the same seed),
runs the model on its own contiguous part of that batch, and gathers the logits of the whole batch. The
method then sees the global batch on every process: its loss, its state updates (GroupDRO's weights,
XRM's flips, LfF's averages...) and its random draws are the same everywhere. The gradient that reaches
a process's logits is the global loss's, times the number of processes, because DistributedDataParallel
averages the processes' gradients: each step equals a single process's step on the global batch.
BatchNorm layers normalise with the statistics of the global batch too (`global_batchnorm`, while a run
trains with `TrainConfig.sync_batchnorm`, the default), or else with those of each process's part (the
plain DDP recipe, without the collectives of every BatchNorm layer). Evaluation, outputs and checkpoints are rank 0's.

No module state: `start_from_environment` (the CLI's entry) returns a `Distributed` that is passed down.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import MemawareError

if torch.distributed.is_available():
    # Imported before any process group exists: its functions take the default group as a default argument,
    # so importing it once a group exists (DistributedDataParallel does) would keep that group, its
    # connections and threads alive past destroy_process_group, to the interpreter's teardown, where gloo's
    # threads can abort a process whose work is done (SIGABRT, 'terminate called without an active exception').
    import torch.distributed.nn  # noqa: F401

TIMEOUT = datetime.timedelta(hours=1)  # rank 0 evaluates while the others wait at the next step
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)  # the layers that global_batchnorm replaces


@dataclass(frozen=True)
class Distributed:
    """This process's place among `world` processes training one model; `group` its process group."""

    rank: int
    world: int
    local_rank: int = 0
    group: Any = None  # a torch.distributed ProcessGroup (None: the default group)

    @property
    def main(self) -> bool:
        """Whether this process evaluates and writes (rank 0)."""
        return self.rank == 0

    def sizes(self, n: int) -> list[int]:
        """How many of a batch's n examples each rank takes (contiguous parts, the first ones larger)."""
        return [n // self.world + (r < n % self.world) for r in range(self.world)]

    def part(self, n: int) -> slice:
        """This rank's rows of a batch of n examples."""
        sizes = self.sizes(n)
        start = sum(sizes[:self.rank])
        return slice(start, start + sizes[self.rank])

    def gather(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """The logits (..., n, K) of the whole batch from every rank's part (..., part, K); gradients flow
        back to this rank's part only, scaled by `world` (DDP divides the summed gradients by `world`)."""
        return GatherBatch.apply(local, self, n)

    def share(self, *tensors: torch.Tensor) -> None:
        """Overwrite `tensors`, in place, with rank 0's (state computed on every rank that must agree)."""
        import torch.distributed as dist

        device = self.device_of()
        for tensor in tensors:
            moved = tensor.detach().to(device).contiguous()
            dist.broadcast(moved, src=0, group=self.group)
            tensor.data.copy_(moved.to(tensor.device))

    def device_of(self) -> torch.device:
        """The device that collectives use: this rank's GPU with nccl, the CPU with gloo."""
        import torch.distributed as dist

        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def wrap(self, model: nn.Module) -> nn.Module:
        """`model` under DistributedDataParallel, its parameters and buffers broadcast from rank 0 once.
        Buffers (BatchNorm's running statistics) are not broadcast again before every step, which would add
        a collective to each step: rank 0's own statistics are the ones it evaluates and saves with."""
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
        no_step_sync = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
        wrapped = DistributedDataParallel(model, device_ids=ids, process_group=self.group,
                                          gradient_as_bucket_view=True, **no_step_sync)
        self.share(*model.buffers())  # older torch skips the buffers' first broadcast with broadcast_buffers=False
        return wrapped

    @contextlib.contextmanager
    def global_batchnorm(self, model: nn.Module):
        """Within the block, `model`'s BatchNorm layers are GlobalBatchNorm layers sharing their parameters and
        buffers: in training they normalise with the statistics of the global batch. After it, the original
        layers are back (their statistics updated). A BatchNorm of another class (timm's BatchNormAct2d...)
        is a MemawareError: its forward pass does more than normalise."""
        others = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _BatchNorm)
                         and type(m) not in BATCHNORMS})
        if others:
            raise MemawareError(f"sync_batchnorm: the network's {', '.join(others)} layers are not torch's BatchNorm "
                                f"and cannot normalise over the global batch; train with sync_batchnorm false "
                                f"(memaware run --no-sync-batchnorm)")
        layers = [(parent, name, layer) for parent in model.modules() for name, layer in parent.named_children()
                  if type(layer) in BATCHNORMS]
        synced = nn.SyncBatchNorm if self.device_of().type == "cuda" else GlobalBatchNorm
        for parent, name, layer in layers:
            setattr(parent, name, sharing(synced, layer, self.group))
        try:
            yield
        finally:
            for parent, name, layer in layers:
                setattr(parent, name, layer.train(getattr(parent, name).training))

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier(group=self.group)

    def from_main(self, compute: Callable[[], Any]) -> Any:
        """Rank 0's `compute()` (a picklable value) on every rank; the others do not call it and wait."""
        import torch.distributed as dist

        box = [compute() if self.main else None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def first_on_main(self, work: Callable[[], Any]) -> Any:
        """`work()` on rank 0 first, then on the other ranks (which then find what rank 0 wrote: a cache)."""
        if not self.main:
            self.barrier()
        result = work()
        if self.main:
            self.barrier()
        return result


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over the global batch on the CPU, where torch's SyncBatchNorm is refused: in training, the
    statistics of every process's part from two differentiable all-reduces (the sums, then the squared
    deviations); in evaluation, the running statistics."""

    def __init__(self, num_features: int, eps: float, momentum: float | None, affine: bool,
                 track_running_stats: bool, process_group=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2 dimensions (batch, channels), got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        totals = SumOverProcesses.apply(torch.cat([x.sum(dims), x.new_tensor([x.numel() / x.shape[1]])]),
                                        self.process_group)
        count = totals[-1].detach()
        centred = x - (totals[:-1] / count).view(shape)
        var = SumOverProcesses.apply(centred.pow(2).sum(dims), self.process_group) / count
        self.track(totals[:-1].detach() / count, var.detach(), float(count))
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.weight is not None:
            out = out * self.weight.view(shape)
        return out if self.bias is None else out + self.bias.view(shape)

    @torch.no_grad()
    def track(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        """BatchNorm's update of the running statistics (the variance unbiased), in place."""
        if not self.track_running_stats:
            return
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(var * count / max(count - 1, 1), alpha=factor)


def sharing(cls: type, layer: _BatchNorm, group) -> _BatchNorm:
    """A `cls` layer (nn.SyncBatchNorm or GlobalBatchNorm) with `layer`'s settings and the same parameter and
    buffer tensors."""
    synced = cls(layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats, group)
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        setattr(synced, name, getattr(layer, name))
    return synced.train(layer.training)


class SumOverProcesses(torch.autograd.Function):
    """The sum of a tensor over the processes of `group` (None: the default group); backward: the sum of
    the gradients, since every process's loss depends on the sum."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        import torch.distributed as dist

        ctx.group = group
        total = tensor.clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return SumOverProcesses.apply(grad.contiguous(), ctx.group), None


class GatherBatch(torch.autograd.Function):
    """all_gather of the batch dimension (-2) of uneven parts; backward: this rank's part of the gradient
    times the number of ranks."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, distributed: Distributed, n: int) -> torch.Tensor:
        import torch.distributed as dist

        sizes, dim = distributed.sizes(n), local.dim() - 2
        padded = list(local.shape)
        padded[dim] = max(sizes)
        buffer = local.new_zeros(padded)
        buffer.narrow(dim, 0, local.shape[dim]).copy_(local)
        parts = [torch.empty_like(buffer) for _ in sizes]
        dist.all_gather(parts, buffer, group=distributed.group)
        ctx.dim, ctx.span, ctx.world = dim, distributed.part(n), distributed.world
        return torch.cat([p.narrow(dim, 0, size) for p, size in zip(parts, sizes)], dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        span = ctx.span
        return grad.narrow(ctx.dim, span.start, span.stop - span.start) * ctx.world, None, None


def start_from_environment(device: str) -> Distributed | None:
    """Under torchrun (WORLD_SIZE > 1 in the environment): join its process group, nccl on CUDA and gloo on
    the CPU, and return this process's `Distributed`; else None."""
    if not under_torchrun():
        return None
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ["WORLD_SIZE"])
    cuda = device.startswith("cuda")
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise MemawareError(f"torchrun: local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible)")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return Distributed(rank, world, local_rank)


def under_torchrun() -> bool:
    """Whether torchrun started this process as one of several (WORLD_SIZE > 1 in the environment)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_device(device: str, distributed: Distributed | None) -> str:
    """The device this process trains on: cuda:LOCAL_RANK for a CUDA device under torchrun."""
    if distributed is None or not device.startswith("cuda"):
        return device
    return f"cuda:{distributed.local_rank}"


def is_main(distributed: Distributed | None) -> bool:
    """Whether this process writes: the only one, or rank 0."""
    return distributed is None or distributed.main


def on_main(distributed: Distributed | None, compute: Callable[[], Any]) -> Any:
    """`compute()` in a single process; with several, rank 0's on every rank (`Distributed.from_main`)."""
    return compute() if distributed is None else distributed.from_main(compute)


def first_on_main(distributed: Distributed | None, work: Callable[[], Any]) -> Any:
    """`work()` in a single process; with several, on rank 0 first (`Distributed.first_on_main`)."""
    return work() if distributed is None else distributed.first_on_main(work)


def stop(distributed: Distributed | None) -> None:
    """Leave the process group (at the end of a command). On the normal way out, first wait for every
    process to get there: one that left early would close connections that another still uses (gloo
    aborts that process). On the way out of an error, leave at once."""
    if distributed is not None:
        import sys

        import torch.distributed as dist

        if dist.is_initialized():
            if sys.exc_info()[0] is None:
                dist.barrier(group=distributed.group)
            dist.destroy_process_group()
