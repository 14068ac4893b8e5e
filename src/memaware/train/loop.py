"""The one training loop: a method + data + configuration -> a model and its metric history."""
from __future__ import annotations

import contextlib
import copy
import functools
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..data.dataset import SPLITS, Dataset, Split
from ..errors import MemawareError
from ..metrics import split_record, split_values, to_host
from ..methods.base import Method, TrainContext, create
from ..runinfo import run_info
from .config import TrainConfig
from .distributed import Distributed
from .models import model_for
from .resume import Checkpointing, restore_state, run_fingerprint, save_state

CRITERIA = {
    "va_wga": "validation worst-group accuracy on true groups",
    "va_gi_wga": "validation worst-group accuracy on XRM-inferred groups",
    "va_wca": "validation worst-class accuracy",
    "va_avg": "validation average accuracy",
}
_CRITERION_KEY = {"va_wga": "wga", "va_gi_wga": "gi_wga", "va_wca": "wca", "va_avg": "avg_acc"}


def criterion_value(record: dict, criterion: str) -> float | None:
    """The value of a selection criterion in one evaluation record (None when not available)."""
    return record["val"].get(_CRITERION_KEY[criterion])


def selection_key(record: dict, criterion: str) -> tuple:
    """How records compare under `criterion`: its value, then validation average accuracy (higher wins)."""
    return criterion_value(record, criterion), record["val"]["avg_acc"]


@dataclass
class RunResult:
    """A finished run: its history, and per criterion the best step, its metrics and model state."""

    method: str
    hparams: dict
    config: dict
    setting: dict
    history: list[dict]
    best: dict[str, dict]
    best_states: dict[str, dict] = field(repr=False, default_factory=dict)
    model: nn.Module | None = field(repr=False, default=None)
    info: dict = field(default_factory=dict)

    def selected(self, criterion: str) -> dict:
        """The evaluation record chosen by `criterion`."""
        if criterion not in self.best:
            available = ", ".join(self.best) or "none"
            raise MemawareError(f"criterion '{criterion}' is not available for this run (available: {available})")
        return self.best[criterion]

    def model_at(self, criterion: str) -> nn.Module:
        """A copy of the model with the weights chosen by `criterion`."""
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.best_states[criterion])
        return model

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("method", "hparams", "config", "setting", "history", "best", "info")}


