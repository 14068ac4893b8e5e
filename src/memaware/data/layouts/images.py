"""Image benchmarks as their public releases lay them out: Waterbirds, CelebA, MetaShift,
ImageNet-Backgrounds, and a generic metadata.csv + image folder."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..raw import RawData
from .base import (Layout, add_layout, image_paths, images_in, int_labels, need_columns, plain, raw_data, read_csv,
                   split_names)

WATERBIRDS_DIR = "waterbird_complete95_forest2water2"


def read_waterbirds(base: Path) -> RawData:
    """metadata.csv (img_filename, y = waterbird, place = water background, split 0/1/2) + images."""
    path = base / "metadata.csv"
    df = read_csv(path, ("img_filename", "y", "place", "split"))
    return raw_data("waterbirds", base, image_paths(base, list(df["img_filename"]), str(path)),
                    int_labels(df["y"], f"{path} column 'y'"), split_names(df["split"], f"{path} column 'split'"),
                    int_labels(df["place"], f"{path} column 'place'"),
                    info={"label": "waterbird", "attribute": "water background"})


def read_celeba_table(base: Path, stem: str, columns: tuple[str, ...]):
    """CelebA's `stem`.csv (Kaggle and GroupDRO layout) or `stem`.txt (the original release), by image_id."""
    import pandas as pd

    csv, txt = base / f"{stem}.csv", base / f"{stem}.txt"
    if csv.is_file() or not txt.is_file():
        return read_csv(csv, ("image_id",) + columns).set_index("image_id")
    try:
        if stem == "list_eval_partition":
            df = pd.read_csv(txt, sep=r"\s+", header=None, names=["image_id", "partition"], index_col=0)
        else:  # a count line, a header of attribute names, then one row per image
            df = pd.read_csv(txt, sep=r"\s+", skiprows=1)
    except Exception as err:
        raise DataError(f"{txt}: cannot read ({type(err).__name__})") from None
    need_columns(df, columns, txt)
    return df


def read_celeba(base: Path, target: str = "Blond_Hair", attribute: str = "Male") -> RawData:
    """list_attr_celeba (-1/1 attributes) + list_eval_partition (0/1/2) + img_align_celeba/."""
    attrs = read_celeba_table(base, "list_attr_celeba", (target, attribute))
    parts = read_celeba_table(base, "list_eval_partition", ("partition",))
    missing = attrs.index.difference(parts.index)
    if len(missing):
        raise DataError(f"{base}: image '{missing[0]}' has attributes but no entry in list_eval_partition")
    folder = next((base / d for d in ("img_align_celeba/img_align_celeba", "img_align_celeba")
                   if (base / d).is_dir()), None)
    if folder is None:
        raise DataError(f"{base}: missing the image folder img_align_celeba/")
    return raw_data("celeba", base, image_paths(folder, list(attrs.index), "list_attr_celeba"),
                    binary(attrs[target], target), split_names(parts.loc[attrs.index, "partition"].to_numpy(),
                                                                 "list_eval_partition"),
                    binary(attrs[attribute], attribute), info={"label": target, "attribute": attribute})


def binary(column, name: str) -> np.ndarray:
    """CelebA's -1/1 attribute values as 0/1."""
    v = column.to_numpy()
    odd = ~np.isin(v, (-1, 0, 1))
    if odd.any():
        raise DataError(f"list_attr_celeba: attribute '{name}' holds {plain(v[odd][0])!r}, expected -1 or 1")
    return (v == 1).astype(np.int64)


METASHIFT_DIRS = {"train/cat/cat(indoor)": (1, 1), "train/dog/dog(outdoor)": (0, 0),
                  "test/cat/cat(outdoor)": (1, 0), "test/dog/dog(indoor)": (0, 1)}


def read_metashift(base: Path, val_fraction: float = 0.1, test_fraction: float = 0.25,
                   seed: int = 0) -> RawData:
    """MetaShift cats vs dogs, attribute indoor: the four folders of the subpopulation-shift release,
    pooled and split at random (SubpopBench's fractions; the draw is seeded, on sorted file names)."""
    files, y, a = [], [], []
    for sub, (label, indoor) in METASHIFT_DIRS.items():
        if not (base / sub).is_dir():
            raise DataError(f"{base}: missing folder {sub}/ (expected {', '.join(METASHIFT_DIRS)})")
        found = images_in(base / sub)
        files += found
        y += [label] * len(found)
        a += [indoor] * len(found)
    n = len(files)
    n_test, n_val = int(n * test_fraction), int(n * val_fraction)
    if n - n_test - n_val < 1 or n_val < 1 or n_test < 1:
        raise DataError(f"{base}: {n} images are too few for val {val_fraction} and test {test_fraction}")
    split = np.repeat(np.array(["test", "val", "train"]), [n_test, n_val, n - n_test - n_val])
    split = split[np.random.default_rng(seed).permutation(n)]
    return raw_data("metashift", base, map(str, files), y, split, a,
                    info={"label": "cat", "attribute": "indoor", "seed": seed})


