"""The method interface and registry.

A method does not own the training loop. It says how batches are drawn (`sampler`), how a batch's
logits become a loss (`loss`), and what state it keeps between steps (`update`), addressed by the
example's position in the train split (`idx`). One loop (memaware.train.fit) serves every method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MemawareError

GROUP_SOURCES = ("true", "inferred", "eiil")  # eiil: groups EIIL infers from the train split


@dataclass
class TrainContext:
    """What a method may read at setup: the train split and the products of phase 1."""

    x: torch.Tensor  # (n_train, ...) inputs, for methods that fit auxiliary models (JTT, AFR, DFR)
    y: torch.Tensor  # (n_train,) labels
    n_classes: int
    groups: torch.Tensor | None  # (n_train,) group ids the method may use (true or inferred), or None
    n_groups: int
    heldout_logits: torch.Tensor | None  # (n_train, K) held-out logits, or None
    generator: torch.Generator  # CPU generator for any randomness a method needs
    device: torch.device
    config: Any = None  # the run's TrainConfig, for methods that train a first-stage model (JTT, DFR, AFR)
    val: Any = None  # the validation Split (x, y, a), for methods that fit on validation data (dfr-val)


class UniformSampler:
    """Shuffled passes over the examples `pool` (all training examples by default)."""

    def __init__(self, n: int, batch_size: int | None, generator: torch.Generator, pool: torch.Tensor | None = None):
        self.pool = torch.arange(n) if pool is None else pool.cpu()
        self.batch_size = len(self.pool) if batch_size is None else min(batch_size, len(self.pool))
        self.generator = generator
        self._order, self._pos = None, 0
        self.every_example = pool is None  # the pool is 0..n-1: a pass's order is the permutation itself
        self.everything = self.every_example and self.batch_size == n  # every batch is all examples, in order

    def __next__(self) -> torch.Tensor:
        if self.batch_size == len(self.pool):
            return self.pool
        self._make_room()
        batch = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return batch

    def blocks(self, n_steps: int) -> Iterator[torch.Tensor]:
        """The next n_steps batches, those of n_steps calls of next(), as (k, batch_size) blocks of steps
        within one shuffled pass: the generator is used only as a block begins (the batched engine then
        draws a method's random numbers for the block's k steps at once, in the same order)."""
        done = 0
        while done < n_steps:
            if self.batch_size == len(self.pool):
                yield self.pool.expand(n_steps - done, -1)
                return
            self._make_room()
            k = min(n_steps - done, (len(self._order) - self._pos) // self.batch_size)
            yield self._order[self._pos:self._pos + k * self.batch_size].view(k, self.batch_size)
            self._pos += k * self.batch_size
            done += k

    def _make_room(self) -> None:
        """A new shuffled pass when the current one has no batch left."""
        if self._order is None or self._pos + self.batch_size > len(self._order):
            order = torch.randperm(len(self.pool), generator=self.generator)
            self._order, self._pos = (order if self.every_example else self.pool[order]), 0

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Where the sampler stands (its generator, the current pass's order and position), for resuming."""
        state = {"generator": self.generator.get_state(), "pos": torch.tensor(self._pos)}
        return state if self._order is None else {**state, "order": self._order}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
        self._order, self._pos = state.get("order"), int(state["pos"])


class WeightedSampler:
    """Batches drawn with replacement, example i with probability proportional to weights[i]."""

    def __init__(self, weights: torch.Tensor, batch_size: int | None, generator: torch.Generator):
        self.weights = weights.double().cpu()
        self.batch_size = len(weights) if batch_size is None else batch_size
        self.generator = generator

    def __next__(self) -> torch.Tensor:
        return torch.multinomial(self.weights, self.batch_size, replacement=True, generator=self.generator)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])


