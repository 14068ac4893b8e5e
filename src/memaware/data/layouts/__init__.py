"""Readers for the field's standard benchmark layouts: point memaware at a folder, get a RawData.

Each layout reads a benchmark as its public release lays it out (file names, column names, split
codes) and returns image paths or texts with labels y, attribute a and splits, ready for
`memaware featurize`. A folder in the wrong layout gets a one-line DataError naming what is missing.
"""
from . import images, texts
from .base import LAYOUTS, Layout, detect_layout, read_layout

images.register()
texts.register()


def register() -> None:
    """Register every layout as a named data set of kind "layout" (load(root=FOLDER) -> RawData)."""
    from ..download import default_target
    from ..registry import DatasetSpec, register_dataset

    for layout in LAYOUTS.values():
        register_dataset(DatasetSpec(
            layout.name, "layout", layout.description,
            lambda root=None, _name=layout.name, **options: read_layout(_name, root, **options),
            needs=f"a folder: {layout.expects}", provenance=layout.provenance, licence=layout.licence,
            available=lambda _layout=layout: _missing_folder(_layout, default_target(_layout.name))))


def _missing_folder(layout: Layout, folder) -> str | None:
    if folder.is_dir() and layout.find(folder) is not None:
        return None
    from ..download import SOURCES

    fetchable = layout.name in SOURCES and all(src.url for src in SOURCES[layout.name])
    return f"not found in {folder}: pass root=FOLDER" + (
        f" or run `memaware download {layout.name}`" if fetchable else "")


__all__ = ["LAYOUTS", "Layout", "detect_layout", "read_layout", "register"]
