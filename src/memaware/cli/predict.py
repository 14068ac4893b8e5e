"""`memaware predict`: apply a model saved by `memaware run` to new data."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..errors import MemawareError
from . import app, user_errors
from .core import check_output

stdout = Console()


@app.command()
@user_errors
def predict(
    run_dir: Path = typer.Argument(..., help="a folder written by `memaware run`"),
    method: str = typer.Option(..., help="the method whose saved model predicts"),
    data: str = typer.Option(..., help="a data file with the model's feature columns (or array 'x'), or a data "
                             "set's name; for a network (run --backbone), a folder in a layout; y, split and a "
                             "are used where present"),
    out: Path = typer.Option(..., help="predictions to write: .csv or .parquet"),
    seed: Optional[int] = typer.Option(None, help="which seed's model (default: the run's first seed)"),
):
    """Apply a model saved by `memaware run` to data; prints the accuracy per split where it has labels."""
    if out.suffix not in (".csv", ".parquet"):
        raise MemawareError(f"--out {out}: use .csv or .parquet")
    check_output(out, folder=False)
    from ..saved import load_model, predictions_frame, read_inputs, read_network_inputs, write_table

    model = load_model(run_dir, method, seed)
    if model.network is not None:  # a whole network: the folder's images or texts, evaluation form
        frame = predictions_frame(model, read_network_inputs(data, model))
    else:
        x, extras = read_inputs(data, model.meta)
        frame = prediction_table(model, x, extras)
    write_table(frame, out)
    for split, (acc, n) in split_accuracy(frame).items():
        stdout.print(f"{split}: accuracy {acc:.4f} on {n} examples")
    stdout.print(f"wrote {out}: {len(frame)} rows")


def prediction_table(model, x, extras: dict):
    """index, split, y, a (where given), pred and prob_k per row of `x`."""
    import numpy as np
    import pandas as pd
    import torch

    from ..data.dataset import int_labels, split_names
    from ..train.loop import predict_logits

    probs = torch.softmax(predict_logits(model, torch.as_tensor(x)).float(), 1).numpy()
    frame = {"index": np.arange(len(x))}
    if "split" in extras:
        frame["split"] = split_names(extras["split"])
    frame.update({k: int_labels(extras[k], k) for k in ("y", "a") if k in extras})
    frame["pred"] = probs.argmax(1)
    frame.update({f"prob_{k}": probs[:, k] for k in range(probs.shape[1])})
    return pd.DataFrame(frame)


def split_accuracy(frame) -> dict[str, tuple[float, int]]:
    """(accuracy, count) per split, or over all rows without a split column; empty without labels."""
    if "y" not in frame:
        return {}
    correct = frame["pred"] == frame["y"]
    groups = correct.groupby(frame["split"]) if "split" in frame else [("all", correct)]
    order = {"train": 0, "val": 1, "test": 2}
    return {str(s): (float(c.mean()), len(c)) for s, c in sorted(groups, key=lambda g: order.get(g[0], 3))}
