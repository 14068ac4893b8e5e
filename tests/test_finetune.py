"""Whole networks trained end to end from layout folders: streamed inputs keep their example positions,
every method that applies trains a small CNN through the one loop, pretrained backbones fine-tune, the CLI."""
import copy
import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import memaware.cli.core  # noqa: F401  (registers the commands)
from memaware.cli import app
from memaware.data.layouts import read_layout
from memaware.data.stream import ImageInputs, random_resized_crop, stream
from memaware.errors import DataError, MemawareError
from memaware.methods import REGISTRY, Method, create
from memaware.train import TrainConfig, fit
from memaware.heldout import eiil, train_phase1, xrm
from memaware.train.backbones import network
from memaware.train.loop import predict_logits

SIZE = 16  # training resolution of the test images (cached at 18 px)


def image_folder(root, n=64, identity_colours=False):
    """The generic `images` layout: y = a green square in the centre, a = a red background that agrees with
    y on 7 of 8 examples, uniform noise; splits train, train, val, test in turn. With `identity_colours`,
    image k is one uniform colour that encodes k instead."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n):
        y, split = k % 2, ("train", "train", "val", "test")[k % 4]
        a = y if k % 8 else 1 - y
        if identity_colours:
            img = np.zeros((20, 22, 3), np.uint8) + np.array([3 * k, 255 - 3 * k, 7], np.uint8)
        else:
            img = rng.integers(0, 60, (20, 22, 3)).astype(np.uint8)
            img[..., 0] += np.uint8(150 * a)
            img[6:14, 7:15, 1] = 255 * y
        Image.fromarray(img).save(root / f"{k}.png")
        rows.append((f"{k}.png", y, a, split))
    pd.DataFrame(rows, columns=["filename", "y", "a", "split"]).to_csv(root / "metadata.csv", index=False)
    return root


def identity_of(x: torch.Tensor) -> torch.Tensor:
    """The example k encoded in an identity-coloured image (uint8 or [0, 1] float), by its red channel."""
    red = x[:, 0].float().mean((1, 2)) * (1 if x.dtype == torch.uint8 else 255)
    return torch.round(red / 3).long()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return stream(read_layout("images", image_folder(tmp_path_factory.mktemp("img"))), network("cnn", image_size=SIZE),
                  workers=0)


@pytest.fixture(scope="module")
def identities(tmp_path_factory):
    """Identity-coloured images, decoded by 2 loader workers into a cache file."""
    folder = image_folder(tmp_path_factory.mktemp("ids"), n=80, identity_colours=True)
    return stream(read_layout("images", folder), network("cnn", image_size=SIZE), workers=2,
                  cache_dir=tmp_path_factory.mktemp("cache"))


CONFIG = TrainConfig(steps=6, batch_size=16, lr=0.1, checkpoint_freq=3)


@pytest.fixture(scope="module")
def heldout(images):
    return xrm(images, CONFIG)  # twin networks trained end to end


def test_split_dataset_yields_each_example_with_its_position_under_shuffling_and_two_workers(identities):
    train = identities.get("train")
    rows = np.flatnonzero(identities.mask("train"))
    loader = torch.utils.data.DataLoader(train.x.dataset(), batch_size=7, shuffle=True, num_workers=2,
                                         generator=torch.Generator().manual_seed(0))
    seen = []
    for x, position in loader:
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 18, 18)
        assert identity_of(x).tolist() == rows[position.numpy()].tolist()
        seen += position.tolist()
    assert sorted(seen) == list(range(len(train)))
    evaluated = train.x[torch.tensor([5, 0, 9])]
    assert evaluated.shape == (3, 3, SIZE, SIZE) and identity_of(evaluated).tolist() == rows[[5, 0, 9]].tolist()


class Probe(Method):
    """Cross-entropy, and a record of whether each batch's inputs are the examples its positions name."""

    name = "probe"

    def setup(self, ctx):
        super().setup(ctx)
        self.mismatches, self.seen = 0, set()

    def loss(self, logits, y, idx):
        self.mismatches += int((identity_of(self.inputs) != self.rows[idx]).sum())
        self.seen.update(idx.tolist())
        return super().loss(logits, y, idx)


