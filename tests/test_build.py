"""`memaware build`: offline data sets written as layout folders for whole networks (fashion-on-backgrounds-32's
groups and sizes, finefood-negation's texts), and the bad input it refuses."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

import memaware.cli.data  # noqa: F401  (registers the commands)
from memaware.cli import app
from memaware.data import backgrounds as bg
from memaware.data.build import BUILT, build
from memaware.data.layouts import read_layout
from memaware.data.stream import stream
from memaware.errors import MemawareError
from memaware.heldout import xrm
from memaware.train import TrainConfig, fit
from memaware.train.backbones import network

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["build", *args])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return build("fashion-on-backgrounds-32", tmp_path_factory.mktemp("b") / "fob32", scale=0.1)[0]


def test_fashion_on_backgrounds_32_has_half_the_minority_of_waterbirds_in_training():
    assert bg.group_counts("train", 1.0, bg.SMALL) == (3498, 92, 28, 1057)
    assert bg.group_counts("val", 1.0, bg.SMALL) == (467, 466, 133, 133)
    assert bg.group_counts("test", 1.0, bg.SMALL) == (2255, 2255, 642, 642)
    minority = sum(bg.group_counts("train", 1.0, bg.SMALL)[1:3]) / sum(bg.group_counts("train", 1.0, bg.SMALL))
    assert round(minority, 3) == 0.026


def test_the_built_folder_is_an_images_layout_of_32_px_pngs_with_the_recipes_groups(small):
    meta = pd.read_csv(small / "metadata.csv")
    groups = {s: meta[meta.split == s].groupby(["y", "a"]).size().tolist() for s in ("train", "val", "test")}
    assert groups == {s: [bg.group_counts(s, 0.1, bg.SMALL)[g] for g in range(4)] for s in groups}
    assert groups["train"] == [350, 9, 3, 106]
    with Image.open(small / meta.filename[0]) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    raw = read_layout("images", small)
    assert len(raw) == len(meta) and raw.modality == "image" and np.array_equal(raw.y, meta.y)
    assert json.loads((small / BUILT).read_text()) == {"name": "fashion-on-backgrounds-32", "layout": "images",
                                                        "options": {"scale": 0.1}}


def test_the_32_px_images_are_the_64_px_ones_averaged_in_blocks_of_four_pixels():
    big = bg.make_images(0.02, 0, recipe=dataclasses.replace(bg.SMALL, image_size=64))[0]
    small = bg.make_images(0.02, 0, recipe=bg.SMALL)[0]
    assert small.shape[1:] == (32, 32, 3)
    assert np.array_equal(small, np.round(big.reshape(len(big), 32, 2, 32, 2, 3).mean((2, 4))).astype(np.uint8))


def test_a_cnn_memorizes_the_minority_under_erm_and_mat_lifts_its_test_accuracy(small):
    """The paper's regime on a tiny build (468 training images, 12 in the minority groups (0,1) and (1,0)):
    ERM ends fitting the minority's training images while it gets the test minority of (1,0) wrong; MAT,
    shifted by the held-out logits of twin CNNs, is right on it at the step validation WGA selects."""
    images = stream(read_layout("images", small), network("cnn", image_size=32), workers=0)
    config = TrainConfig(steps=1000, batch_size=32, lr=1e-3, optimizer="adam", checkpoint_freq=100,
                         augment=False, seed=0)
    heldout = xrm(images, config.model_copy(update={"steps": 300}))
    assert heldout.flip_rate == pytest.approx(12 / 468, abs=0.01)
    erm, mat = (fit(images, m, config, heldout=heldout) for m in ("erm", "mat"))
    last = erm.history[-1]
    assert min(last["train"]["group_acc"][g] for g in ("0,1", "1,0")) >= 0.85
    assert last["test"]["group_acc"]["1,0"] <= 0.2
    erm_sel, mat_sel = erm.selected("va_wga")["test"], mat.selected("va_wga")["test"]
    assert mat_sel["group_acc"]["1,0"] >= erm_sel["group_acc"]["1,0"] + 0.3
    assert mat_sel["wga"] >= erm_sel["wga"] + 0.3


def test_building_again_into_the_same_folder_does_nothing_and_another_build_is_refused(small):
    before = (small / "metadata.csv").stat().st_mtime_ns
    assert build("fashion-on-backgrounds-32", small, scale=0.1) == (small, True)
    assert (small / "metadata.csv").stat().st_mtime_ns == before
    result = invoke("fashion-on-backgrounds-32", "--to", str(small), "--option", "scale=0.2")
    assert result.exit_code == 2 and "holds another build" in result.stderr and "Traceback" not in result.output


def test_finefood_negation_builds_a_texts_folder(tmp_path):
    result = invoke("finefood-negation", "--to", str(tmp_path / "ff"), "--option", "limit=80")
    assert result.exit_code == 0, result.output
    texts = pd.read_csv(tmp_path / "ff" / "texts.csv")
    assert len(texts) == 80 and list(texts.columns) == ["text", "y", "a", "split"]
    raw = read_layout("texts", tmp_path / "ff")
    assert raw.modality == "text" and set(raw.split) == {"train", "val", "test"}
    negated = texts.text.str.contains(r"\bnot\b|n't\b", case=False)
    assert (texts.a[negated] == 1).all()


@pytest.mark.parametrize("args, message", [
    (["adult"], "data set 'adult' has no builder (buildable: "),
    (["nope"], "unknown data set 'nope'"),
    (["finefood-negation", "--option", "colour=3"], "unknown option 'colour' (options: limit, val_fraction, seed)"),
    (["finefood-negation", "--option", "limit"], "--option 'limit': expected KEY=VALUE"),
    (["fashion-on-backgrounds-32", "--option", "scale=3"], "scale=3: expected a fraction in (0, 1]"),
], ids=["no-builder", "unknown", "option", "no-value", "scale"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    result = invoke(*args[:1], "--to", str(tmp_path / "out"), *args[1:])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_a_build_is_left_alone(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(MemawareError, match="exists and is not a folder built by memaware build"):
        build("finefood-negation", tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["keep.txt"]
