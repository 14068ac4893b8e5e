"""Text benchmarks as their public releases lay them out: MultiNLI (GroupDRO's negation metadata over
the official MultiNLI 1.0 release), CivilComments (WILDS), and a generic texts.csv."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..raw import RawData
from .base import Layout, add_layout, int_labels, raw_data, read_csv, split_names

MNLI_LABELS = {"contradiction": 0, "entailment": 1, "neutral": 2}
MNLI_FILES = ("multinli_1.0_train.jsonl", "multinli_1.0_dev_matched.jsonl", "multinli_1.0_dev_mismatched.jsonl")
CIVIL_IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white")


def read_jsonl_pairs(path: Path) -> list[tuple[str, str, str]]:
    """(sentence1, sentence2, gold_label) of each line of a MultiNLI .jsonl file."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                record = json.loads(line)
                rows.append((record["sentence1"], record["sentence2"], record["gold_label"]))
    except FileNotFoundError:
        raise DataError(f"missing {path} (from multinli_1.0.zip)") from None
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: line {number} is not a MultiNLI record ({type(err).__name__}: {err})") from None
    return rows


def read_multinli(base: Path, separator: str = " [SEP] ") -> RawData:
    """metadata_random.csv (row id, gold_label 0/1/2, sentence2_has_negation, split 0/1/2), whose row ids
    index the concatenated train, dev_matched and dev_mismatched files of multinli_1.0/. The text of an
    example is premise + separator + hypothesis."""
    path = base / "metadata_random.csv"
    if not path.is_file():
        path = base / "data" / "metadata_random.csv"
    meta = read_csv(path, ("gold_label", "sentence2_has_negation", "split"), index_col=0)
    folder = next((base / d for d in ("multinli_1.0", ".") if (base / d / MNLI_FILES[0]).is_file()),
                  base / "multinli_1.0")
    pairs = [row for name in MNLI_FILES for row in read_jsonl_pairs(folder / name)]
    rows = meta.index.to_numpy()
    if rows.dtype.kind not in "iu" or rows.min() < 0 or rows.max() >= len(pairs):
        raise DataError(f"{path}: row ids must index the {len(pairs)} records of multinli_1.0/*.jsonl")
    y = int_labels(meta["gold_label"], f"{path} column 'gold_label'")
    for i, label in zip(rows, y):
        if MNLI_LABELS.get(pairs[i][2]) != label:
            raise DataError(f"{path}: row {i} has gold_label {label} but the .jsonl says {pairs[i][2]!r} "
                            "(metadata and MultiNLI files do not belong together)")
    texts = [pairs[i][0] + separator + pairs[i][1] for i in rows]
    return raw_data("multinli", base, texts, y, split_names(meta["split"], f"{path} column 'split'"),
                    int_labels(meta["sentence2_has_negation"], f"{path} column 'sentence2_has_negation'"),
                    info={"label": "entailment (0 contradiction, 1 entailment, 2 neutral)",
                          "attribute": "hypothesis has a negation word", "separator": separator})


def read_civilcomments(base: Path, identities: tuple[str, ...] = CIVIL_IDENTITIES,
                       threshold: float = 0.5) -> RawData:
    """WILDS' all_data_with_identities.csv: comment_text, split (train/val/test), toxicity, and one
    column per identity. y = toxicity >= threshold; `attributes` holds each identity (>= threshold) and
    they overlap; `a` = "mentions any of them", the single attribute used for training groups."""
    path = base / "all_data_with_identities.csv"
    df = read_csv(path, ("comment_text", "split", "toxicity") + tuple(identities), low_memory=False)
    numbers = df[["toxicity", *identities]]
    text_columns = [c for c in numbers.columns if numbers[c].dtype.kind not in "fiub"]
    if text_columns:
        raise DataError(f"{path}: column '{text_columns[0]}' must be numeric scores in [0, 1]")
    attributes = (numbers[list(identities)].fillna(0).to_numpy() >= threshold).astype(np.int64)
    return raw_data("civilcomments", base, df["comment_text"].fillna("").astype(str),
                    (numbers["toxicity"].fillna(0).to_numpy() >= threshold),
                    split_names(df["split"], f"{path} column 'split'"), attributes.any(axis=1),
                    attributes=attributes, attribute_names=list(identities),
                    info={"label": "toxic", "attribute": "mentions any identity in attribute_names"})


def read_texts(base: Path) -> RawData:
    """texts.csv with text, y, split (train/val/test or 0/1/2) and an optional a."""
    path = base / "texts.csv"
    df = read_csv(path, ("text", "y", "split"))
    a = int_labels(df["a"], f"{path} column 'a'") if "a" in df.columns else None
    return raw_data("texts", base, df["text"].fillna("").astype(str), int_labels(df["y"], f"{path} column 'y'"),
                    split_names(df["split"], f"{path} column 'split'"), a)


def register() -> None:
    add_layout(Layout(
        "multinli", "text", "MultiNLI (Williams et al. 2018) with GroupDRO's negation attribute",
        "metadata_random.csv (gold_label, sentence2_has_negation, split) and multinli_1.0/*.jsonl",
        (("metadata_random.csv", "sentence2_has_negation"), ("data/metadata_random.csv", "sentence2_has_negation")),
        read_multinli, subdirs=("", "multinli"),
        provenance="MultiNLI 1.0 + group_DRO's dataset_metadata/multinli/metadata_random.csv",
        licence="MultiNLI: mostly OANC (free), some CC BY-SA 3.0; see the MultiNLI paper"))
    add_layout(Layout(
        "civilcomments", "text", "CivilComments (WILDS v1.0): toxicity, 8 overlapping identity attributes",
        "all_data_with_identities.csv (comment_text, split, toxicity, " + ", ".join(CIVIL_IDENTITIES) + ")",
        (("all_data_with_identities.csv", None),), read_civilcomments, subdirs=("", "civilcomments_v1.0"),
        provenance="Jigsaw Unintended Bias / Civil Comments, WILDS release", licence="CC0 1.0"))
    add_layout(Layout(
        "texts", "text", "your texts: a texts.csv", "texts.csv (text, y, split, optional a)",
        (("texts.csv", "text"),), read_texts, provenance="the user's folder"))
