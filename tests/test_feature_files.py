"""Feature files: .pt (weights_only) and .parquet round trips, and corrupt files (clear error, exit 2)."""
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import memaware.cli.core  # noqa: F401  (registers `memaware run`)
from memaware.cli import app
from memaware.analyze.folders import table_items
from memaware.data import Dataset, load, save
from memaware.errors import DataError


def features(n=24, d=5, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(rng.normal(size=(n, d)).astype(np.float32), np.arange(n) % 2, np.repeat(["train", "val", "test"],
                   n // 3), (np.arange(n) // 2) % 2, name="features")


class Payload:
    """Unpickling this would create a file: a .pt loader must refuse it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pt_round_trip_with_split_codes(tmp_path):
    ds = features()
    codes = torch.tensor([{"train": 0, "val": 1, "test": 2}[s] for s in ds.split])
    torch.save({"x": torch.as_tensor(ds.x), "y": torch.as_tensor(ds.y), "split": codes, "a": torch.as_tensor(ds.a)},
               tmp_path / "f.pt")
    back = load(tmp_path / "f.pt")
    assert np.array_equal(back.x, ds.x) and np.array_equal(back.y, ds.y) and np.array_equal(back.a, ds.a)
    assert back.split.tolist() == ds.split.tolist() and back.name == "f"


def test_parquet_round_trip_keeps_groups_and_picks_named_features(tmp_path):
    ds = features()
    save(ds, tmp_path / "f.parquet")
    table = pd.read_parquet(tmp_path / "f.parquet")
    assert list(table.columns) == ["f0", "f1", "f2", "f3", "f4", "y", "a", "split"]
    back = load(tmp_path / "f.parquet", features=["f1", "f3"])
    assert np.allclose(back.x, ds.x[:, [1, 3]]) and back.group_sizes() == ds.group_sizes()


def test_pt_refuses_pickled_objects_without_running_them(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"x": torch.zeros(3, 2), "y": torch.tensor([0, 1, 0]), "split": torch.tensor([0, 1, 2]),
                "extra": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match=r"evil\.pt: cannot read as \.pt with weights_only=True"):
        load(tmp_path / "evil.pt")
    assert not marker.exists()


def torch_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    torch.save({"x": torch.zeros(4, 3), "y": torch.tensor([0, 1, 0, 1])}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("name, write, message", [
    ("trunc.pt", lambda p: p.write_bytes(torch_bytes()[:40]), r"cannot read as \.pt with weights_only=True"),
    ("tensor.pt", lambda p: torch.save(torch.zeros(3), p), "must hold a dict of tensors with keys x, y, split"),
    ("codes.pt", lambda p: torch.save({"x": torch.zeros(3, 2), "y": torch.tensor([0, 1, 0]),
                                       "split": torch.tensor([0, 1, 3])}, p), "'split' has unknown code 3"),
    ("nox.pt", lambda p: torch.save({"y": torch.tensor([0, 1])}, p), "missing array 'x' .found: y."),
    ("junk.parquet", lambda p: p.write_bytes(b"PAR1 not really parquet"), r"cannot read as \.parquet"),
    ("nosplit.parquet", lambda p: pd.DataFrame({"f": [0.1, 0.2], "y": [0, 1]}).to_parquet(p),
     "missing column 'split'"),
    ("nan.parquet", lambda p: pd.DataFrame({"f": [0.1, np.nan, 0.3], "y": [0, 1, 0],
                                            "split": ["train", "val", "test"]}).to_parquet(p),
     "NaN or infinite values .row 1, feature 0."),
    ("junk.npz", lambda p: p.write_bytes(b"PK\x03\x04 broken zip"), r"cannot read as \.npz"),
])
def test_corrupt_feature_files(tmp_path, name, write, message):
    write(tmp_path / name)
    with pytest.raises(DataError, match=message) as err:
        load(tmp_path / name)
    assert str(err.value).startswith(str(tmp_path / name)) and "\n" not in str(err.value)


def test_run_on_a_corrupt_file_exits_2_and_writes_nothing(tmp_path):
    (tmp_path / "bad.pt").write_bytes(torch_bytes()[:40])
    result = CliRunner().invoke(app, ["run", "--data", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "cannot read as .pt" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".npz", ".csv", ".parquet"])
def test_item_names_are_kept_beside_the_features_and_never_used_as_one(tmp_path, suffix):
    ds, names = features(), [f"img/{i}.jpg" for i in range(24)]
    path = save(ds, tmp_path / f"f{suffix}", items=names)
    back = load(path)
    assert back.n_features == ds.n_features and np.allclose(back.x, ds.x)
    assert table_items({"data": str(path)}).tolist() == names
    assert table_items({"data": str(save(ds, tmp_path / f"plain{suffix}"))}) is None
