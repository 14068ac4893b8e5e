"""Per-example memorization tables, per-group summaries, the most memorized examples, one-line verdicts."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.dataset import Dataset

PROBABILITY_SCORES = ("crossfit_gap", "feldman_zhang", "phase1_gap")
SCORES = PROBABILITY_SCORES + ("self_influence", "raw_self_influence")
MEMORIZED = 0.25  # a probability gap above this counts as memorized
TOP_QUANTILE = 0.9  # self-influence has no natural scale: "high" is above this quantile over all rows
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def memorization_frame(data: Dataset, scores: dict[str, dict[str, np.ndarray]], inferred=None) -> pd.DataFrame:
    """One row per (method, training example): method, index, split, y, a, group, inferred_group, each score.

    scores: {method: {score name: (n_train,) array by train position}}; inferred: the train split's
    inferred attribute m (phase 1), giving inferred_group "y,m".
    """
    train = data.mask("train")
    base = {"index": np.flatnonzero(train), "split": "train", "y": data.y[train]}
    if data.a is not None:
        base["a"] = data.a[train]
    base["group"] = group_labels(data.y[train], None if data.a is None else data.a[train])
    if inferred is not None:
        base["inferred_group"] = group_labels(data.y[train], np.asarray(inferred))
    frames = [pd.DataFrame({"method": method, **base, **{k: np.asarray(v, dtype=float) for k, v in per.items()}})
              for method, per in scores.items()]
    return pd.concat(frames, ignore_index=True)


def group_labels(y: np.ndarray, a: np.ndarray | None) -> np.ndarray:
    """"y,a" per example (the class "y" alone without an attribute)."""
    return np.array([f"{yi},{ai}" for yi, ai in zip(y, a)] if a is not None else [str(v) for v in y])


def score_columns(frame: pd.DataFrame) -> list[str]:
    return [s for s in SCORES if s in frame.columns]


def thresholds(frame: pd.DataFrame) -> dict[str, float]:
    """What counts as high for each score: MEMORIZED for probability gaps, the TOP_QUANTILE of all rows
    for self-influence."""
    return {s: MEMORIZED if s in PROBABILITY_SCORES else float(frame[s].quantile(TOP_QUANTILE))
            for s in score_columns(frame)}


def group_summary(frame: pd.DataFrame, by: str = "group") -> pd.DataFrame:
    """Per method, score and group: n, mean, quantiles and the share of examples above the score's threshold."""
    limits = thresholds(frame)
    rows = []
    for (method, group), part in frame.groupby(["method", by], sort=True):
        for score in score_columns(frame):
            values = part[score].dropna().to_numpy()
            if not len(values):
                continue
            q = np.quantile(values, QUANTILES)
            rows.append({"method": method, by: group, "score": score, "n": len(values), "mean": values.mean(),
                         **{f"q{int(100 * p)}": v for p, v in zip(QUANTILES, q)},
                         "threshold": limits[score], "share_above": float((values > limits[score]).mean())})
    return pd.DataFrame(rows)


def primary_score(frame: pd.DataFrame) -> str:
    """The score verdicts use: the same-method gap where computed, else the first available."""
    return score_columns(frame)[0]


def top_examples(frame: pd.DataFrame, k: int = 5, items: np.ndarray | None = None, by: str = "group") -> pd.DataFrame:
    """The k examples of each method and group with the highest primary score (with their item: file
    name or text, where `items`, over all examples of the data set, is given)."""
    score = primary_score(frame)
    top = (frame.dropna(subset=[score]).sort_values(score, ascending=False, kind="stable")
           .groupby(["method", by], sort=True).head(k)
           .sort_values(["method", by, score], ascending=[True, True, False]))
    columns = ["method", by, "index", "y"] + (["a"] if "a" in frame else []) + score_columns(frame)
    top = top[columns].reset_index(drop=True)
    if items is not None:
        top["item"] = [str(items[i]) for i in top["index"]]
    return top


def verdict(row, by: str) -> str:
    share = row["share_above"]
    word = "memorized" if share >= 0.5 else "partly memorized" if share >= 0.1 else "not memorized"
    kind = "group" if by == "group" else "inferred group"
    return (f"{row['method']}, {kind} {row[by]} (n={row['n']}): {row['score']} mean {row['mean']:.3f}, "
            f"{100 * share:.0f}% above {row['threshold']:.3g}: {word}")


def verdicts(summary: pd.DataFrame, by: str = "group") -> list[str]:
    """One line per method and group, on the primary score."""
    score = next(s for s in SCORES if s in set(summary["score"]))
    return [verdict(row, by) for _, row in summary[summary["score"] == score].iterrows()]


def ranking_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of `scores` ranking the `positive` examples above the others (ties count half; NaN scores
    are left out): the probability that a random positive outscores a random negative."""
    keep = ~np.isnan(scores)
    scores, positive = scores[keep], positive[keep].astype(bool)
    ranks = pd.Series(scores).rank().to_numpy()
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if not n_pos or not n_neg:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def minority_aucs(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per method and score: the AUC of the score ranking minority examples (a != y) above majority ones."""
    out = {}
    for method, part in frame.groupby("method", sort=False):
        minority = (part["a"] != part["y"]).to_numpy()
        out[method] = {s: ranking_auc(part[s].to_numpy(), minority) for s in score_columns(frame)}
    return out
