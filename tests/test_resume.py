"""A run stopped after any step and resumed from its checkpoint ends exactly as the run that never stopped:
every registered method (its state, its sampler, its draws), XRM's flips, a CNN on augmented images, and the
CLI killed with SIGKILL (a head on features with MAT, and a CNN end to end), rerun with the same command."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from memaware.data import make_figure1
from memaware.data.layouts import read_layout
from memaware.data.stream import stream
from memaware.errors import MemawareError
from memaware.heldout import xrm
from memaware.methods import REGISTRY, create
from memaware.train import TrainConfig, fit
from memaware.train.backbones import network
from memaware.train.resume import Checkpointing

from test_finetune import SIZE, image_folder

NAMES = sorted(REGISTRY)
CONFIG = TrainConfig(steps=12, batch_size=16, lr=0.05, checkpoint_freq=3, arch="mlp", hidden=[8], seed=3)


class Killed(Exception):
    """Raised by a callback: the run stops there, as if the process had been killed after that step."""


def stop_after(step):
    def callback(s, record):
        if s == step:
            raise Killed

    return callback


@pytest.fixture(scope="module")
def figure1():
    data = make_figure1(n=60, d=20, seed=0)
    return data, xrm(data, CONFIG.model_copy(update={"steps": 20}))


def same_run(a, b):
    assert json.dumps(a.history) == json.dumps(b.history)  # NaN (an AUROC of one class) equals NaN here
    assert json.dumps(a.best) == json.dumps(b.best)
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(x, y)
    for criterion in a.best_states:
        for k, v in a.best_states[criterion].items():
            assert torch.equal(v, b.best_states[criterion][k])


def interrupted_then_resumed(data, name, config, heldout, path, stop, **kwargs):
    checkpoint = Checkpointing(path, every=4)
    with pytest.raises(Killed):
        fit(data, create(name), config, heldout=heldout, checkpoint=checkpoint, callback=stop_after(stop), **kwargs)
    return fit(data, create(name), config, heldout=heldout, checkpoint=checkpoint, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_every_method_resumed_after_a_stop_ends_as_the_run_that_never_stopped(figure1, name, tmp_path):
    data, heldout = figure1
    whole = fit(data, create(name), CONFIG, heldout=heldout)
    resumed = interrupted_then_resumed(data, name, CONFIG, heldout, tmp_path / "run.pt", stop=5)  # saved after 3
    same_run(whole, resumed)


def test_resuming_a_finished_run_trains_no_more_and_gives_its_result(figure1, tmp_path):
    data, heldout = figure1
    checkpoint = Checkpointing(tmp_path / "run.pt", every=5)
    first = fit(data, "groupdro", CONFIG, checkpoint=checkpoint)
    steps = []
    again = fit(data, "groupdro", CONFIG, checkpoint=checkpoint, callback=lambda s, r: steps.append(s))
    assert steps == []
    same_run(first, again)


def test_a_checkpoint_of_another_run_is_a_one_line_error(figure1, tmp_path):
    data, heldout = figure1
    checkpoint = Checkpointing(tmp_path / "run.pt", every=5)
    fit(data, "groupdro", CONFIG, checkpoint=checkpoint)
    with pytest.raises(MemawareError, match=r"run\.pt: a checkpoint of another run .*delete it"):
        fit(data, "groupdro", CONFIG.model_copy(update={"lr": 0.01}), checkpoint=checkpoint)
    with pytest.raises(MemawareError, match="a checkpoint of another run"):
        fit(data, create("groupdro", eta=0.5), CONFIG, checkpoint=checkpoint)
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(MemawareError, match="bad.pt: not a memaware checkpoint"):
        fit(data, "erm", CONFIG, checkpoint=Checkpointing(tmp_path / "bad.pt", every=5))
    with pytest.raises(MemawareError, match="every 0 steps"):
        Checkpointing(tmp_path / "x.pt", every=0)


def test_xrm_resumed_keeps_its_flips(figure1, tmp_path):
    data, _ = figure1
    config = CONFIG.model_copy(update={"steps": 20})
    whole = xrm(data, config)
    checkpoint = Checkpointing(tmp_path / "xrm.pt", every=4)
    with pytest.raises(Killed):
        xrm(data, config, callback=stop_after(9), checkpoint=checkpoint)
    resumed = xrm(data, config, checkpoint=checkpoint)
    assert whole.info["n_flipped"] > 0 and resumed.flip_rate == whole.flip_rate
    assert torch.equal(whole.logits, resumed.logits)


def test_a_cnn_on_augmented_images_resumes_to_the_same_weights(tmp_path):
    images = stream(read_layout("images", image_folder(tmp_path / "img")), network("cnn", image_size=SIZE), workers=0)
    config = TrainConfig(steps=10, batch_size=8, lr=0.05, checkpoint_freq=4)
    whole = fit(images, "groupdro", config)
    resumed = interrupted_then_resumed(images, "groupdro", config, None, tmp_path / "cnn.pt", stop=6)
    same_run(whole, resumed)


# The CLI, killed for real: a wrapper runs `memaware run` and sends itself SIGKILL right after its k-th
# checkpoint is written; the same command, rerun, resumes.
KILLER = textwrap.dedent("""
    import os, signal, sys
    import memaware.train.resume as resume
    writes, kill_at = [0], int(os.environ["KILL_AT_CHECKPOINT"])
    save = resume.save_checkpoint
    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        writes[0] += 1
        if writes[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    resume.save_checkpoint = save_then_die
    from memaware.cli import main
    sys.argv = ["memaware", *sys.argv[1:]]
    main()
""")


def memaware(args, cwd, kill_at=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if kill_at is None:
        return subprocess.run([sys.executable, "-m", "memaware", *args], cwd=cwd, env=env, capture_output=True,
                              text=True)
    env["KILL_AT_CHECKPOINT"] = str(kill_at)
    return subprocess.run([sys.executable, "-c", KILLER, *args], cwd=cwd, env=env, capture_output=True, text=True)


def outputs(folder):
    results = json.loads((folder / "results.json").read_text())
    history = json.loads((folder / "history.json").read_text())
    return results["methods"], results["phase1"], history


def features_file(tmp_path):
    data = make_figure1(n=80, d=12, seed=1)
    path = tmp_path / "data.npz"
    np.savez(path, x=data.x, y=data.y, a=data.a, split=data.split)
    return path


CASES = {
    # a head on features: MAT (after XRM) and GroupDRO; killed late in phase 1, then in GroupDRO's run
    "features-mat": (lambda tmp: ["--data", str(features_file(tmp)), "--methods", "mat,groupdro", "--steps", "16",
                                  "--batch-size", "16", "--checkpoint-freq", "4"], (4, 10)),
    # a CNN end to end on images, with XRM twin networks for MAT; killed in phase 1, then in GroupDRO's run
    "cnn-mat": (lambda tmp: ["--data", str(image_folder(tmp / "img")), "--backbone", "cnn", "--image-size",
                             str(SIZE), "--workers", "0", "--methods", "groupdro,mat", "--steps", "12", "--batch-size",
                             "8", "--checkpoint-freq", "4", "--lr", "0.05"], (1, 5)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_cli_killed_twice_and_rerun_gives_the_uninterrupted_results(case, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMAWARE_CACHE", str(tmp_path / "cache"))
    make_args, kills = CASES[case]
    args = make_args(tmp_path)
    plain = memaware(["run", *args, "--out", "plain"], tmp_path)
    assert plain.returncode == 0, plain.stderr
    resumable = ["run", *args, "--out", "resumed", "--checkpoint-every", "3"]
    for kill_at in kills:  # each rerun counts its own checkpoint writes
        died = memaware(resumable, tmp_path, kill_at=kill_at)
        assert died.returncode == -signal.SIGKILL, died.stderr
        assert (tmp_path / "resumed" / "checkpoint").is_dir() and not (tmp_path / "resumed" / "results.json").exists()
    done = memaware(resumable, tmp_path)
    assert done.returncode == 0, done.stderr
    assert outputs(tmp_path / "resumed") == outputs(tmp_path / "plain")
    assert not (tmp_path / "resumed" / "checkpoint").exists()  # a finished run leaves no checkpoint


def test_the_cli_refuses_a_checkpoint_of_other_settings(tmp_path, monkeypatch):
    args = ["run", "--data", str(features_file(tmp_path)), "--methods", "erm", "--steps", "8", "--out", "out",
            "--checkpoint-every", "2"]
    died = memaware(args, tmp_path, kill_at=2)
    assert died.returncode == -signal.SIGKILL
    other = memaware([*args, "--lr", "0.01"], tmp_path)
    assert other.returncode == 2
    assert "a checkpoint of another run" in other.stderr and len(other.stderr.strip().splitlines()) == 1
    bad = memaware([*args[:-1], "0"], tmp_path)
    assert bad.returncode == 2 and "--checkpoint-every" in bad.stderr
