"""The data model: validation of the contract, splits, group sizes, file round trips."""
import numpy as np
import pytest

from memaware.data import Dataset, load, make_figure1, make_multiclass, save
from memaware.errors import DataError


def arrays(n=12):
    rng = np.random.default_rng(0)
    split = np.array(["train"] * 6 + ["val"] * 3 + ["test"] * 3)
    return dict(x=rng.normal(size=(n, 3)), y=np.tile([0, 1], n // 2), split=split, a=np.tile([0, 0, 1], n // 3))


def test_groups_and_splits():
    ds = Dataset(**arrays())
    train = ds.get("train")
    assert len(train) == 6 and train.index.tolist() == list(range(6))
    assert train.groups.tolist() == (train.y * 2 + train.a).tolist()
    assert ds.group_sizes()["val"] == {"0,0": 1, "0,1": 1, "1,0": 1}


@pytest.mark.parametrize("order", ["blocks", "interleaved"])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_split_is_its_own_copy_of_the_rows_of_its_name(order, device):
    """Splits in blocks of rows and interleaved give the same rows; on the host a split is a copy (training
    code may change it in place), and on another device (meta stands for any) it has the split's shape."""
    data = arrays()
    if order == "interleaved":
        data["split"] = np.array(["train", "val", "test"] * 4)
    ds = Dataset(**data)
    x = ds.x.copy()
    for name in ("train", "val", "test"):
        split, rows = ds.get(name, device), np.flatnonzero(data["split"] == name)
        assert split.x.device.type == device and split.x.shape == (len(rows), 3) and len(split.a) == len(rows)
        if device == "cpu":
            assert np.array_equal(split.x.numpy(), x[rows]) and split.y.tolist() == data["y"][rows].tolist()
            assert split.a.tolist() == data["a"][rows].tolist() and split.index.tolist() == rows.tolist()
            split.x.zero_()
            assert np.array_equal(ds.x, x)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(x=np.where(np.eye(12, 3) > 0, np.nan, d["x"])), "NaN or infinite values \\(row 0, feature 0\\)"),
    (lambda d: d.update(x=np.full((12, 3), np.inf)), "NaN or infinite"),
    (lambda d: d.update(y=np.tile([0.0, 1.5], 6)), "integer labels, found 1.5"),
    (lambda d: d.update(y=np.array(["cat", "dog"] * 6)), "integer labels"),
    (lambda d: d.update(y=np.zeros(12, int)), "single class"),
    (lambda d: d.update(split=np.array(["train"] * 9 + ["test"] * 3)), "split 'val' is empty"),
    (lambda d: d.update(split=np.array(["train"] * 6 + ["dev"] * 3 + ["test"] * 3)), "unknown value 'dev'"),
    (lambda d: d.update(a=np.zeros(5, int)), "different lengths"),
    (lambda d: d.update(y=np.tile([0, -1], 6)), ">= 0"),
])
def test_bad_arrays_raise_one_line_errors(change, message):
    d = arrays()
    change(d)
    with pytest.raises(DataError, match=message) as err:
        Dataset(**d)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("suffix", [".npz", ".csv", ".parquet"])
def test_file_round_trip(tmp_path, suffix):
    ds = Dataset(**arrays())
    path = save(ds, tmp_path / f"d{suffix}")
    back = load(path)
    assert np.allclose(back.x, ds.x, atol=1e-6) and (back.y == ds.y).all() and (back.a == ds.a).all()
    assert (back.split == ds.split).all()


def test_figure1_generator_has_the_papers_shape_and_proportions():
    ds = make_figure1(seed=0)
    assert ds.x.shape == (3000, 1800)
    train, test = ds.mask("train"), ds.mask("test")
    minority_train = (ds.a[train] != ds.y[train]).mean()
    minority_test = (ds.a[test] != ds.y[test]).mean()
    assert 0.07 < minority_train < 0.13 and 0.45 < minority_test < 0.55
    s = 2 * ds.y - 1
    assert (np.sign(ds.x[:, 0]) == -s).all()  # core feature close to -s
    assert np.allclose(np.abs(ds.x[:, 1]).mean(), 5.0, atol=0.1)
    assert (np.sign(ds.x[:, 1]) == -(2 * ds.a - 1)).all()  # spurious sign follows a
    assert np.allclose(ds.x[:, 2:].std(), 0.5, atol=0.01)


def test_multiclass_generator():
    ds = make_multiclass(n=300, n_classes=4, d=40, seed=1)
    assert ds.n_classes == 4 and ds.n_attrs == 4 and ds.x.shape == (900, 40)
    train = ds.mask("train")
    assert 0.85 < (ds.a[train] == ds.y[train]).mean() < 0.95
    assert (ds.x[:, :4].argmax(1) == ds.y).mean() > 0.99


@pytest.mark.parametrize("suffix", [".npz", ".csv", ".parquet"])
def test_overlapping_attributes_round_trip_and_are_evaluated(tmp_path, suffix):
    import json

    from typer.testing import CliRunner

    import memaware.cli.core  # noqa: F401
    from memaware.cli import app

    base = make_figure1(n=60, d=6, seed=0)
    rng = np.random.default_rng(0)
    attributes = (rng.random((len(base), 2)) < 0.3).astype(int)
    ds = Dataset(base.x, base.y, base.split, base.a, attributes=attributes, attribute_names=["female", "muslim"])
    back = load(save(ds, tmp_path / f"d{suffix}"))
    assert back.attribute_names == ["female", "muslim"] and (back.attributes == attributes).all()
    assert back.x.shape == ds.x.shape  # attribute columns are not features
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--data", str(tmp_path / f"d{suffix}"), "--methods", "erm",
                                      "--steps", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    entry = json.loads((out / "results.json").read_text())["methods"]["erm"]
    assert set(entry["test_overlap_group_acc"]) <= {f"y={k},{n}" for k in (0, 1) for n in ("female", "muslim")}
    assert entry["test_overlap_wga"] == min(entry["test_overlap_group_acc"].values())


def test_bad_attributes_are_refused():
    d = arrays()
    with pytest.raises(DataError, match="2 columns but 1 attribute names"):
        Dataset(**d, attributes=np.zeros((12, 2)), attribute_names=["x"])
    with pytest.raises(DataError, match="0/1 values"):
        Dataset(**d, attributes=np.full((12, 1), 2), attribute_names=["x"])


def test_standardized_uses_train_statistics_only():
    d = arrays()
    d["x"][:, 2] = 7.0  # a constant feature is only centred
    ds = Dataset(**d).standardized()
    train = ds.x[ds.mask("train")]
    assert np.allclose(train[:, :2].mean(0), 0, atol=1e-6) and np.allclose(train[:, :2].std(0), 1, atol=1e-5)
    assert np.allclose(ds.x[:, 2], 0)
    raw = Dataset(**arrays())
    scale = raw.x[raw.mask("train")].std(0)
    expected_test = (raw.x[raw.mask("test")] - raw.x[raw.mask("train")].mean(0)) / scale
    assert np.allclose(ds.x[ds.mask("test")][:, :2], expected_test[:, :2], atol=1e-5)
