"""Resuming a killed run: everything `fit` changes between steps, written every N steps, read back on restart.

A checkpoint holds the model, the optimizer and its schedule, the method's state (`Method.resume_state`:
its tables and the generator of its batches and draws), the sampler's position, the generator of the
streamed inputs' augmentation, the metric history and the best evaluations with their weights, and the
step. It is written atomically (memaware.train.checkpoint) and read with weights_only=True. A run resumed
from it continues with the same numbers as if it had not stopped. A checkpoint records a fingerprint of its
run (method, hyperparameters, configuration, training labels, held-out logits): one of another run is an
error, not silently reused.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import MemawareError
from .checkpoint import load_checkpoint, save_checkpoint


@dataclass(frozen=True)
class Checkpointing:
    """Write a run's resumable state to `path` every `every` steps and after its last step; resume from it."""

    path: Path
    every: int

    def __post_init__(self):
        if self.every < 1:
            raise MemawareError(f"checkpoints every {self.every} steps: give a positive number of steps")

    def due(self, step: int, steps: int) -> bool:
        return (step + 1) % self.every == 0 or step == steps - 1


def run_fingerprint(method, config, labels: torch.Tensor, heldout=None) -> str:
    """A short digest of what determines a run's numbers (not the device it runs on)."""
    described = {"method": method.registry_name, "hparams": method.hparams,
                 "config": config.model_dump(exclude={"device"})}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
    digest.update(labels.detach().cpu().numpy().tobytes())
    if heldout is not None:
        digest.update(heldout.logits.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def plain(value):
    """`value` as JSON would give it back (numbers of numpy types become Python's), for a checkpoint's meta."""
    return json.loads(json.dumps(value))


def save_state(checkpoint: Checkpointing, step: int, fingerprint: str, model, optimizer, method, sampler, inputs,
               history: list[dict], tracker) -> None:
    """Write the state of a run after `step` (see the module's docstring)."""
    opt, scheduler = optimizer
    generator = getattr(inputs, "generator", None)
    meta = {"step": step, "fingerprint": fingerprint, "history": plain(history), "best": plain(tracker.best)}
    save_checkpoint(checkpoint.path, model.state_dict(), method.resume_state(), meta,
                    optimizer=opt.state_dict(), scheduler=scheduler.state_dict(), sampler=sampler.state_dict(),
                    augmentation={} if generator is None else {"generator": generator.get_state()},
                    best_states=tracker.states)


def restore_state(checkpoint: Checkpointing, fingerprint: str, model, optimizer, method, sampler, inputs,
                  tracker) -> tuple[int, list[dict]]:
    """Load the state written by `save_state` into the run's objects; returns (the next step, the history).
    Without a checkpoint file: (0, [])."""
    path = Path(checkpoint.path)
    if not path.is_file():
        return 0, []
    saved = load_checkpoint(path)
    meta = saved["meta"]
    if meta.get("fingerprint") != fingerprint:
        raise MemawareError(f"{path}: a checkpoint of another run (its method, hyperparameters, settings or data "
                            f"differ); delete it to start this run over")
    opt, scheduler = optimizer
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    method.load_resume_state(saved["method"])
    sampler.load_state_dict(saved["sampler"])
    if "generator" in saved["augmentation"]:
        inputs.generator.set_state(saved["augmentation"]["generator"])
    tracker.best, tracker.states = meta["best"], saved["best_states"]
    return meta["step"] + 1, meta["history"]
