"""A run stopped after any step and resumed from its checkpoint ends exactly as the run that never stopped:
every registered method (its state, its sampler, its draws), XRM's flips, cross-fitting fold by fold, a CNN on
augmented images, and the CLI killed with SIGKILL (a head on features with MAT, and a CNN end to end; cross-
fitting in `run` and in a sweep), rerun with the same command."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import memaware.cli.core  # noqa: F401  (registers the commands)
import memaware.train.resume as resume
from memaware.cli import app
from memaware.data import make_figure1
from memaware.data.layouts import read_layout
from memaware.data.stream import stream
from memaware.errors import MemawareError
from memaware.heldout import crossfit, xrm
from memaware.methods import REGISTRY, create
from memaware.sweep.experiment import validate
from memaware.sweep.runner import run_sweep
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


def test_crossfit_stopped_in_a_fold_resumes_that_fold_and_keeps_the_finished_one(figure1, tmp_path):
    data, _ = figure1
    config = CONFIG.model_copy(update={"steps": 10})
    whole = crossfit(data, 3, config)
    checkpoint = Checkpointing(tmp_path / "phase1.pt", every=4)  # after steps 3, 7 and 9 of each fold
    steps = []

    def stop_in_the_second_fold(step, record):
        steps.append(step)
        if len(steps) == 10 + 7:  # the second fold's step 6: its checkpoint holds step 3
            raise Killed

    with pytest.raises(Killed):
        crossfit(data, 3, config, callback=stop_in_the_second_fold, checkpoint=checkpoint)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phase1-fold0.pt", "phase1-fold1.pt"]
    steps.clear()
    resumed = crossfit(data, 3, config, callback=lambda step, record: steps.append(step), checkpoint=checkpoint)
    assert steps == [*range(4, 10), *range(10)]  # the first fold is not trained again, the second resumes
    assert torch.equal(whole.logits, resumed.logits) and whole.inferred.keys() == resumed.inferred.keys()
    assert all(torch.equal(whole.inferred[s], resumed.inferred[s]) for s in whole.inferred)


def test_a_cnn_on_augmented_images_resumes_to_the_same_weights(tmp_path):
    images = stream(read_layout("images", image_folder(tmp_path / "img")), network("cnn", image_size=SIZE), workers=0)
    config = TrainConfig(steps=10, batch_size=8, lr=0.05, checkpoint_freq=4)
    whole = fit(images, "groupdro", config)
    resumed = interrupted_then_resumed(images, "groupdro", config, None, tmp_path / "cnn.pt", stop=6)
    same_run(whole, resumed)


# The CLI, killed for real: a wrapper runs `memaware run` and sends itself SIGKILL right after its k-th
# checkpoint is written (with a log, it first appends the file's name to it); the same command, rerun, resumes.
KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import memaware.train.resume as resume
    writes, kill_at, log = [0], int(os.environ["KILL_AT_CHECKPOINT"]), os.environ.get("CHECKPOINT_LOG")
    save = resume.save_checkpoint
    def save_then_die(path, *args, **kwargs):
        save(path, *args, **kwargs)
        if log:
            with open(log, "a") as f:
                f.write(Path(path).name + "\\n")
        writes[0] += 1
        if writes[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    resume.save_checkpoint = save_then_die
    from memaware.cli import main
    sys.argv = ["memaware", *sys.argv[1:]]
    main()
""")


def memaware(args, cwd, kill_at=None, log=None):
    """`memaware ARGS` in `cwd`; killed after its `kill_at`-th checkpoint write, logging the writes to `log`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if kill_at is None:
        return subprocess.run([sys.executable, "-m", "memaware", *args], cwd=cwd, env=env, capture_output=True,
                              text=True)
    env.update(KILL_AT_CHECKPOINT=str(kill_at), CHECKPOINT_LOG=str(log or ""))
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


def written(log):
    return log.read_text().splitlines()


@pytest.fixture
def checkpoint_writes(monkeypatch):
    """The file names of the checkpoints written in this process, in order."""
    names, save = [], resume.save_checkpoint

    def save_and_record(path, *args, **kwargs):
        names.append(Path(path).name)
        return save(path, *args, **kwargs)

    monkeypatch.setattr(resume, "save_checkpoint", save_and_record)
    return names


def in_process(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_the_cli_killed_in_crossfit_resumes_fold_by_fold_to_the_uninterrupted_results(tmp_path, monkeypatch,
                                                                                         checkpoint_writes):
    monkeypatch.chdir(tmp_path)
    args = ["run", "--data", str(features_file(tmp_path)), "--heldout", "crossfit", "--folds", "3", "--methods",
            "mat", "--steps", "8", "--batch-size", "16", "--checkpoint-freq", "4"]
    resumable = [*args, "--out", "resumed", "--checkpoint-every", "3"]  # each fold writes after steps 2, 5, 7
    died = memaware(resumable, tmp_path, kill_at=5, log=tmp_path / "killed.log")  # in fold 1, after its step 5
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert written(tmp_path / "killed.log") == ["phase1-fold0.pt"] * 3 + ["phase1-fold1.pt"] * 2
    in_process(*resumable)
    # fold 0 is read back, fold 1 trains its last two steps, fold 2 all eight, then MAT
    assert checkpoint_writes == ["phase1-fold1.pt"] + ["phase1-fold2.pt"] * 3 + ["mat-seed0.pt"] * 3
    in_process(*args, "--out", "plain")
    assert outputs(tmp_path / "resumed") == outputs(tmp_path / "plain")
    assert not (tmp_path / "resumed" / "checkpoint").exists()


CROSSFIT_SWEEP = {"name": "crossfit", "datasets": [{"name": "figure1", "args": {"n": 80, "d": 12},
                                                    "train": {"steps": 8, "checkpoint_freq": 4}}],
                  "methods": ["mat"], "phase1": {"source": "crossfit", "folds": 3},
                  "search": {"combinations": 1, "seeds": [0], "criteria": ["va_wga"]}, "report": {"formats": ["md"]}}


def test_a_sweep_killed_in_crossfit_keeps_the_finished_folds_and_ends_as_the_uninterrupted_one(tmp_path,
                                                                                              checkpoint_writes):
    (tmp_path / "exp.yaml").write_text(json.dumps(CROSSFIT_SWEEP))
    died = memaware(["sweep", "exp.yaml", "--out", "resumed"], tmp_path, kill_at=2, log=tmp_path / "killed.log")
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert written(tmp_path / "killed.log") == ["phase1-fold0.pt", "phase1-fold1.pt"]  # each fold once done
    experiment = validate(CROSSFIT_SWEEP, "exp.yaml")
    resumed = run_sweep(experiment, tmp_path / "resumed")
    assert checkpoint_writes == ["phase1-fold2.pt"]  # folds 0 and 1 are not trained again
    assert resumed == run_sweep(experiment, tmp_path / "plain")
    assert [p.name for p in (tmp_path / "resumed" / "phase1").iterdir()] == [resumed["phase1"]["figure1"]["key"]]


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
