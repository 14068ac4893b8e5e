"""What a standard layout is, how one is found in a folder, and the checks every reader shares."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import DataError
from ..raw import RawData

SPLIT_CODES = {"0": "train", "1": "val", "2": "test", "train": "train", "val": "val", "test": "test"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class Layout:
    """A benchmark's folder layout as its public release lays it out.

    markers: paths (relative to the layout's base folder), any of which identifies it, each with an
    optional column its CSV must have; subdirs: where below the folder a user points to the base may lie.
    read(base, **options) -> RawData.
    """

    name: str
    modality: str
    description: str
    expects: str
    markers: tuple[tuple[str, str | None], ...]
    read: Callable[..., RawData]
    subdirs: tuple[str, ...] = ("",)
    provenance: str = ""
    licence: str = ""

    def find(self, root: Path, check_columns: bool = True) -> Path | None:
        """The base folder of this layout at or below `root`, or None (marker columns checked if asked)."""
        for sub in self.subdirs:
            base = root / sub
            for path, column in self.markers:
                if (base / path).exists() and (not check_columns or column is None
                                               or column in csv_header(base / path)):
                    return base
        return None


LAYOUTS: dict[str, Layout] = {}


def add_layout(layout: Layout) -> Layout:
    LAYOUTS[layout.name] = layout
    return layout


def csv_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [c.strip().strip('"') for c in f.readline().rstrip("\r\n").split(",")]
    except OSError:
        return []


def read_csv(path: Path, columns: tuple[str, ...], **kwargs):
    """A CSV as a DataFrame, with a one-line DataError if it is unreadable or lacks a column."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: missing (expected a CSV with columns {', '.join(columns)})")
    try:
        df = pd.read_csv(path, **kwargs)
    except Exception as err:
        raise DataError(f"{path}: cannot read as CSV ({type(err).__name__}: {err})".splitlines()[0]) from None
    need_columns(df, columns, path)
    return df


def need_columns(df, columns, where) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns[:12])) + (", ..." if len(df.columns) > 12 else "")
        raise DataError(f"{where}: missing column '{missing[0]}' (expected {', '.join(columns)}; found {found})")


def int_labels(values, where: str) -> np.ndarray:
    """Integer labels >= 0 from a column, or a DataError naming the first bad value."""
    import pandas as pd

    v = np.asarray(values)
    f = pd.to_numeric(pd.Series(v), errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(f) & (f == np.round(np.nan_to_num(f))) & (f >= 0))
    if bad.any():
        raise DataError(f"{where}: expected integer labels >= 0, found {plain(v[np.argmax(bad)])!r}")
    return f.astype(np.int64)


def plain(value):
    """A numpy scalar as the Python value it holds, for messages."""
    return value.item() if isinstance(value, np.generic) else value


def split_names(values, where: str) -> np.ndarray:
    """train/val/test from a split column holding the public releases' codes 0/1/2 or the names."""
    values = np.asarray(values)
    names = [SPLIT_CODES.get(str(v).strip().removesuffix(".0")) for v in values]
    if None in names:
        bad = plain(values[names.index(None)])
        raise DataError(f"{where}: unknown split {bad!r} (expected 0/1/2 or train/val/test)")
    return np.asarray(names)


def image_paths(base: Path, files, where: str) -> list[str]:
    """Absolute image paths under `base`; a DataError names the first file that is missing."""
    paths = [str(base / f) for f in files]
    for f, p in zip(files, paths):
        if not Path(p).is_file():
            raise DataError(f"{where}: lists image '{f}', which is missing under {base}")
    return paths


def images_in(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def raw_data(layout: str, base: Path, items, y, split, a=None, **fields) -> RawData:
    """A RawData of the layout `layout`, recording where it was read from."""
    info = {"layout": layout, "root": str(base), **fields.pop("info", {})}
    return RawData(list(items), LAYOUTS[layout].modality, np.asarray(y, np.int64), np.asarray(split),
                   None if a is None else np.asarray(a, np.int64), name=layout, info=info, **fields)


def detect_layout(root: str | Path) -> str:
    """The name of the layout found at `root`; a DataError lists what each layout expects."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    for name, layout in LAYOUTS.items():
        if layout.find(root) is not None:
            return name
    expected = "; ".join(f"{n}: {lay.expects}" for n, lay in LAYOUTS.items())
    raise DataError(f"{root}: no known layout found (expected one of: {expected})")


def read_layout(name: str, root: str | Path | None = None, **options) -> RawData:
    """Read the folder `root` (default: where `memaware download NAME` puts it) in the layout `name`."""
    from ..download import default_target

    if name not in LAYOUTS:
        raise DataError(f"unknown layout '{name}' (known: {', '.join(LAYOUTS)})")
    layout = LAYOUTS[name]
    root = Path(root) if root is not None else default_target(name)
    base = layout.find(root, check_columns=False) if root.is_dir() else None
    if base is None:
        raise DataError(f"{root}: not a {name} folder: expected {layout.expects}")
    known = inspect.signature(layout.read).parameters
    unknown = [k for k in options if k not in known or k == "base"]
    if unknown:
        raise DataError(f"{name}: unknown option '{unknown[0]}' (options: {', '.join(list(known)[1:]) or 'none'})")
    return layout.read(base, **options)
