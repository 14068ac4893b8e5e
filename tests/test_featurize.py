"""memaware featurize: backbones, mixed-precision choice, the feature cache, CSV input and the CLI."""
import csv
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import memaware.cli.featurize  # noqa: F401  (registers the command)
from memaware import featurize as fz
from memaware.analyze.folders import table_items
from memaware.cli import app
from memaware.data import load
from memaware.errors import DataError, MissingExtraError


class CountingBackbone(fz.Backbone):
    """A text backbone whose features are known: (length, number of vowels); counts its calls."""

    modality, key, name = "text", "text:counting:v1", "counting"

    def __init__(self):
        super().__init__(lambda: torch.nn.Identity())
        self.calls = 0

    def encode(self, batch, device):
        self.calls += 1
        return torch.tensor([[len(t), sum(c in "aeiou" for c in t)] for t in batch], dtype=torch.float32)


@pytest.fixture(scope="module")
def effnet():
    return fz.efficientnet_lite0(image_size=32)


@pytest.fixture
def image_csv(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
        rows.append((f"im{i}.png", i % 2, (i // 2) % 2, ("train", "val", "test")[i % 3] if i >= 6 else "train"))
    path = tmp_path / "items.csv"
    write_csv(path, ["path", "y", "a", "split"], rows)
    return path


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def test_autocast_dtype_picks_bf16_or_fp16_on_cuda_and_none_on_cpu():
    assert fz.autocast_dtype("cpu") is None
    assert fz.autocast_dtype("cuda", bf16_supported=True) is torch.bfloat16
    assert fz.autocast_dtype("cuda:1", bf16_supported=False) is torch.float16


def test_default_cache_dir_comes_from_the_environment_given():
    assert fz.default_cache_dir({"MEMAWARE_CACHE": "/x/y"}) == Path("/x/y")
    assert fz.default_cache_dir({}) == Path.home() / ".cache" / "memaware"


def test_embed_reads_the_cache_on_the_second_run(tmp_path):
    backbone, cache = CountingBackbone(), fz.FeatureCache(tmp_path)
    texts = ["banana", "kiwi", "apple pie", "x"]
    first = fz.embed(texts, backbone, cache=cache, batch_size=3)
    assert backbone.calls == 2
    np.testing.assert_array_equal(first, [[6, 3], [4, 2], [9, 4], [1, 0]])  # original order kept
    second = fz.embed(texts, backbone, cache=cache, batch_size=3)
    assert backbone.calls == 2  # not called again
    np.testing.assert_array_equal(first, second)
    fz.embed(texts[:3] + ["y"], backbone, cache=cache, batch_size=3)
    assert backbone.calls == 4  # other inputs, other key


def test_cache_key_depends_on_file_size_and_mtime(tmp_path, effnet):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path)
    key = fz.cache_key(effnet, fz.fingerprint([path]))
    assert key == fz.cache_key(effnet, fz.fingerprint([path]))
    os.utime(path, ns=(1, 1))
    assert key != fz.cache_key(effnet, fz.fingerprint([path]))
    assert fz.cache_key(effnet, "x") != fz.cache_key(fz.efficientnet_lite0(image_size=64), "x")


def test_efficientnet_features_from_image_files(image_csv, effnet, tmp_path):
    raw = fz.read_items_csv(image_csv)
    assert raw.modality == "image" and len(raw) == 12
    data = fz.featurize(raw, effnet, cache_dir=tmp_path / "cache", batch_size=5)
    assert data.x.shape == (12, 1280) and np.isfinite(data.x).all()
    assert data.group_sizes()["train"] == {"0,0": 2, "0,1": 2, "1,0": 3, "1,1": 1}
    assert data.x.std(0).max() > 0  # distinct images, distinct features
    again = fz.featurize(raw, effnet, batch_size=12)
    np.testing.assert_allclose(data.x, again.x, atol=1e-4)  # batching does not change features


def test_cli_writes_a_features_file_and_hits_the_cache(image_csv, tmp_path, monkeypatch):
    built = []
    original = fz.get_backbone
    monkeypatch.setattr(fz, "get_backbone", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    out = tmp_path / "features.npz"
    args = ["featurize", str(image_csv), "--out", str(out), "--image-size", "32", "--cache-dir", str(tmp_path / "c")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = load(out)
    assert data.x.shape == (12, 1280) and data.has_groups
    assert built[0].loaded
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not built[1].loaded  # the second run never built the model
    np.testing.assert_array_equal(load(out).x, data.x)


def test_corrupt_image_is_named(tmp_path, effnet):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.png: cannot read as an image"):
        fz.embed([tmp_path / "bad.png"], effnet)


@pytest.mark.parametrize("header,rows,message", [
    (["file", "y", "split"], [("a.png", 0, "train")], "exactly one of the columns 'path' or 'text'"),
    (["text", "split"], [("hi", "train")], "missing column 'y'"),
    (["path", "y", "split"], [("nope.png", 0, "train")], "image file .*nope.png not found"),
])
def test_bad_csv_gives_one_line_error_and_exit_code_2(tmp_path, header, rows, message):
    path = tmp_path / "in.csv"
    write_csv(path, header, rows)
    with pytest.raises(DataError, match=message):
        fz.read_items_csv(path)
    result = CliRunner().invoke(app, ["featurize", str(path), "--out", str(tmp_path / "o.npz")])
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.npz").exists()


def test_cli_rejects_bad_options(image_csv, tmp_path):
    run = lambda *extra: CliRunner().invoke(app, ["featurize", str(image_csv), "--out", *extra])  # noqa: E731
    assert "use .npz, .parquet or .csv" in run(str(tmp_path / "o.txt")).output
    result = run(str(tmp_path / "o.npz"), "--backbone", "resnet-9000")
    assert result.exit_code == 2 and "unknown backbone 'resnet-9000'" in result.output
    result = run(str(tmp_path / "o.npz"), "--backbone", "torchvision:resnet50")
    assert result.exit_code == 2 and "needs --weights FILE" in result.output
    result = run(str(tmp_path / "o.npz"), "--backbone", "all-MiniLM-L6-v2")
    assert result.exit_code == 2 and "takes texts, but the data holds images" in result.output


@pytest.mark.parametrize("module,name,extra", [("torchvision", "torchvision:resnet50", "vision"),
                                               ("efficientnet_lite_pytorch", "efficientnet-lite0", "vision"),
                                               ("sentence_transformers", "all-MiniLM-L6-v2", "text")])
def test_missing_extra_names_the_install_command(monkeypatch, tmp_path, module, name, extra):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingExtraError, match=rf"{module}.* is not installed: pip install 'memaware\[{extra}\]'"):
        fz.get_backbone(name, weights=weights)


def test_cli_cuda_on_a_machine_without_cuda_is_a_clear_error(image_csv, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["featurize", str(image_csv), "--out", str(tmp_path / "o.npz"), "--device", "cuda"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "CUDA is not available" in result.output


def test_cli_writes_a_named_data_set(tmp_path):
    out = tmp_path / "compas.parquet"
    result = CliRunner().invoke(app, ["featurize", "compas", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(load(out)) == 5278
    result = CliRunner().invoke(app, ["featurize", "compas", "--out", str(out), "--limit", "100"])
    assert result.exit_code == 2 and "data set 'compas' does not take the option 'limit'" in result.output
    result = CliRunner().invoke(app, ["featurize", "no-such-set", "--out", str(out)])
    assert result.exit_code == 2 and "unknown data set 'no-such-set'" in result.output


def test_cli_featurizes_a_folder_in_a_standard_layout(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(9):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.jpg")
        rows.append((f"p{i}.jpg", i % 2, i // 2 % 2, ("train", "train", "val", "test")[i % 4]))
    write_csv(tmp_path / "metadata.csv", ["filename", "y", "a", "split"], rows)
    out = tmp_path / "f.npz"
    args = ["featurize", str(tmp_path), "--out", str(out), "--image-size", "32", "--no-cache"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load(out).x.shape == (9, 1280)
    items = table_items({"data": str(out)})  # what `memaware analyze` names the most memorized examples by
    assert [Path(item).name for item in items] == [f"p{i}.jpg" for i in range(9)]
    result = CliRunner().invoke(app, ["featurize", str(tmp_path / "empty"), "--out", str(out), "--layout", "images"])
    assert result.exit_code == 2 and "no such folder" in result.output
