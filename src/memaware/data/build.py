"""Layout folders built from data installed here: `memaware build NAME --to FOLDER`.

A registered data set with a builder writes its inputs as a folder in a standard layout, for whole networks
(`memaware run --backbone`, `memaware sweep` with a backbone): images as PNG files listed in metadata.csv
(filename, y, a, split; the `images` layout), texts in texts.csv (text, y, a, split; the `texts` layout).
The folder is written in a temporary folder beside the target and renamed into place once complete, with
a record of what was built (BUILT) inside it; building again into a finished folder of the same data set and
options does nothing.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import MemawareError
from .io import current_umask

BUILT = ".memaware-build.json"


def write_images(folder: Path, images: np.ndarray, y, a, split) -> None:
    """uint8 images (n, H, W, 3) as PNG files 0.png... with metadata.csv (the `images` layout)."""
    import pandas as pd
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{i}.png" for i in range(len(images))]
    for name, image in zip(names, images):
        Image.fromarray(image).save(folder / name)
    pd.DataFrame({"filename": names, "y": y, "a": a, "split": split}).to_csv(folder / "metadata.csv", index=False)


def write_texts(folder: Path, texts, y, a, split) -> None:
    """Texts with their labels as texts.csv (the `texts` layout)."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"text": list(texts), "y": y, "a": a, "split": split}).to_csv(folder / "texts.csv", index=False)


def builder_options(name: str, build, options: dict) -> dict:
    """`options` checked against the builder's keyword arguments (one line naming an unknown one)."""
    known = [p for p in inspect.signature(build).parameters if p != "folder"]
    unknown = [k for k in options if k not in known]
    if unknown:
        raise MemawareError(f"memaware build {name}: unknown option '{unknown[0]}' (options: "
                            f"{', '.join(known) or 'none'})")
    return options


def build(name: str, target: str | Path, **options) -> tuple[Path, bool]:
    """Write the layout folder of the registered data set `name` at `target`; returns (target, whether it
    was already built). A MemawareError when `name` has no builder, its data is not installed (the builder's
    own one line), or `target` holds something else."""
    from .registry import DATASETS, get_dataset

    spec = get_dataset(name)
    if spec.build is None:
        buildable = ", ".join(n for n, s in DATASETS.items() if s.build is not None)
        raise MemawareError(f"data set '{name}' has no builder (buildable: {buildable})")
    options = builder_options(name, spec.build, options)
    target = Path(target)
    record = {"name": name, "layout": spec.layout, "options": options}
    if (target / BUILT).is_file():
        if json.loads((target / BUILT).read_text()) == record:
            return target, True
        raise MemawareError(f"{target}: holds another build ({(target / BUILT).read_text().strip()}); choose "
                            "another folder")
    if target.exists():
        raise MemawareError(f"{target}: exists and is not a folder built by memaware build; choose another")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        spec.build(tmp, **options)
        (tmp / BUILT).write_text(json.dumps(record) + "\n")
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, False