class Method:
    """Base class: plain cross-entropy on uniform batches. Subclasses override what differs.

    Class attributes: `name` (registry key), `defaults` (hyperparameters and their default values),
    `space` (hyperparameter -> function of a NumPy Generator, for random search), `choices` (allowed
    values), `bounds` (inclusive numeric range; None passes), `needs_groups` (training uses group
    labels), `needs_heldout` (training uses held-out logits).
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    space: ClassVar[dict[str, Callable[[np.random.Generator], Any]]] = {}
    choices: ClassVar[dict[str, tuple]] = {}
    bounds: ClassVar[dict[str, tuple[float, float]]] = {}
    needs_groups: ClassVar[bool] = False
    needs_heldout: ClassVar[bool] = False

    def __init__(self, **hparams):
        unknown = sorted(set(hparams) - set(self.defaults))
        if unknown:
            raise MemawareError(f"{self.name}: unknown hyperparameter '{unknown[0]}' "
                                f"(known: {', '.join(self.defaults) or 'none'})")
        self.hparams = {**self.defaults, **hparams}
        for key, allowed in self.choices.items():
            if self.hparams[key] not in allowed:
                raise MemawareError(f"{self.name}: {key} must be one of {', '.join(map(str, allowed))}, "
                                    f"got {self.hparams[key]!r}")
        for key, (low, high) in self.bounds.items():
            value = self.hparams[key]
            if value is not None and not (isinstance(value, (int, float)) and low <= value <= high):
                raise MemawareError(f"{self.name}: {key} must be a number between {low} and {high}, got {value!r}")
        self.ctx: TrainContext | None = None
        self.registry_name = self.name

    @property
    def group_source(self) -> str | None:
        """Which group labels training uses: 'true', 'inferred', 'eiil' or None."""
        return self.hparams.get("groups") if self.needs_groups else None

    def training_groups(self, data, train, heldout, config) -> tuple[torch.Tensor | None, int]:
        """The group ids of the train split `train` (and their number) that training may use, per
        `group_source`: the true groups, phase 1's inferred ones (`heldout`), or EIIL's, inferred here from
        the train split's labels (memaware.methods.eiil); (None, 0) for a method that uses no groups."""
        if not self.needs_groups:
            return None, 0
        if self.group_source == "eiil":
            from .eiil import eiil_train_groups

            return eiil_train_groups(data, train, config), train.n_classes * 2
        if self.group_source == "true":
            if train.a is None:
                raise MemawareError(f"{self.registry_name} needs true group labels: the data has no 'a'")
            return train.groups, train.n_groups
        if heldout is None or "train" not in heldout.inferred:
            raise MemawareError(f"{self.registry_name} needs inferred groups: run phase 1 (XRM) first")
        return train.y * 2 + heldout.inferred["train"].to(train.y.device), train.n_classes * 2

    def setup(self, ctx: TrainContext) -> None:
        """Build per-example or per-group state; called once before training."""
        if self.needs_groups and ctx.groups is None:
            raise MemawareError(f"{self.name} needs {self.group_source} group labels for the train split")
        if self.needs_heldout and ctx.heldout_logits is None:
            raise MemawareError(f"{self.name} needs held-out logits (run phase 1 first)")
        self.ctx = ctx

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """The module the loop trains (e.g. the model plus an auxiliary one); default: the model itself."""
        return model

    def predictor(self, trained: nn.Module) -> nn.Module:
        """The module that predicts, given what `wrap_model` returned; default: that module itself."""
        return trained

    def sampler(self, batch_size: int | None):
        """An iterator of index batches into the train split."""
        return UniformSampler(len(self.ctx.y), batch_size, self.ctx.generator)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch, from the model's logits, labels and example positions."""
        return F.cross_entropy(logits, y)

    def update(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> None:
        """Update state after the optimizer step (logits are the batch's, detached)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors of state kept between steps (saved with checkpoints)."""
        return {}

    # The batched engine (memaware.train.batched) trains M runs of one method at once. A method that sets
    # `batched` gives its per-run tensors (`stack_state`), which the engine stacks along a leading model
    # dimension, and the same loss and update over that state: logits (M, B, K) (XRM: (M, 2, B, K)),
    # y and idx (M, B), weight (M, B): 1/B_m on a model's B_m examples, 0 on the padding of smaller batches.
    batched: ClassVar[bool] = False

    def batchable(self, config) -> bool:
        """Whether the batched engine can stack this method with these hyperparameters and `config`: its
        class sets `batched`, and no subclass below the one that did redefines its loss, update or model."""
        mro = type(self).__mro__
        owner = next(c for c in mro if "batched" in vars(c))
        return self.batched and all(issubclass(owner, next(c for c in mro if hook in vars(c)))
                                    for hook in ("loss", "update", "wrap_model", "predictor", "draws"))

    def stack_state(self) -> dict[str, torch.Tensor]:
        """This run's state and numeric hyperparameters, for the batched engine to stack (after setup)."""
        return {}

    def draws(self, n: int) -> torch.Tensor | None:
        """The random numbers `update` takes for a batch of n examples (drawn ahead by the batched engine,
        which draws for several steps at once: draws(a + b) must give draws(a), then draws(b))."""
        return None

    def batched_loss(self, state: dict, logits, y, idx, weight) -> torch.Tensor:
        """The (M,) losses of M stacked runs: per run, `loss` over its own examples."""
        return (weight * F.cross_entropy(logits.transpose(1, 2), y, reduction="none")).sum(1)

    def batched_update(self, state: dict, logits, y, idx, weight, draws) -> None:
        """`update` for M stacked runs: replaces entries of `state` (never writes into them)."""

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            setattr(self, k, v.to(self.ctx.device) if self.ctx else v)

    def resume_state(self) -> dict[str, torch.Tensor]:
        """What a run stopped after some step needs to go on as if it had not stopped (memaware.train.resume):
        `state_dict()` and the state of the generator of `ctx` (its batches and random draws). A method that
        keeps other state between steps (another generator, a sampler of its own) adds it here."""
        return {**self.state_dict(), "generator": self.ctx.generator.get_state()}

    def load_resume_state(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        self.ctx.generator.set_state(state.pop("generator"))
        self.load_state_dict(state)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"{type(self).__name__}({args})"


def group_mean_losses(per_example: torch.Tensor, groups: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss of each group in a batch (0 for absent groups) and each group's count.

    Uses a one-hot product rather than scatter so the result is deterministic on GPU.
    """
    onehot = F.one_hot(groups, n_groups).to(per_example.dtype)
    counts = onehot.sum(0)
    return (onehot.T @ per_example) / counts.clamp_min(1), counts


def batched_group_mean_losses(per_example: torch.Tensor, groups: torch.Tensor, n_groups: int,
                              weight: torch.Tensor) -> torch.Tensor:
    """group_mean_losses for M stacked runs: (M, B) losses and groups -> (M, n_groups) group means,
    counting only the examples of positive weight."""
    onehot = F.one_hot(groups, n_groups).to(per_example.dtype) * (weight > 0).unsqueeze(2).to(per_example.dtype)
    counts = onehot.sum(1)
    return (onehot.transpose(1, 2) @ per_example.unsqueeze(2)).squeeze(2) / counts.clamp_min(1)


def per_run(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows idx[m] of each run's table[m]: (M, n, ...) and (M, B) -> (M, B, ...)."""
    if table.stride(0) == 0:  # one table shared by every run
        return table[0][idx]
    return table[torch.arange(len(idx), device=idx.device).unsqueeze(1), idx]


def group_balanced_weights(groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Per-example weight 1 / |group|: every non-empty group gets the same total weight."""
    counts = torch.bincount(groups, minlength=n_groups).double()
    return 1.0 / counts[groups]


REGISTRY: dict[str, tuple[type[Method], dict[str, Any]]] = {}


def register(name: str | None = None, **fixed):
    """Class decorator: register a method under its name (or `name`, with fixed hyperparameters)."""

    def deco(cls: type[Method]):
        key = name or cls.name
        if key in REGISTRY:
            raise RuntimeError(f"method {key!r} registered twice")
        REGISTRY[key] = (cls, fixed)
        return cls

    return deco


def create(name: str, **hparams) -> Method:
    """Instantiate a registered method by name; unknown names raise MemawareError listing the known ones."""
    if name not in REGISTRY:
        raise MemawareError(f"unknown method '{name}' (known: {', '.join(sorted(REGISTRY))})")
    cls, fixed = REGISTRY[name]
    method = cls(**{**fixed, **hparams})
    method.registry_name = name
    return method
