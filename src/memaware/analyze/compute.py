"""Memorization scores of every training example for each method of a run, and what they add up to."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.dataset import Dataset
from ..errors import MemawareError
from ..heldout.base import HeldOut
from ..train.config import TrainConfig
from . import scores as S
from .summary import group_summary, memorization_frame, top_examples, verdicts

DEFAULT_SCORES = ("crossfit_gap", "self_influence")
ESTIMATORS = {
    "crossfit_gap": "p(y) of the K-1 fold models that trained on the example minus that of the fold model that "
                    "did not, all trained with the method itself; cost: K trainings",
    "feldman_zhang": "mean p(y) of the models on random halves that saw the example minus the mean of those "
                     "that did not (Feldman and Zhang 2020); cost: m trainings on n/2 examples",
    "phase1_gap": "p(y) of the selected model minus p(y) of phase 1's held-out logits; cost: none; a "
                  "memorization score for ERM-like methods only (phase 1 is ERM-like)",
    "self_influence": "TracIn self-influence beyond the group: sum over checkpoints of lr x (steps between "
                      "checkpoints) x (g·g minus the mean of g·g' over the other examples of its group), g the "
                      "example's cross-entropy gradient of the last layer, g' theirs; cost: one training",
    "raw_self_influence": "plain TracIn self-influence: the same sum with the squared norm of the gradient; also "
                          "high for examples that are only hard; cost: one training",
}


@dataclass
class TrainedMethod:
    """A method as a run trained it: its label, registered name, configuration and hyperparameters, and
    (optionally) the selected model's logits on the train split, for the free phase-1 gap."""

    label: str
    method: str
    config: TrainConfig
    hparams: dict = field(default_factory=dict)
    heldin_logits: torch.Tensor | None = None


def method_scores(data: Dataset, trained: TrainedMethod, heldout: HeldOut | None = None,
                  scores=DEFAULT_SCORES, folds: int = 5, fz_models: int = 8, callback=None) -> dict[str, np.ndarray]:
    """The requested scores of every training example (by train position) for one method.

    phase1_gap is skipped when the run has no phase 1 or no selected-model logits."""
    unknown = [s for s in scores if s not in ESTIMATORS]
    if unknown:
        raise MemawareError(f"unknown score '{unknown[0]}' (known: {', '.join(ESTIMATORS)})")
    common = dict(method=trained.method, config=trained.config, heldout=heldout, callback=callback,
                  **trained.hparams)
    out = {}
    if "crossfit_gap" in scores:
        out["crossfit_gap"] = S.crossfit_gap(data, folds=folds, **common)
    if "feldman_zhang" in scores:
        out["feldman_zhang"] = S.feldman_zhang(data, models=fz_models, **common)
    if "phase1_gap" in scores and heldout is not None and trained.heldin_logits is not None:
        y = torch.as_tensor(data.y[data.mask("train")])
        out["phase1_gap"] = S.heldout_gap(trained.heldin_logits.cpu(), heldout.logits, y)
    for name, relative in (("self_influence", True), ("raw_self_influence", False)):
        if name in scores:
            out[name] = S.self_influence(data, relative=relative, **common)[0]
    return {k: v.cpu().numpy() for k, v in out.items()}


@dataclass
class Analysis:
    """Scores per example (frame), per-group summaries, the most memorized examples, and verdicts."""

    frame: pd.DataFrame
    summary: pd.DataFrame
    top: pd.DataFrame
    lines: list[str]
    settings: dict

    def write(self, out, figures: bool = True) -> list[Path]:
        """memorization.parquet, groups.csv, top.csv, analysis.json and (figures) memorization.png."""
        from ..data.io import write_json
        from ..saved import write_table

        out = Path(out)
        written = [write_table(self.frame, out / "memorization.parquet"), write_table(self.summary, out / "groups.csv"),
                   write_table(self.top, out / "top.csv")]
        write_json(out / "analysis.json", {**self.settings, "verdicts": self.lines})
        written.append(out / "analysis.json")
        if figures:
            from .figures import plot_score_distributions

            written.append(plot_score_distributions(self.frame, out / "memorization.png", self.by))
        return written

    @property
    def by(self) -> str:
        return self.settings["groups"]


def analyze(data: Dataset, methods: list[TrainedMethod], heldout: HeldOut | None = None, scores=DEFAULT_SCORES,
            folds: int = 5, fz_models: int = 8, top: int = 5, items=None, callback=None, setting: dict | None = None
            ) -> Analysis:
    """Score every training example for each method, then summarize per group (true groups "y,a" when
    the data has them, else phase 1's inferred groups "y,m")."""
    per_method = {m.label: method_scores(data, m, heldout, scores, folds, fz_models, callback) for m in methods}
    inferred = None if heldout is None or "train" not in heldout.inferred else heldout.inferred["train"].numpy()
    frame = memorization_frame(data, per_method, inferred)
    by = "group" if data.a is not None or inferred is None else "inferred_group"
    summary = group_summary(frame, by)
    computed = sorted({s for per in per_method.values() for s in per}, key=list(ESTIMATORS).index)
    settings = {"data": data.name, "n_train": int(data.mask("train").sum()), "groups": by,
                "scores": {s: ESTIMATORS[s] for s in computed}, "folds": folds, "fz_models": fz_models,
                "methods": {m.label: {"method": m.method, "hparams": m.hparams, "train_config": m.config.model_dump()}
                            for m in methods}, **(setting or {})}
    return Analysis(frame, summary, top_examples(frame, top, items, by), verdicts(summary, by), settings)