def class_folders(folder: Path) -> dict[int, Path]:
    """ImageNet-9's class folders 00_dog ... 08_fish, by class id."""
    if not folder.is_dir():
        raise DataError(f"missing folder {folder}")
    out = {int(m.group(1)): p for p in sorted(folder.iterdir()) if (m := re.match(r"(\d+)_", p.name)) and p.is_dir()}
    if not out:
        raise DataError(f"{folder}: no class folders named like 00_dog")
    return out


def read_backgrounds(base: Path, test_variants: tuple[str, ...] = ("original", "mixed_rand")) -> RawData:
    """ImageNet-9 backgrounds: in9l/train and in9l/val (a = 0) for training and validation,
    bg_challenge/VARIANT/val for test, with a = the index of VARIANT in `test_variants`."""
    parts = [("train", base / "in9l" / "train", 0), ("val", base / "in9l" / "val", 0)]
    parts += [("test", base / "bg_challenge" / v / "val", i) for i, v in enumerate(test_variants)]
    files, y, split, a = [], [], [], []
    for name, folder, attr in parts:
        for label, sub in class_folders(folder).items():
            found = images_in(sub)
            files += found
            y += [label] * len(found)
            split += [name] * len(found)
            a += [attr] * len(found)
    return raw_data("imagenet-backgrounds", base, map(str, files), y, split, a,
                    info={"label": "ImageNet-9 class", "attribute": "index of the test variant (in9l: 0)",
                          "test_variants": list(test_variants)})


def read_image_metadata(base: Path) -> RawData:
    """metadata.csv with filename, y, split (train/val/test or 0/1/2) and an optional a, + images."""
    path = base / "metadata.csv"
    df = read_csv(path, ("filename", "y", "split"))
    a = int_labels(df["a"], f"{path} column 'a'") if "a" in df.columns else None
    return raw_data("images", base, image_paths(base, list(df["filename"]), str(path)),
                    int_labels(df["y"], f"{path} column 'y'"), split_names(df["split"], f"{path} column 'split'"), a)


def register() -> None:
    add_layout(Layout(
        "waterbirds", "image", "Waterbirds (Sagawa et al. 2020): bird type x water/land background",
        f"{WATERBIRDS_DIR}/metadata.csv (img_filename, y, place, split 0/1/2) and the images it lists",
        (("metadata.csv", "place"),), read_waterbirds, subdirs=("", WATERBIRDS_DIR),
        provenance="CUB-200-2011 birds pasted on Places backgrounds (GroupDRO release)",
        licence="CUB-200-2011 and Places terms (research use)"))
    add_layout(Layout(
        "celeba", "image", "CelebA (Liu et al. 2015): Blond_Hair x Male by default",
        "list_attr_celeba.csv and list_eval_partition.csv (or the .txt originals) and img_align_celeba/",
        (("list_eval_partition.csv", None), ("list_eval_partition.txt", None)), read_celeba,
        subdirs=("", "celeba", "data"),
        provenance="CelebA aligned and cropped faces", licence="CelebA agreement: non-commercial research"))
    add_layout(Layout(
        "metashift", "image", "MetaShift cats vs dogs (Liang & Zou 2022), attribute indoor/outdoor",
        "MetaShift-Cat-Dog-indoor-outdoor/ with " + ", ".join(METASHIFT_DIRS),
        (("train/cat/cat(indoor)", None),), read_metashift,
        subdirs=("", "MetaShift-Cat-Dog-indoor-outdoor", "metashift/MetaShift-Cat-Dog-indoor-outdoor"),
        provenance="Visual Genome images (MetaShift subpopulation-shift release)", licence="CC BY 4.0"))
    add_layout(Layout(
        "imagenet-backgrounds", "image", "ImageNet-9 backgrounds challenge (Xiao et al. 2021), 9 classes",
        "in9l/{train,val}/NN_class/ and bg_challenge/{original,mixed_rand}/val/NN_class/",
        (("bg_challenge", None),), read_backgrounds, subdirs=("", "backgrounds_challenge"),
        provenance="ImageNet images with foregrounds and backgrounds recombined", licence="ImageNet terms"))
    add_layout(Layout(
        "images", "image", "your images: a metadata.csv and the image files it lists",
        "metadata.csv (filename, y, split, optional a) and the images it lists",
        (("metadata.csv", "filename"),), read_image_metadata, provenance="the user's folder"))
