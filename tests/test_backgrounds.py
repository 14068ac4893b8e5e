"""fashion-on-backgrounds: Fashion-MNIST items on synthetic land/water backgrounds, Waterbirds group sizes."""
import gzip

import numpy as np
import pytest

from memaware import featurize as fz
from memaware.data import backgrounds as bg
from memaware.data.registry import DATASETS
from memaware.errors import DataError
from memaware.train import TrainConfig, fit


@pytest.fixture(scope="module")
def images():
    return bg.make_images(scale=0.05, seed=0)


def test_full_scale_has_the_waterbirds_group_sizes():
    for split, sizes in {"train": (3498, 184, 56, 1057), "val": (467, 466, 133, 133),
                         "test": (2255, 2255, 642, 642)}.items():
        assert bg.group_counts(split, 1.0) == sizes
    _, labels = bg.read_fashion("t10k")
    picks, _ = bg.choose_items(labels, bg.group_counts("test", 1.0), np.random.default_rng(0))
    assert [len(p) for p in picks] == [2255, 2255, 642, 642]
    assert len(np.unique(np.concatenate(picks))) == 5794  # no item used twice


def test_labels_follow_the_item_classes_and_splits_do_not_share_items():
    _, labels = bg.read_fashion("train")
    rng = np.random.default_rng(0)
    train, used = bg.choose_items(labels, bg.group_counts("train", 0.1), rng)
    val, _ = bg.choose_items(labels, bg.group_counts("val", 0.1), rng, used)
    for g, pick in enumerate(train + val):
        assert set(labels[pick]) <= set(bg.FOOTWEAR if g % 4 // 2 else bg.GARMENTS)
    assert not set(np.concatenate(train)) & set(np.concatenate(val))


def test_scaled_images_groups_and_backgrounds(images):
    x, y, a, split = images
    assert x.shape == (590, 64, 64, 3) and x.dtype == np.uint8
    groups = {s: np.bincount(y[split == s] * 2 + a[split == s], minlength=4).tolist() for s in ("train", "val", "test")}
    assert groups == {"train": [175, 9, 3, 53], "val": [23, 23, 7, 7], "test": [113, 113, 32, 32]}
    border = np.concatenate([x[:, :4].reshape(len(x), -1, 3), x[:, -4:].reshape(len(x), -1, 3)], axis=1)
    blue_minus_green = border[..., 2].astype(float).mean(1) - border[..., 1].astype(float).mean(1)
    assert (blue_minus_green[a == 1] > 20).all() and (blue_minus_green[a == 0] < 0).all()


def test_generation_is_seeded(images):
    again = bg.make_images(scale=0.05, seed=0)
    assert all(np.array_equal(u, v) for u, v in zip(images, again))
    assert not np.array_equal(images[0], bg.make_images(scale=0.05, seed=1)[0])


def test_features_and_a_gap_for_erm(tmp_path):
    backbone = fz.efficientnet_lite0(bg.IMAGE_SIZE)
    data = bg.load_backgrounds(scale=0.1, cache_dir=tmp_path, backbone=backbone)
    assert data.x.shape == (1180, 1280) and data.name == "fashion-on-backgrounds"
    fresh = fz.efficientnet_lite0(bg.IMAGE_SIZE)
    cached = bg.load_backgrounds(scale=0.1, cache_dir=tmp_path, backbone=fresh)
    assert not fresh.loaded and np.array_equal(cached.x, data.x)
    config = TrainConfig(steps=501, batch_size=64, lr=1e-3, weight_decay=1e-4, checkpoint_freq=0)
    test = fit(data, "erm", config).history[-1]["test"]
    assert test["avg_acc"] > 0.75
    assert test["wga"] < test["avg_acc"] - 0.1
    assert min(test["group_acc"], key=test["group_acc"].get) in ("0,1", "1,0")  # a minority group is worst


def test_bad_idx_file_and_bad_scale(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x0D, 1, 0, 0, 0, 4]) + b"\0" * 16)
    with pytest.raises(DataError, match="not an IDX file of unsigned bytes"):
        bg.read_idx(path)
    with pytest.raises(DataError, match="scale=2"):
        bg.load_backgrounds(scale=2)


def test_registered_as_semi_synthetic(tmp_path):
    spec = DATASETS["fashion-on-backgrounds"]
    assert spec.kind == "semi-synthetic" and spec.available() is None
    assert bg.unavailable(tmp_path) == f"needs Fashion-MNIST in {tmp_path}: apt-get install dataset-fashion-mnist"
