"""The standard layouts: tiny fixtures in each public release's layout, and wrong layouts."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from memaware.data.layouts import LAYOUTS, detect_layout, read_layout
from memaware.data.overlap import overlap_group_accuracy, split_attributes
from memaware.data.registry import DATASETS
from memaware.errors import DataError


def image(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)


def waterbirds(root):
    base = root / "waterbird_complete95_forest2water2"
    rows = [("001.Albatross/a.jpg", 1, 0, 1), ("002.Sparrow/b.jpg", 0, 0, 0), ("002.Sparrow/c.jpg", 0, 1, 0),
            ("001.Albatross/d.jpg", 1, 1, 1), ("002.Sparrow/e.jpg", 0, 2, 1)]
    for f, *_ in rows:
        image(base / f)
    pd.DataFrame({"img_id": range(1, 6), "img_filename": [r[0] for r in rows], "y": [r[1] for r in rows],
                  "split": [r[2] for r in rows], "place": [r[3] for r in rows],
                  "place_filename": ["/o/ocean/x.jpg"] * 5}).to_csv(base / "metadata.csv", index=False)
    return base


def test_waterbirds_reads_the_release_layout(tmp_path):
    base = waterbirds(tmp_path)
    assert detect_layout(tmp_path) == "waterbirds"
    raw = read_layout("waterbirds", tmp_path)
    assert raw.modality == "image" and raw.items[0] == str(base / "001.Albatross/a.jpg")
    assert list(raw.y) == [1, 0, 0, 1, 0] and list(raw.a) == [1, 0, 0, 1, 1]
    assert list(raw.split) == ["train", "train", "val", "val", "test"]
    ds = raw.with_features(np.arange(10.0).reshape(5, 2))
    assert ds.group_sizes()["train"] == {"0,0": 1, "1,1": 1}
    assert DATASETS["waterbirds"].load(root=base).info["layout"] == "waterbirds"


@pytest.mark.parametrize("breakage, message", [
    (lambda b: pd.read_csv(b / "metadata.csv").drop(columns="place").to_csv(b / "metadata.csv", index=False),
     "metadata.csv: missing column 'place' (expected img_filename, y, place, split"),
    (lambda b: (b / "002.Sparrow/c.jpg").unlink(), "lists image '002.Sparrow/c.jpg', which is missing"),
    (lambda b: pd.read_csv(b / "metadata.csv").assign(split=[0, 0, 1, 3, 2]).to_csv(b / "metadata.csv", index=False),
     "column 'split': unknown split 3 (expected 0/1/2"),
    (lambda b: pd.read_csv(b / "metadata.csv").assign(y=[1, 0, "bird", 1, 0]).to_csv(b / "metadata.csv", index=False),
     "column 'y': expected integer labels >= 0, found 'bird'"),
])
def test_waterbirds_wrong_layout_names_the_problem(tmp_path, breakage, message):
    base = waterbirds(tmp_path)
    breakage(base)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(".", r"\.")):
        read_layout("waterbirds", tmp_path)


def test_not_a_layout_folder_says_what_was_expected(tmp_path):
    with pytest.raises(DataError, match=r"not a waterbirds folder: expected waterbird_complete95_forest2water2/"
                                        r"metadata\.csv \(img_filename, y, place, split 0/1/2\)"):
        read_layout("waterbirds", tmp_path)
    (tmp_path / "metadata.csv").write_text("something,else\n1,2\n")
    with pytest.raises(DataError, match="metadata.csv: missing column 'img_filename'"):
        read_layout("waterbirds", tmp_path)
    with pytest.raises(DataError, match=r"no known layout found \(expected one of: waterbirds: .*; celeba: "):
        detect_layout(tmp_path)
    with pytest.raises(DataError, match="unknown option 'colour'"):
        read_layout("waterbirds", waterbirds(tmp_path / "w"), colour=1)


CELEBA_ATTRS = ["5_o_Clock_Shadow", "Blond_Hair", "Male", "Smiling"]


def celeba(root, text=False):
    values = np.array([[-1, 1, -1, 1], [1, -1, 1, -1], [-1, 1, 1, 1], [-1, -1, -1, 1]])
    ids = [f"00000{i}.jpg" for i in range(1, 5)]
    for i in ids:
        image(root / "img_align_celeba" / ("" if text else "img_align_celeba") / i)
    if text:
        lines = ["4", " ".join(CELEBA_ATTRS)] + [f"{i} " + "  ".join(map(str, v)) for i, v in zip(ids, values)]
        (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        (root / "list_eval_partition.txt").write_text("".join(f"{i} {p}\n" for i, p in zip(ids, [0, 0, 1, 2])))
        return
    pd.DataFrame(values, columns=CELEBA_ATTRS).assign(image_id=ids)[["image_id"] + CELEBA_ATTRS].to_csv(
        root / "list_attr_celeba.csv", index=False)
    pd.DataFrame({"image_id": ids, "partition": [0, 0, 1, 2]}).to_csv(root / "list_eval_partition.csv", index=False)


@pytest.mark.parametrize("text", [False, True])
def test_celeba_csv_and_original_txt(tmp_path, text):
    celeba(tmp_path, text)
    assert detect_layout(tmp_path) == "celeba"
    raw = read_layout("celeba", tmp_path)
    assert list(raw.y) == [1, 0, 1, 0] and list(raw.a) == [0, 1, 1, 0]
    assert list(raw.split) == ["train", "train", "val", "test"]
    assert raw.items[2].endswith("000003.jpg")
    smiling = read_layout("celeba", tmp_path, target="Smiling", attribute="Blond_Hair")
    assert list(smiling.y) == [1, 0, 1, 1] and list(smiling.a) == [1, 0, 1, 0]


def test_celeba_wrong_layouts(tmp_path):
    celeba(tmp_path)
    with pytest.raises(DataError, match="list_attr_celeba.csv: missing column 'Wavy_Hair'"):
        read_layout("celeba", tmp_path, target="Wavy_Hair")
    pd.DataFrame({"image_id": ["000001.jpg"], "partition": [0]}).to_csv(tmp_path / "list_eval_partition.csv",
                                                                        index=False)
    with pytest.raises(DataError, match="image '000002.jpg' has attributes but no entry in list_eval_partition"):
        read_layout("celeba", tmp_path)


def metashift(root, per_folder=5):
    base = root / "MetaShift-Cat-Dog-indoor-outdoor"
    for k, sub in enumerate(["train/cat/cat(indoor)", "train/dog/dog(outdoor)", "test/cat/cat(outdoor)",
                             "test/dog/dog(indoor)"]):
        for i in range(per_folder):
            image(base / sub / f"{k}_{i}.jpg")
    return base


def test_metashift_pools_the_four_folders_and_splits_by_seed(tmp_path):
    metashift(tmp_path)
    raw = read_layout("metashift", tmp_path)
    assert len(raw) == 20 and sorted(pd.Series(raw.split).value_counts().items()) == [
        ("test", 5), ("train", 13), ("val", 2)]
    groups = {(int(y), int(a)) for y, a in zip(raw.y, raw.a)}
    assert groups == {(1, 1), (0, 0), (1, 0), (0, 1)}
    cat_indoor = [i for i, p in enumerate(raw.items) if "cat(indoor)" in p]
    assert all(raw.y[i] == 1 and raw.a[i] == 1 for i in cat_indoor)
    assert list(read_layout("metashift", tmp_path).split) == list(raw.split)
    assert list(read_layout("metashift", tmp_path, seed=1).split) != list(raw.split)


def test_metashift_missing_folder(tmp_path):
    base = metashift(tmp_path)
    for f in (base / "test/dog/dog(indoor)").iterdir():
        f.unlink()
    (base / "test/dog/dog(indoor)").rmdir()
    with pytest.raises(DataError, match=r"missing folder test/dog/dog\(indoor\)/"):
        read_layout("metashift", tmp_path)


def test_imagenet_backgrounds(tmp_path):
    root = tmp_path / "backgrounds_challenge"
    for folder in ("in9l/train", "in9l/val", "bg_challenge/original/val", "bg_challenge/mixed_rand/val",
                   "bg_challenge/only_fg/val"):
        for cls in ("00_dog", "01_bird"):
            image(root / folder / cls / "x.JPEG")
    assert detect_layout(tmp_path) == "imagenet-backgrounds"
    raw = read_layout("imagenet-backgrounds", tmp_path)
    assert list(raw.split) == ["train"] * 2 + ["val"] * 2 + ["test"] * 4
    assert list(raw.y) == [0, 1] * 4 and list(raw.a) == [0] * 6 + [1, 1]
    only_fg = read_layout("imagenet-backgrounds", tmp_path, test_variants=("only_fg",))
    assert "only_fg" in only_fg.items[-1] and list(only_fg.a) == [0] * 6
    with pytest.raises(DataError, match="missing folder .*bg_challenge/no_fg/val"):
        read_layout("imagenet-backgrounds", tmp_path, test_variants=("original", "no_fg"))


def multinli(root):
    records = [("A man sleeps.", "Nobody sleeps.", "contradiction"), ("It rains.", "Water falls.", "entailment"),
               ("x", "y", "-"), ("Dogs bark.", "Cats never bark.", "neutral"),
               ("She reads.", "She reads a book.", "neutral"), ("He ran.", "He did not walk.", "contradiction")]
    folder = root / "multinli_1.0"
    folder.mkdir(parents=True)
    cut = {"train": records[:3], "dev_matched": records[3:5], "dev_mismatched": records[5:]}
    for name, rows in cut.items():
        (folder / f"multinli_1.0_{name}.jsonl").write_text("".join(
            json.dumps({"sentence1": s1, "sentence2": s2, "gold_label": g, "genre": "fiction"}) + "\n"
            for s1, s2, g in rows))
    (root / "data").mkdir()
    pd.DataFrame({"gold_label": [0, 1, 2, 2, 0], "sentence2_has_negation": [1, 0, 1, 0, 0],
                  "split": [0, 1, 0, 2, 0]}, index=[0, 1, 3, 4, 5]).to_csv(root / "data" / "metadata_random.csv")


def test_multinli_aligns_metadata_row_ids_with_the_jsonl_files(tmp_path):
    multinli(tmp_path)
    assert detect_layout(tmp_path) == "multinli"
    raw = read_layout("multinli", tmp_path, separator=" || ")
    assert raw.modality == "text" and raw.items[2] == "Dogs bark. || Cats never bark."
    assert list(raw.y) == [0, 1, 2, 2, 0] and list(raw.a) == [1, 0, 1, 0, 0]
    assert list(raw.split) == ["train", "val", "train", "test", "train"]


def test_multinli_mismatched_files_are_refused(tmp_path):
    multinli(tmp_path)
    meta = tmp_path / "data" / "metadata_random.csv"
    pd.read_csv(meta, index_col=0).assign(gold_label=[0, 1, 2, 2, 1]).to_csv(meta)
    with pytest.raises(DataError, match="row 5 has gold_label 1 but the .jsonl says 'contradiction'"):
        read_layout("multinli", tmp_path)
    (tmp_path / "multinli_1.0" / "multinli_1.0_dev_mismatched.jsonl").write_text("{broken\n")
    with pytest.raises(DataError, match="multinli_1.0_dev_mismatched.jsonl: line 1 is not a MultiNLI record"):
        read_layout("multinli", tmp_path)


IDENTITIES = ["male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white"]


def civilcomments(root):
    scores = np.zeros((6, 8))
    scores[0, 0] = scores[0, 6] = 0.8  # male and black: two overlapping groups
    scores[1, 1] = 0.6
    scores[2, 0] = 0.4  # below the threshold
    scores[3, 0] = 1.0
    scores[5, 7] = np.nan
    df = pd.DataFrame(scores, columns=IDENTITIES)
    df.insert(0, "comment_text", ["a", "b", "c", None, "e", "f"])
    df.insert(1, "split", ["train", "train", "val", "test", "test", "val"])
    df.insert(2, "toxicity", [0.9, 0.1, 0.5, 0.7, 0.0, 0.2])
    df.to_csv(root / "all_data_with_identities.csv")


def test_civilcomments_overlapping_identities(tmp_path):
    civilcomments(tmp_path)
    raw = read_layout("civilcomments", tmp_path)
    assert raw.attribute_names == IDENTITIES and raw.attributes.shape == (6, 8)
    assert raw.attributes[0].tolist() == [1, 0, 0, 0, 0, 0, 1, 0] and raw.attributes[5].sum() == 0
    assert list(raw.y) == [1, 0, 1, 1, 0, 0] and list(raw.a) == [1, 1, 0, 1, 0, 0]
    assert raw.items[3] == "" and list(raw.split) == ["train", "train", "val", "test", "test", "val"]
    ds = raw.with_features(np.eye(6))
    attrs, names = split_attributes(ds, "train")
    assert attrs.shape == (2, 8) and names == IDENTITIES
    pd.read_csv(tmp_path / "all_data_with_identities.csv", index_col=0).drop(columns="muslim").to_csv(
        tmp_path / "all_data_with_identities.csv")
    with pytest.raises(DataError, match="missing column 'muslim'"):
        read_layout("civilcomments", tmp_path)


def test_overlap_group_accuracy_known_answer():
    y = np.array([1, 1, 0, 0, 1])
    attributes = np.array([[1, 1], [1, 0], [0, 1], [1, 1], [0, 0]])
    pred = np.array([1, 0, 0, 1, 1])
    out = overlap_group_accuracy(pred, y, attributes, ["male", "black"])
    assert out["group_acc"] == {"y=0,male": 0.0, "y=0,black": 0.5, "y=1,male": 0.5, "y=1,black": 1.0}
    assert out["group_size"] == {"y=0,male": 1, "y=0,black": 2, "y=1,male": 2, "y=1,black": 1}
    assert out["wga"] == 0.0 and out["worst_group"] == "y=0,male"
    with pytest.raises(DataError, match="2 attribute columns but 1 names"):
        overlap_group_accuracy(pred, y, attributes, ["male"])


def test_generic_images_and_texts(tmp_path):
    for i in range(3):
        image(tmp_path / "imgs" / f"{i}.png")
    pd.DataFrame({"filename": [f"{i}.png" for i in range(3)], "y": [0, 1, 1], "split": ["train", "val", "test"],
                  "a": [1, 0, 1]}).to_csv(tmp_path / "imgs" / "metadata.csv", index=False)
    assert detect_layout(tmp_path / "imgs") == "images"
    raw = read_layout("images", tmp_path / "imgs")
    assert list(raw.a) == [1, 0, 1] and raw.items[1].endswith("1.png")
    (tmp_path / "txt").mkdir()
    pd.DataFrame({"text": ["good", "bad"], "y": [1, 0], "split": [0, 2]}).to_csv(tmp_path / "txt" / "texts.csv",
                                                                                  index=False)
    texts = read_layout("texts", tmp_path / "txt")
    assert texts.items == ["good", "bad"] and texts.a is None and list(texts.split) == ["train", "test"]


def test_every_layout_is_a_registered_data_set():
    assert {n for n, s in DATASETS.items() if s.kind == "layout"} >= set(LAYOUTS)
    assert DATASETS["civilcomments"].available().startswith("not found in")