class BestTracker:
    """Keeps, per criterion, the evaluation with the highest value (ties: higher val average, then earlier)."""

    def __init__(self):
        self.best: dict[str, dict] = {}
        self.states: dict[str, dict] = {}

    def offer(self, record: dict, model: nn.Module) -> None:
        state = None
        for criterion in CRITERIA:
            value = criterion_value(record, criterion)
            if value is None or value != value:
                continue
            current = self.best.get(criterion)
            if current is None or selection_key(record, criterion) > selection_key(current, criterion):
                if state is None:
                    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                self.best[criterion], self.states[criterion] = record, state


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Logits of `model` on `x` (moved chunk by chunk to the model's device), in eval mode; the
    model's train mode is restored. Streamed inputs (memaware.data.stream) set their own chunk size."""
    chunk = getattr(x, "eval_batch", chunk)
    was_training = model.training
    model.eval()
    device = next(model.parameters(), x).device
    out = (torch.cat([model(x[i:i + chunk].to(device)) for i in range(0, len(x), chunk)]) if len(x)
           else x.new_zeros(0))
    model.train(was_training)
    return out


def evaluate(model: nn.Module, splits: dict[str, Split], inferred: dict[str, torch.Tensor] | None = None) -> dict:
    """Accuracy, AUROC and calibration reports of `model` on each split (with inferred-group WGA where
    inferred groups exist)."""
    logits = {name: predict_logits(model, s.x).view(1, len(s.y), s.n_classes) for name, s in splits.items()}
    return evaluate_logits(logits, splits, inferred)[0]


def evaluate_logits(logits: dict[str, torch.Tensor], splits: dict[str, Split],
                    inferred: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """`evaluate`'s record of each of M models from their logits (M, n, K) on each split, computed for
    all models at once and brought to the host in one transfer per dtype."""
    return evaluation_records(evaluation_values(logits, splits, inferred), splits)


def evaluation_values(logits: dict[str, torch.Tensor], splits: dict[str, Split],
                      inferred: dict[str, torch.Tensor] | None = None) -> dict[tuple[str, str], torch.Tensor]:
    """Every figure of every split (metrics.split_values) for M models, keyed (split, figure), on the
    logits' device, with the leading model dimension."""
    inferred = inferred or {}
    return {(name, key): value for name, s in splits.items()
            for key, value in split_values(logits[name], s, inferred.get(name)).items()}


def evaluation_records(values: dict[tuple[str, str], torch.Tensor], splits: dict[str, Split]) -> list[dict]:
    """Each model's evaluation record from `evaluation_values`' figures (moved to the host at once)."""
    values = to_host(values)
    per_split = {name: {key: v for (n, key), v in values.items() if n == name} for name in splits}
    n_models = len(next(iter(values.values())))
    return [{name: split_record(per_split[name], s, m) for name, s in splits.items()} for m in range(n_models)]


_FINITE_CHECK_EVERY = 50  # a finiteness check synchronises with the GPU: not on every step


def check_finite(loss: torch.Tensor, name: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise MemawareError(f"{name}: the loss became {float(loss)} by step {step}; lower the learning rate")


def optimize(model: nn.Module, config: TrainConfig, sampler, batch_loss, after_step=None, name: str = "training",
             optimizer=None, check=check_finite, start: int = 0, wrap_step=None):
    """Take `config.steps` optimizer steps on `model` (steps `start` to the last, for a resumed run).

    batch_loss(idx) -> (loss, logits) for a batch of example positions drawn from `sampler`;
    after_step(step, idx, detached logits, detached loss) runs after each update. The batched engine
    (memaware.train.batched) passes a loss with one entry per stacked model, its own (optimizer,
    scheduler), a `check` that records non-finite losses per model instead of raising, and on a GPU
    `wrap_step`, which turns `train_step` into a step replayed from a CUDA graph.
    """
    optimizer, scheduler = optimizer or make_optimizer(model, config)
    device = torch.device(config.device)
    take_step = functools.partial(train_step, model, config, batch_loss, optimizer, scheduler)
    take_step = take_step if wrap_step is None else wrap_step(take_step)
    for step in range(start, config.steps):
        idx = next(sampler).to(device)
        loss, logits = take_step(idx)
        if step % _FINITE_CHECK_EVERY == 0 or step == config.steps - 1:
            check(loss, name, step)
        if after_step is not None:
            after_step(step, idx, logits, loss)


def train_step(model: nn.Module, config: TrainConfig, batch_loss, optimizer, scheduler,
               idx) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on the batch at positions `idx`: its loss and logits, detached."""
    loss, logits = batch_loss(idx)
    optimizer.zero_grad(set_to_none=True)
    loss.sum().backward()  # the same gradients as backward(ones): without the explicit gradient, whose shape
    # check imports torch's symbolic shapes and sympy on a process's first step (0.5 s, 3 s without bytecode caches)
    if config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    scheduler.step()
    return loss.detach(), logits.detach()


def make_optimizer(model: nn.Module, config: TrainConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    elif config.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return opt, lr_scheduler(opt, config)


def lr_scheduler(optimizer, config: TrainConfig):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_decay(config))


def lr_decay(config: TrainConfig) -> Callable[[int], float]:
    """The learning-rate factor of `config`'s schedule at each step (constant, or linear decay to 0)."""
    return (lambda step: max(0.0, 1.0 - step / config.steps)) if config.lr_schedule == "linear" else (lambda step: 1.0)


def fit(
    data: Dataset,
    method: Method | str,
    config: TrainConfig | None = None,
    heldout=None,
    model: nn.Module | None = None,
    callback: Callable[[int, dict | None], None] | None = None,
    evaluate_splits: bool = True,
    checkpoint: Checkpointing | None = None,
    distributed: Distributed | None = None,
    on_start: Callable[[nn.Module], None] | None = None,
    **hparams,
) -> RunResult:
    """Train `model` (by default the one `config.arch` names) with `method` on `data`'s train split.

    Every `config.checkpoint_freq` steps (and at the last step) the model is evaluated on every split and
    the best step per selection criterion is kept. `heldout` (a HeldOut) supplies held-out logits and
    inferred groups. `callback(step, record)` is called after every step (record None between evaluations).
    `checkpoint` (memaware.train.resume): resume from its file when there is one, and write it every
    `checkpoint.every` steps. `distributed` (memaware.train.distributed): this process's part in training
    one model with several processes; rank 0 evaluates and writes the checkpoints. `on_start(predictor)`
    is called once, before the first step, with the model that predicts (as the method set it up), for
    observers that follow it through training (memaware.analyze.self_influence).
    """
    config = config or TrainConfig()
    method = create(method, **hparams) if isinstance(method, str) else method
    splits = {s: data.get(s, config.device) for s in SPLITS}
    model, predictor, sampler = prepare(data, splits, method, config, heldout, model)
    train = splits["train"]
    inferred = None if heldout is None else heldout.inferred
    tracker, history = BestTracker(), []
    main = distributed is None or distributed.main

    everything = getattr(sampler, "everything", False) and distributed is None  # full batch: no gather
    inputs = batch_inputs(train, config, everything)
    optimizer = make_optimizer(model, config)
    if distributed is not None:
        distributed.share(*method.state_dict().values())  # first-stage models may differ across GPUs
    resumable = (model, optimizer, method, sampler, inputs)
    fingerprint = None if checkpoint is None else run_fingerprint(method, config, train.y, heldout)
    start = 0
    if checkpoint is not None:
        start, history = restore_state(checkpoint, fingerprint, *resumable, tracker)
    if on_start is not None:
        on_start(predictor)

    def batch_loss(idx):
        if distributed is None:
            logits = module(inputs(idx))
        else:
            logits = distributed.gather(module(inputs(idx, distributed.part(len(idx)))), len(idx))
        return method.loss(logits, train.y if everything else train.y[idx], idx), logits

    def after_step(step, idx, logits, loss):
        method.update(logits, train.y[idx], idx)
        record = None
        last = step == config.steps - 1
        if main and evaluate_splits and (last or (config.checkpoint_freq and step % config.checkpoint_freq == 0)):
            record = {"step": step, "loss": float(loss), **evaluate(predictor, splits, inferred)}
            history.append(record)
            tracker.offer(record, predictor)
        if main and checkpoint is not None and checkpoint.due(step, config.steps):
            save_state(checkpoint, step, fingerprint, *resumable, history, tracker)
        if callback is not None:
            callback(step, record)

    with global_batchnorm(distributed, config, model):
        module = model if distributed is None else distributed.wrap(model)
        optimize(module, config, sampler, batch_loss, after_step, method.registry_name, optimizer=optimizer,
                 start=start)
    return run_result(method, config, heldout, history, tracker, predictor)


def global_batchnorm(distributed: Distributed | None, config: TrainConfig, model: nn.Module):
    """The context in which `model` trains: under several processes with `config.sync_batchnorm`, its
    BatchNorm layers normalise over the global batch (Distributed.global_batchnorm)."""
    if distributed is None or not config.sync_batchnorm:
        return contextlib.nullcontext()
    return distributed.global_batchnorm(model)


def batch_inputs(train: Split, config: TrainConfig, everything: bool) -> Callable[..., torch.Tensor]:
    """inputs(idx, part=slice(None)): the inputs of the training examples at positions idx[part]. In-memory
    features are rows of `train.x` (all of it when every batch is the whole split); streamed inputs
    (memaware.data.stream) are fetched by the same positions, in their training form (augmented images unless
    `config.augment` is False)."""
    if hasattr(train.x, "train_batches"):
        return train.x.train_batches(config.seed, config.augment)
    return (lambda idx, part=None: train.x) if everything else (lambda idx, part=slice(None): train.x[idx[part]])


def prepare(data: Dataset, splits: dict[str, Split], method: Method, config: TrainConfig, heldout=None,
            model: nn.Module | None = None) -> tuple[nn.Module, nn.Module, object]:
    """Set `method` up for one run (its state, from a generator seeded by `config.seed`) and return the
    module to train, the module that predicts and the batch sampler; `splits` are `data`'s on the device."""
    device = torch.device(config.device)
    generator = torch.Generator().manual_seed(config.seed)
    train = splits["train"]
    groups, n_groups = method.training_groups(data, train, heldout, config)
    heldout_logits = None if heldout is None else heldout.logits.to(device)
    method.setup(TrainContext(train.x, train.y, data.n_classes, groups, n_groups, heldout_logits, generator, device,
                              config, splits["val"]))
    if model is None:
        model = model_for(data, config, generator)
    model = method.wrap_model(model.to(device)).to(device).train()
    return model, method.predictor(model), method.sampler(config.batch_size)


def run_result(method: Method, config: TrainConfig, heldout, history: list[dict], tracker: BestTracker,
               predictor: nn.Module) -> RunResult:
    """The RunResult of a finished run."""
    setting = {"train_groups": method.group_source or "none",
               "heldout": (heldout.source if heldout is not None and method.needs_heldout else None)}
    return RunResult(method.registry_name, dict(method.hparams), config.model_dump(), setting, history,
                     tracker.best, tracker.states, predictor, run_info(torch.device(config.device)))