class RecordInputs(torch.nn.Module):
    """Wraps a model and keeps the last training batch's inputs for the probe."""

    def __init__(self, model, probe):
        super().__init__()
        self.model, self.probe = model, probe

    def forward(self, x):
        if self.training:
            self.probe.inputs = x
        return self.model(x)


def test_training_batches_hold_the_examples_their_positions_name(identities):
    probe = Probe()
    probe.rows = torch.as_tensor(np.flatnonzero(identities.mask("train")))
    generator = torch.Generator().manual_seed(0)
    model = RecordInputs(identities.build_model(CONFIG, generator), probe)
    fit(identities, probe, CONFIG.model_copy(update={"steps": 12}), model=model)
    assert probe.mismatches == 0 and len(probe.seen) == len(probe.rows)


def test_augmented_crops_are_flipped_both_ways_and_stay_within_the_image():
    ramp = torch.arange(18, dtype=torch.uint8).mul(10).expand(32, 3, 18, 18).contiguous()
    out = random_resized_crop(ramp, SIZE, torch.Generator().manual_seed(0))
    assert out.shape == (32, 3, SIZE, SIZE) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 170 / 255 + 1e-6
    slope = out[:, 0, SIZE // 2, -1] - out[:, 0, SIZE // 2, 0]
    assert (slope > 0).any() and (slope < 0).any()


def test_a_cnn_learns_the_core_feature_end_to_end(images):
    result = fit(images, "erm", CONFIG.model_copy(update={"steps": 30, "checkpoint_freq": 0}))
    assert result.history[-1]["test"]["avg_acc"] >= 0.9


def test_same_seed_same_numbers_other_seed_other_augmentation(images):
    runs = [fit(images, "erm", CONFIG.model_copy(update={"seed": s})) for s in (0, 0, 1)]
    logits = [predict_logits(r.model, images.get("test").x) for r in runs]
    assert torch.equal(logits[0], logits[1]) and not torch.equal(logits[0], logits[2])


HPARAMS = {"jtt": {"first_epochs": 10.0}, "mat": {"tau": 1.0}}  # tau 1: this phase 1 is nearly perfect


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_method_trains_a_cnn_end_to_end(images, heldout, name):
    generator = torch.Generator().manual_seed(0)
    model = images.build_model(CONFIG, generator)
    first_conv = copy.deepcopy(model[0].body[0].weight)
    config = CONFIG.model_copy(update={"lr": 0.02})  # lower: LDAM's scale 30 saturates its loss in one step at 0.1
    result = fit(images, create(name, **HPARAMS.get(name, {})), config, heldout=heldout, model=model)
    assert [r["step"] for r in result.history] == [0, 3, 5]
    logits = predict_logits(result.model, images.get("test").x)
    assert torch.isfinite(logits).all() and logits.abs().sum() > 0  # the head starts at zero
    trained_conv = next(m.weight for m in result.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert not torch.equal(trained_conv.cpu(), first_conv)


def test_gradient_clipping_bounds_the_step(images):
    generator = torch.Generator().manual_seed(0)
    model = images.build_model(CONFIG, generator)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    config = CONFIG.model_copy(update={"steps": 1, "momentum": 0.0, "lr": 0.5, "grad_clip": 1e-3})
    fit(images, "erm", config, model=model)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float((after - before).norm()) == pytest.approx(0.5 * 1e-3, rel=1e-3)


def test_without_augmentation_training_batches_are_the_evaluation_form(images):
    train, idx = images.get("train"), torch.tensor([3, 0, 7])
    plain = train.x.train_batches(0, augment=False)(idx)
    assert torch.equal(plain, train.x[idx]) and plain.shape[-1] == SIZE
    assert not torch.equal(train.x.train_batches(0)(idx), plain.float() / 255)


def batchnorm_statistics(model) -> torch.Tensor:
    return torch.cat([m.running_mean for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])


@pytest.mark.parametrize("mode", ["train", "frozen"])
def test_frozen_batchnorm_keeps_its_statistics_and_trains_the_rest(images, mode):
    config = CONFIG.model_copy(update={"batchnorm": mode, "checkpoint_freq": 0})
    model = images.build_model(config, torch.Generator().manual_seed(0))
    before, conv = batchnorm_statistics(model).clone(), model[0].body[0].weight.detach().clone()
    result = fit(images, "erm", config, model=model)
    assert not torch.equal(model[0].body[0].weight, conv)
    assert torch.equal(batchnorm_statistics(result.model), before) == (mode == "frozen")
    assert result.model.training and result.model[0].body[1].training == (mode == "train")


def test_random_weights_keep_the_architecture_and_follow_the_seed(tmp_path):
    folder = image_folder(tmp_path, n=16)
    stem = lambda net, seed: net.classifier(2, CONFIG, torch.Generator().manual_seed(seed))[0].body.net._conv_stem  # noqa: E731
    pretrained, fresh = network("efficientnet_lite0", image_size=32), network("efficientnet_lite0", image_size=32, pretrained=False)
    assert fresh.pretrained is False and stream(read_layout("images", folder), fresh, workers=0).network is fresh
    first, again, other = (stem(fresh, s).weight for s in (0, 0, 1))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert stem(pretrained, 0).weight.shape == first.shape and not torch.allclose(stem(pretrained, 0).weight, first)


def test_efficientnet_lite0_fine_tunes_from_its_pretrained_weights(tmp_path):
    data = stream(read_layout("images", image_folder(tmp_path, n=16)), network("efficientnet_lite0", image_size=32),
                  workers=0)
    model = data.build_model(CONFIG, torch.Generator().manual_seed(0))
    stem = copy.deepcopy(model[0].body.net._conv_stem.weight)
    assert model[0].body.net._global_params.drop_connect_rate == 0.0
    result = fit(data, "erm", CONFIG.model_copy(update={"steps": 2, "batch_size": 4, "lr": 0.01}), model=model)
    assert torch.isfinite(predict_logits(result.model, data.get("test").x)).all()
    assert not torch.equal(model[0].body.net._conv_stem.weight, stem)


def test_phase1_of_a_random_cnn_trains_twin_networks_end_to_end(images, heldout):
    again = train_phase1(images, "xrm", CONFIG)
    assert torch.equal(again.logits, heldout.logits) and heldout.logits.shape == (32, 2)
    assert set(heldout.inferred) == {"train", "val", "test"}


def test_a_part_of_a_split_yields_the_examples_its_positions_name(identities):
    rows = np.flatnonzero(identities.mask("train"))
    positions = torch.tensor([7, 2, 30, 3])
    part = identities.get("train").x.subset(positions)
    assert len(part) == 4 and identity_of(part[0:4]).tolist() == rows[positions].tolist()
    assert identity_of(part[torch.tensor([2])]).tolist() == [rows[30]]


def test_crossfit_networks_predict_their_held_out_fold(images):
    """Each network trains end to end on the other folds; the planted core feature is learned, so held-out
    logits misaligned with their examples (a position off) would predict about half of the labels."""
    crossfit = train_phase1(images, "crossfit", CONFIG.model_copy(update={"steps": 30}), folds=2)
    train_y = torch.as_tensor(images.y[images.mask("train")])
    assert crossfit.source == "crossfit2" and crossfit.logits.shape == (32, 2)
    assert (crossfit.logits.argmax(1) == train_y).float().mean() >= 0.9
    assert set(crossfit.inferred) == {"train", "val", "test"} and crossfit.inferred["test"].float().mean() <= 0.1


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """EfficientNet-Lite0 on 16 images of 32 px, and its frozen features computed by hand."""
    folder = image_folder(tmp_path_factory.mktemp("pretrained"), n=16)
    data = stream(read_layout("images", folder), network("efficientnet_lite0", image_size=32), workers=0)
    config = CONFIG.model_copy(update={"steps": 4, "batch_size": 4})
    encoder = data.build_model(config, torch.Generator().manual_seed(0))[0]
    features = np.zeros((16, 1280), np.float32)
    for s in ("train", "val", "test"):
        features[data.mask(s)] = predict_logits(encoder, data.get(s).x).numpy()
    return data, config, dataclasses.replace(data.labels, x=features)


@pytest.mark.parametrize("source", ["xrm", "crossfit"])
def test_phase1_of_a_pretrained_backbone_trains_on_its_frozen_features(pretrained, source):
    data, config, features = pretrained
    by_hand = train_phase1(features, source, config, folds=2)
    frozen = train_phase1(data, source, config, folds=2)
    assert torch.allclose(frozen.logits, by_hand.logits, atol=1e-5) and frozen.logits.shape == (8, 2)
    assert not torch.equal(train_phase1(data, source, config, folds=2, end_to_end=True).logits, frozen.logits)


def test_eiil_of_a_pretrained_backbone_infers_groups_from_its_frozen_features(pretrained):
    data, config, features = pretrained
    frozen, by_hand = eiil(data, config), eiil(features, config)
    assert torch.allclose(frozen.logits, by_hand.logits, atol=1e-5)
    assert all(torch.equal(frozen.inferred[s], by_hand.inferred[s]) for s in ("train", "val", "test"))


def test_dfr_val_retrains_the_head_on_the_frozen_bodys_evaluation_features_chunk_by_chunk(images, monkeypatch):
    """DFR^Va: the validation features are the frozen body's, in evaluation mode (BatchNorm's running
    statistics, left as they are by the training that follows), computed chunk by chunk (4 examples here):
    no pass through the network takes more than a training batch (8), though the validation split has 16."""
    make_inputs = ImageInputs.__init__

    def small_chunks(self, *args):
        make_inputs(self, *args)
        self.eval_batch = 4

    monkeypatch.setattr(ImageInputs, "__init__", small_chunks)
    model = images.build_model(CONFIG, torch.Generator().manual_seed(0))
    passes = []  # the examples of every pass through the encoder and its copies
    model[0].register_forward_hook(lambda module, inputs, out: passes.append(len(out)))
    method = create("dfr-val")
    result = fit(images, method, CONFIG.model_copy(update={"batch_size": 8}), model=model)
    assert max(passes) == 8 and 4 in passes and len(images.get("val")) == 16
    assert torch.equal(method.features, predict_logits(result.model[0], images.get("val").x))
    assert not result.model[0].training


def text_folder(root):
    root.mkdir(parents=True, exist_ok=True)
    texts = [("a great product, I love it and will buy it again for my whole family", 1),
             ("terrible", 0), ("really good value", 1), ("not good at all", 0)] * 4
    pd.DataFrame({"text": [t for t, _ in texts], "y": [y for _, y in texts],
                  "split": [("train", "train", "val", "test")[i % 4] for i in range(len(texts))]}).to_csv(
        root / "texts.csv", index=False)
    return root


def test_minilm_fine_tunes_on_texts_cut_at_the_maximum_length(tmp_path):
    data = stream(read_layout("texts", text_folder(tmp_path)), network("minilm", max_length=8))
    assert data.store.shape == (16, 2, 8) and data.store[0, 1].sum() == 8 and data.store[1, 1].sum() == 3
    assert data.get("train").x[torch.tensor([1, 5])].shape == (2, 2, 3)  # a batch is cut to its longest text
    model = data.build_model(CONFIG, torch.Generator().manual_seed(0))
    embeddings = copy.deepcopy(model[0].body.embeddings.word_embeddings.weight)
    config = CONFIG.model_copy(update={"steps": 2, "batch_size": 4, "lr": 1e-4, "optimizer": "adamw",
                                       "lr_schedule": "linear"})
    result = fit(data, "erm", config, model=model)
    assert torch.isfinite(predict_logits(result.model, data.get("test").x)).all()
    assert not torch.equal(model[0].body.embeddings.word_embeddings.weight, embeddings)


def test_unreadable_image_is_named(tmp_path):
    folder = image_folder(tmp_path, n=8)
    (folder / "3.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"3\.png: cannot read as an image"):
        stream(read_layout("images", folder), network("cnn", image_size=SIZE), workers=2)


@pytest.mark.parametrize("name, weights, message", [
    ("resnet9", None, "unknown backbone 'resnet9' (known: cnn, efficientnet_lite0, minilm"),
    ("timm:resnet18", None, "backbone 'timm:resnet18' needs --weights FILE"),
], ids=["unknown", "no-weights"])
def test_backbone_errors_are_one_line(name, weights, message):
    with pytest.raises(MemawareError) as err:
        network(name, weights)
    assert message in str(err.value) and "\n" not in str(err.value)


runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


FAST = ["--image-size", SIZE, "--steps", 6, "--batch-size", 16, "--lr", 0.1, "--checkpoint-freq", 3]


def test_cli_runs_a_backbone_on_a_layout_folder(tmp_path):
    folder, out = image_folder(tmp_path / "imgs"), tmp_path / "out"
    result = invoke("run", "--data", folder, "--backbone", "cnn", "--methods", "erm,mat", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["source"]["backbone"] == "cnn" and results["source"]["layout"] == "images"
    assert results["phase1"]["source"] == "xrm" and results["n_examples"] == 64
    for name in ("erm", "mat"):
        for key in ("test_wga", "test_avg_acc", "val_wga", "criterion", "selected_step", "hparams", "setting"):
            assert key in results["methods"][name], (name, key)
    assert set(json.loads((out / "history.json").read_text())) == {"erm", "mat"}
    assert (out / "heldout.npz").is_file() and (out / "models" / "mat" / "seed-0.pt").is_file()


def test_cli_trains_networks_with_crossfit_dfr_val_and_eiil(tmp_path):
    folder, out = image_folder(tmp_path / "imgs"), tmp_path / "out"
    result = invoke("run", "--data", folder, "--backbone", "cnn", "--heldout", "crossfit", "--folds", 2,
                    "--methods", "mat,dfr-val,eiil+groupdro", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["phase1"]["source"] == "crossfit2"
    assert {name: r["setting"]["train_groups"] for name, r in results["methods"].items()} == {
        "mat": "none", "dfr-val": "true", "eiil+groupdro": "eiil"}
    assert all((out / "models" / name / "seed-0.pt").is_file() for name in results["methods"])


@pytest.mark.parametrize("args, message", [
    (["--backbone", "cnn", "--standardize"], "--standardize, --features and --ignore apply to feature files"),
    (["--backbone", "cnn", "--heldout", "crossfit"], "cross-fitting with 5 folds needs at least 5 training examples, "
                                                      "got 4"),
    (["--backbone", "resnet9"], "unknown backbone 'resnet9'"),
    (["--backbone", "cnn", "--layout", "texts"], "not a texts folder"),
    (["--backbone", "cnn", "--lr-schedule", "cosine"], "--lr-schedule"),
], ids=["standardize", "crossfit-folds", "unknown-backbone", "wrong-layout", "schedule"])
def test_cli_backbone_bad_input_exit_2_one_line_nothing_left(tmp_path, args, message):
    folder, out = image_folder(tmp_path / "imgs", n=8), tmp_path / "out"
    result = invoke("run", "--data", folder, "--out", out, *FAST, *args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()


def test_cli_trains_a_network_on_one_cpu_thread_unless_omp_num_threads_says_otherwise(tmp_path, monkeypatch):
    folder = image_folder(tmp_path / "imgs", n=8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    try:
        assert invoke("run", "--data", folder, "--backbone", "cnn", "--methods", "erm", "--out", tmp_path / "a",
                      *FAST).exit_code == 0
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert invoke("run", "--data", folder, "--backbone", "cnn", "--methods", "erm", "--out", tmp_path / "b",
                      *FAST).exit_code == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)  # the suite's (conftest)


def test_cli_backbone_options_without_a_backbone_are_refused(tmp_path):
    folder = image_folder(tmp_path / "imgs", n=8)
    result = invoke("run", "--data", folder, "--layout", "images", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--weights and --layout apply to --backbone" in result.stderr


def test_cli_refuses_an_image_backbone_on_texts(tmp_path):
    result = invoke("run", "--data", text_folder(tmp_path / "txt"), "--backbone", "cnn", "--out", tmp_path / "o",
                    *FAST)
    assert result.exit_code == 2 and "backbone 'cnn' takes images, but texts holds texts" in result.stderr
