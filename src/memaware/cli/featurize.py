"""`memaware featurize`: images or texts -> a features file that `memaware run --data` reads."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..errors import DataError, MemawareError
from . import app, user_errors
from .core import check_output, progress_bar, resolve_device

stdout = Console()


def read_input(source: str, layout: Optional[str]):
    """A RawData (CSV file, or a folder in a standard layout) or a registered data set's name."""
    from ..data.layouts import detect_layout, read_layout
    from ..featurize import read_items_csv

    path = Path(source)
    if path.suffix == ".csv":
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        return read_items_csv(path)
    if path.is_dir():
        return read_layout(layout or detect_layout(path), path)
    if layout is not None:
        raise DataError(f"{path}: no such folder")
    from ..data.registry import get_dataset

    return read_layout(source) if get_dataset(source).kind == "layout" else source


@app.command()
@user_errors
def featurize(
    source: str = typer.Argument(..., help="a CSV (path or text, y, split, optional a), a folder in a standard "
                                 "layout, or a data set name (see `memaware datasets`)"),
    out: Path = typer.Option(..., help="features file to write: .npz, .parquet or .csv"),
    layout: Optional[str] = typer.Option(None, help="the folder's layout (default: detected)"),
    backbone: Optional[str] = typer.Option(None, help="efficientnet-lite0 (images), all-MiniLM-L6-v2 (texts), "
                                           "torchvision:ARCH or timm:NAME with --weights, or a "
                                           "sentence-transformers folder"),
    weights: Optional[Path] = typer.Option(None, help="weights file for a torchvision or timm backbone"),
    image_size: int = typer.Option(224, min=16, help="images are resized to this many pixels a side"),
    batch_size: int = typer.Option(64, min=1),
    device: str = typer.Option("cpu", help="cpu, cuda or auto (cuda runs under bf16/fp16 autocast)"),
    cache_dir: Optional[Path] = typer.Option(None, help="feature cache (default: $MEMAWARE_CACHE or "
                                             "~/.cache/memaware)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="neither read nor write the cache"),
    limit: Optional[int] = typer.Option(None, help="for data sets that take it (finefood-negation): keep this "
                                        "many items"),
    scale: Optional[float] = typer.Option(None, help="for data sets that take it (fashion-on-backgrounds): "
                                          "multiply the group sizes by this fraction"),
):
    """Turn images or texts into features with a pretrained backbone, cached by inputs and backbone."""
    from ..data import save
    from ..data.raw import RawData
    from ..data.registry import load_dataset
    from ..featurize import DEFAULT_BACKBONES, default_cache_dir, featurize as run_featurize, get_backbone

    if out.suffix not in (".npz", ".parquet", ".csv"):
        raise MemawareError(f"--out {out}: use .npz, .parquet or .csv")
    check_output(out, folder=False)
    device = resolve_device(device)
    cache = None if no_cache else (cache_dir or default_cache_dir())
    data = read_input(source, layout)
    start = time.perf_counter()
    with progress_bar() as progress:
        task = progress.add_task(f"featurize {source}", total=None)
        tick = lambda done, total: progress.update(task, completed=done, total=total)  # noqa: E731
        if isinstance(data, RawData):
            if limit is not None or scale is not None:
                raise MemawareError("--limit and --scale apply to named data sets only")
            model = get_backbone(backbone or DEFAULT_BACKBONES[data.modality], weights, image_size)
            dataset = run_featurize(data, model, cache_dir=cache, batch_size=batch_size, device=device,
                                    callback=tick)
        else:
            if backbone or weights:
                raise MemawareError(f"--backbone/--weights: data set '{data}' fixes its own backbone")
            sizing = {k: v for k, v in {"limit": limit, "scale": scale}.items() if v is not None}
            dataset = load_dataset(data, {"cache_dir": cache, "device": device, "batch_size": batch_size,
                                          "callback": tick}, **sizing)
    save(dataset, out, items=data.items if isinstance(data, RawData) else None)
    elapsed = time.perf_counter() - start
    rate = f" ({len(dataset) / elapsed:.0f} items/s)" if elapsed > 0 else ""
    stdout.print(f"wrote {out}: {len(dataset)} rows x {dataset.n_features} features in {elapsed:.1f} s{rate}")
