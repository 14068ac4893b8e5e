"""The size images train at: asked for, or by default the folder's native size (never upscaled), said by
`memaware run` and `memaware sweep`, kept in the saved recipe that `memaware predict` rebuilds; evaluation
chunks sized for the evaluating device."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from test_finetune import image_folder, invoke
from test_sweep_backbones import experiment, sweep

import memaware.cli.predict  # noqa: F401  (registers the command)
from memaware.data.stream import eval_chunk, image_sizes, native_size
from memaware.errors import DataError
from memaware.saved import load_model

FAST = ["--steps", 4, "--batch-size", 16, "--lr", 0.1, "--checkpoint-freq", 2, "--workers", 0]


def images_of_sizes(folder, sizes) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(folder / f"{i}.png") for i in range(len(sizes))]
    for path, (w, h) in zip(paths, sizes):
        Image.new("RGB", (w, h), (90, 20, 200)).save(path)
    return paths


@pytest.mark.parametrize("sizes, asked, expected, why", [
    ([(20, 22), (30, 18), (40, 40)], None, (18, 18), "the images' native size: the smallest is 18 px on its"),
    ([(20, 22), (30, 18)], 16, (16, 18), "asked for"),  # cached at 16 / 0.875
    ([(20, 22)], 64, (64, 73), "asked for"),  # asked for above the native size: upscaled
    ([(300, 260), (280, 400)], None, (224, 256), "at most 224 px by default; the images are at least 260 px"),
    ([(240, 250), (300, 300)], None, (224, 240), "at most 224 px"),  # 224 px, cached at 240: never upscaled
], ids=["small", "asked", "asked-larger", "photos", "photos-under-256"])
def test_image_sizes_follow_the_folder_unless_asked(tmp_path, sizes, asked, expected, why):
    size, side, reason = image_sizes(images_of_sizes(tmp_path, sizes), asked)
    assert (size, side) == expected and reason.startswith(why)


def test_native_size_names_an_unreadable_image(tmp_path):
    paths = images_of_sizes(tmp_path, [(20, 20), (20, 20)])
    open(paths[1], "wb").write(b"not an image")
    with pytest.raises(DataError, match=r"1\.png: cannot read as an image") as err:
        native_size(paths)
    assert "\n" not in str(err.value)


def test_evaluation_chunks_fit_a_cpu_cache_and_fill_a_gpu():
    assert [eval_chunk(s, "cpu") for s in (32, 64, 128, 224, 512)] == [64, 16, 4, 1, 1]
    assert [eval_chunk(s, "cuda") for s in (32, 112, 224, 448)] == [4096, 1024, 256, 256]


def cached_sides(folder) -> set[str]:
    """The sides of the image caches in `folder` (file names end in -{side}px.npy)."""
    return {p.name.rsplit("-", 1)[1] for p in (folder / "images").glob("*.npy")}


def test_run_trains_at_the_folders_native_size_says_so_and_predict_rebuilds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMAWARE_CACHE", str(tmp_path / "cache"))
    folder, out = image_folder(tmp_path / "imgs", n=16), tmp_path / "out"  # 22 x 20 px images
    result = invoke("run", "--data", folder, "--backbone", "cnn", "--methods", "erm", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert "training at 20 px (the images' native size: the smallest is 20 px on its shorter side)" in result.stdout
    assert json.loads((out / "results.json").read_text())["source"]["image_size"] == 20
    spec = load_model(out, "erm").meta["network"]
    assert (spec["image_size"], spec["cache_side"]) == (20, 20)
    assert cached_sides(tmp_path / "cache") == {"20px.npy"}  # not upscaled to 20 / 0.875 = 23 px
    predicted = invoke("predict", out, "--method", "erm", "--data", folder, "--out", tmp_path / "p.csv")
    assert predicted.exit_code == 0, predicted.output
    saved = pd.read_parquet(out / "predictions" / "erm" / "seed-0.parquet")
    assert np.allclose(pd.read_csv(tmp_path / "p.csv")["prob_1"], saved["prob_1"], atol=1e-6)


def test_run_says_the_size_asked_for(tmp_path):
    folder, out = image_folder(tmp_path / "imgs", n=16), tmp_path / "out"
    result = invoke("run", "--data", folder, "--backbone", "cnn", "--methods", "erm", "--image-size", 12,
                    "--out", out, *FAST)
    assert result.exit_code == 0 and "training at 12 px (asked for)" in result.stdout, result.output
    assert load_model(out, "erm").meta["network"]["image_size"] == 12


def test_run_on_an_unreadable_image_at_the_default_size_exits_2_naming_it(tmp_path):
    folder, out = image_folder(tmp_path / "imgs", n=8), tmp_path / "out"
    (folder / "5.png").write_bytes(b"broken")
    result = invoke("run", "--data", folder, "--backbone", "cnn", "--out", out, *FAST)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "5.png: cannot read as an image" in lines[0], result.stderr
    assert not out.exists()


def test_sweep_backbone_trains_at_the_folders_native_size_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMAWARE_CACHE", str(tmp_path / "cache"))
    folder = image_folder(tmp_path / "imgs", n=16)
    raw = experiment(folder, backbone={"name": "cnn"})
    raw["search"] = {"combinations": 1, "seeds": [0], "criteria": ["va_wga"]}
    raw["methods"] = ["erm"]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = sweep(path, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert f"images {folder}: cnn training at 20 px (the images' native size" in result.stderr
    assert cached_sides(tmp_path / "cache") == {"20px.npy"}
