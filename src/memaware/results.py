"""The stable summary of a run that `memaware run` writes to results.json (and sweeps reuse).

Keys: test_wga, test_avg_acc, test_wca, test_group_acc ("y,a" -> accuracy), val_wga, val_avg_acc,
val_wca, val_gi_wga, criterion, selected_step, hparams, train_config, setting; with overlapping
attributes also test_overlap_wga, test_overlap_group_acc ("y=k,NAME" -> accuracy), val_overlap_wga;
and test_/val_ + each of SCORE_KEYS (balanced accuracy, macro-F1, AUROC, ECE, worst-group ECE; None
where not measured, e.g. worst-group ECE without group labels).
"""
from __future__ import annotations

from .train.loop import RunResult

VAL_GROUPS_OF_CRITERION = {"va_wga": "true", "va_gi_wga": "inferred", "va_wca": "none", "va_avg": "none",
                           "last": "none"}


def setting_name(train_groups: str, val_groups: str) -> str:
    """A plain name for which group labels a result used in training and validation."""
    if train_groups == "true":
        return "group labels in training and validation" if val_groups == "true" else "group labels in training only"
    return "group labels in validation only" if val_groups == "true" else "no group labels anywhere"


def setting(train_groups: str, criterion: str) -> dict:
    """Which group labels a result used: in training, in validation (through its criterion), by name."""
    val_groups = VAL_GROUPS_OF_CRITERION[criterion]
    return {"train_groups": train_groups, "val_groups": val_groups, "name": setting_name(train_groups, val_groups)}


def selected_record(run: RunResult, criterion: str) -> dict:
    """The evaluation record chosen by `criterion` ("last": the final evaluation)."""
    return run.history[-1] if criterion == "last" else run.selected(criterion)


SCORE_KEYS = ("balanced_acc", "macro_f1", "auroc", "ece", "worst_group_ece")


def scores(record: dict) -> dict:
    """test_<key> and val_<key> for each of SCORE_KEYS in one evaluation record."""
    return {f"{split}_{key}": record[split].get(key) for split in ("test", "val") for key in SCORE_KEYS}


def summarize(run: RunResult, criterion: str) -> dict:
    """The results.json entry of one run selected by `criterion`."""
    record = selected_record(run, criterion)
    val, test = record["val"], record["test"]
    overlap = ({"test_overlap_wga": test["overlap_wga"], "test_overlap_group_acc": test["overlap_group_acc"],
                "val_overlap_wga": val["overlap_wga"]} if "overlap_wga" in test else {})
    return {**overlap,
        "test_wga": test.get("wga"),
        "test_avg_acc": test["avg_acc"],
        "test_wca": test["wca"],
        "test_group_acc": test.get("group_acc", {}),
        "val_wga": val.get("wga"),
        "val_avg_acc": val["avg_acc"],
        "val_wca": val["wca"],
        "val_gi_wga": val.get("gi_wga"),
        **scores(record),
        "criterion": criterion,
        "selected_step": record["step"],
        "method": run.method,
        "hparams": run.hparams,
        "train_config": run.config,
        "setting": {**setting(run.setting["train_groups"], criterion), "heldout": run.setting["heldout"]},
    }


def default_criterion(has_groups: bool, has_inferred: bool) -> str:
    """va_wga with true validation groups, else va_gi_wga with XRM-inferred ones, else worst-class accuracy."""
    return "va_wga" if has_groups else ("va_gi_wga" if has_inferred else "va_wca")


def over_seeds(per_seed: dict[int, dict]) -> dict:
    """One method's results.json entry from its entries per seed: every numeric metric is the mean over
    seeds (per-group accuracies too), `std` holds each one's standard deviation (ddof=1; None for one
    seed), `per_seed` each seed's entry; `selected_step`, `hparams`, `train_config` are the first seed's."""
    import numpy as np

    entries = list(per_seed.values())
    first = entries[0]
    numeric = [k for k, v in first.items() if isinstance(v, float) and k != "selected_step"
               and all(isinstance(e.get(k), float) for e in entries)]
    nested = [k for k, v in first.items() if k.endswith("group_acc") and isinstance(v, dict)]
    std = lambda values: float(np.std(values, ddof=1)) if len(values) > 1 else None  # noqa: E731
    out = {**first, **{k: float(np.mean([e[k] for e in entries])) for k in numeric}}
    for k in nested:
        out[k] = {g: float(np.mean([e[k][g] for e in entries if g in e[k]])) for g in first[k]}
    out["std"] = {k: std([e[k] for e in entries]) for k in numeric}
    out["seeds"] = list(per_seed)
    out["per_seed"] = {str(s): e for s, e in per_seed.items()}
    return out
