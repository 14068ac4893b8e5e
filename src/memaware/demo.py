"""The MAT paper's Figure-1 experiment: ERM without and with memorizable noise, MAT, and GroupDRO.

A bias-free linear model trained by full-batch SGD (lr 0.01, no momentum) on the synthetic problem.
With noise (sigma = 0.5) ERM fits the minority training examples through the noise and fails on
minority test examples; MAT, with XRM held-out logits, learns the core feature.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data.synthetic import make_figure1
from .heldout import xrm
from .train import TrainConfig, fit
from .train.loop import RunResult

FIGURE1_CONFIG = dict(lr=0.01, momentum=0.0, bias=False, optimizer="sgd", batch_size=None)


@dataclass
class DemoRun:
    label: str
    method: str
    sigma: float
    result: RunResult


def demo_config(steps: int = 1000, seed: int = 0, eval_every: int = 20, device: str = "cpu") -> TrainConfig:
    return TrainConfig(steps=steps, checkpoint_freq=eval_every, seed=seed, device=device, **FIGURE1_CONFIG)


def plan(sigma: float = 0.5, tau: float = 0.1, eta: float = 0.1) -> list[tuple[str, str, float, dict]]:
    """The demo's runs: (label, method, noise sigma, method hyperparameters)."""
    return [
        ("ERM σ=0", "erm", 0.0, {}),
        (f"ERM σ={sigma}", "erm", sigma, {}),
        (f"MAT σ={sigma}", "mat", sigma, {"tau": tau}),
        (f"GroupDRO σ={sigma}", "groupdro", sigma, {"eta": eta}),
    ]


def run_demo(steps: int = 1000, seed: int = 0, sigma: float = 0.5, tau: float = 0.1, eta: float = 0.1,
             device: str = "cpu", callback=None) -> tuple[list[DemoRun], dict]:
    """Run the Figure-1 experiment; returns the runs and XRM's phase-1 summary on the noisy data.

    callback(stage, step) is called after each training step of each stage ("xrm" or a run label).
    """
    config = demo_config(steps, seed, device=device)
    data = {s: make_figure1(sigma=s, seed=seed) for s in {0.0, sigma}}
    stage_callback = (lambda stage: (lambda step, record: callback(stage, step))) if callback else (lambda stage: None)
    heldout = xrm(data[sigma], config, callback=stage_callback("xrm"))
    runs = []
    for label, method, s, hparams in plan(sigma, tau, eta):
        result = fit(data[s], method, config, heldout=heldout if s == sigma else None,
                     callback=stage_callback(label), **hparams)
        runs.append(DemoRun(label, method, s, result))
    return runs, phase1_summary(data[sigma], heldout)


def phase1_summary(data, heldout) -> dict:
    """XRM's flip rate and how well its inferred minority (m = 1) matches the true minority (a != y)."""
    train = data.mask("train")
    minority = torch.as_tensor(data.a[train] != data.y[train])
    inferred = heldout.inferred["train"].bool()
    hits = int((minority & inferred).sum())
    return {"flip_rate": heldout.flip_rate, "degenerate": heldout.degenerate,
            "minority_precision": hits / max(int(inferred.sum()), 1),
            "minority_recall": hits / max(int(minority.sum()), 1)}


def minority_accuracy(report: dict) -> float:
    """Mean accuracy of the minority groups "0,1" and "1,0" (examples where a != y)."""
    return float(np.mean([report["group_acc"][g] for g in ("0,1", "1,0")]))


def plot_demo(runs: list[DemoRun], path) -> None:
    """Per-group train/test accuracy over training for each run, and the decision boundaries
    in the plane of the core and spurious features (noise dimensions at zero)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs) + 1, figsize=(4.2 * (len(runs) + 1) + 1.5, 3.8))
    colours = {"0,0": "#1f77b4", "1,1": "#6baed6", "0,1": "#d62728", "1,0": "#fc9272"}
    for ax, run in zip(axes, runs):
        steps = [r["step"] for r in run.result.history]
        for group, colour in colours.items():
            kind = "majority" if group in ("0,0", "1,1") else "minority"
            for split, style in (("train", "--"), ("test", "-")):
                acc = [r[split]["group_acc"][group] for r in run.result.history]
                ax.plot(steps, acc, style, color=colour, lw=1.4,
                        label=f"{split} ({group}) {kind}" if ax is axes[0] else None)
        ax.set_title(run.label, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy per group (y,a)")
    axes[0].legend(fontsize=6.5, loc="lower right")
    _plot_boundaries(axes[-1], runs)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_boundaries(ax, runs: list[DemoRun]) -> None:
    data = make_figure1(sigma=runs[-1].sigma, seed=runs[-1].result.config["seed"])
    test = data.mask("test")
    core, spur = data.x[test, 0], data.x[test, 1]
    majority = data.a[test] == data.y[test]
    for mask, colour, label in ((majority, "#9ecae1", "majority"), (~majority, "#fcae91", "minority")):
        ax.scatter(core[mask], spur[mask], s=5, c=colour, label=f"test, {label}")
    xs = np.linspace(core.min(), core.max(), 50)
    for run, style in zip(runs, ("k:", "k--", "g-", "m-.")):
        w = run.result.model[-1].weight.detach().cpu().numpy()
        direction = w[1] - w[0]
        if abs(direction[1]) > 1e-12:
            ax.plot(xs, -direction[0] * xs / direction[1], style, lw=1.2, label=run.label)
        else:
            ax.axvline(0.0, ls=style[1:], color=style[0], lw=1.2, label=run.label)
    ax.set_ylim(spur.min() * 1.1, spur.max() * 1.1)
    ax.set_xlabel("core feature x_y")
    ax.set_ylabel("spurious feature x_a")
    ax.set_title("decision boundaries (noise dims = 0)", fontsize=10)
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.02, 1.0))
