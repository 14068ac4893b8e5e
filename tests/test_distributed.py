"""Two processes (torchrun, gloo on the CPU) train the same model as one process on the same global batch:
ERM, MAT (with XRM's phase 1 under both processes too) and GroupDRO on features, with a batch that does not
split evenly; every method that trains a network trains a CNN end to end to the numbers of one process
(BatchNorm over the global batch); a CNN trains end to end under torchrun and rank 0 alone writes the
outputs; a sweep under torchrun trains each network once with both processes, its runs on features on rank
0 alone (the results of one process), writes from rank 0 only and resumes without redoing finished runs."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from memaware.data import make_figure1
from memaware.errors import MemawareError
from memaware.methods import REGISTRY
from memaware.train.distributed import Distributed

from test_finetune import HPARAMS, SIZE, image_folder
from test_sweep_backbones import experiment, sweep


def memaware(args, cwd, processes=1, program=("-m", "memaware"), succeeds=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEMAWARE_CACHE": str(cwd / "cache")}
    launcher = ([sys.executable, *program] if processes == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                 *program])
    done = subprocess.run([*launcher, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert (done.returncode == 0) == succeeds, done.stdout + done.stderr
    return done


def numbers(value, prefix=""):
    """{path: number} of every number in a JSON value (NaN kept), for comparisons within a tolerance."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in numbers(item, f"{prefix}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in numbers(item, f"{prefix}/{i}").items()}
    return {prefix: value} if isinstance(value, (int, float)) and not isinstance(value, bool) else {}


def assert_close(a, b, tol=1e-5):
    a, b = numbers(a), numbers(b)
    assert a.keys() == b.keys()
    far = {k: (a[k], b[k]) for k in a if not (a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k]))
                                              or abs(a[k] - b[k]) <= tol * max(1.0, abs(a[k])))}
    assert not far, far


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    data = make_figure1(n=80, d=12, seed=1)
    np.savez(folder / "data.npz", x=data.x, y=data.y, a=data.a, split=data.split)
    return folder


def test_two_processes_train_the_model_of_one_process_on_the_global_batch(features):
    args = ["run", "--data", "data.npz", "--methods", "erm,mat,groupdro", "--steps", "16", "--batch-size", "15",
            "--checkpoint-freq", "3", "--lr", "0.05"]  # 15 examples a step: parts of 8 and 7
    memaware([*args, "--out", "one"], features)
    memaware([*args, "--out", "two"], features, processes=2)
    one, two = (json.loads((features / out / "history.json").read_text()) for out in ("one", "two"))
    assert_close(one, two)
    losses = [r["loss"] for r in one["groupdro"]["0"]]
    assert len(set(losses)) == len(losses)  # the runs moved: the comparison is not between constants
    results = [json.loads((features / out / "results.json").read_text()) for out in ("one", "two")]
    assert_close(results[0]["methods"], results[1]["methods"])
    assert results[0]["phase1"] == results[1]["phase1"]  # XRM (phase 1 for MAT) flipped the same labels


def test_a_cnn_trains_end_to_end_under_torchrun_and_rank_0_writes_once(tmp_path):
    image_folder(tmp_path / "img")
    done = memaware(["run", "--data", "img", "--backbone", "cnn", "--image-size", str(SIZE), "--workers", "0",
                     "--methods", "erm,groupdro", "--steps", "6", "--batch-size", "8", "--checkpoint-freq", "3",
                     "--checkpoint-every", "2", "--no-sync-batchnorm", "--out", "out"], tmp_path, processes=2)
    assert done.stdout.count("wrote ") == 1
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["methods"]) == {"erm", "groupdro"}
    assert sorted(os.listdir(tmp_path / "out" / "models")) == ["erm", "groupdro"]
    assert not (tmp_path / "out" / "checkpoint").exists()


NETWORK_METHODS = sorted(REGISTRY)  # every registered method trains a network

# alone or under torchrun: XRM's twin networks, then every method of argv[1] (hyperparameters argv[2], JSON) on a
# CNN, a global batch of 7 (parts of 4 and 3 under two processes); rank 0 writes {method: numbers} into argv[3]
METHODS = """
import json
import sys

import torch

from memaware.data.layouts import read_layout
from memaware.data.stream import stream
from memaware.methods import create
from memaware.train import TrainConfig, fit
from memaware.heldout import xrm
from memaware.train.backbones import network
from memaware.train.distributed import is_main, start_from_environment, stop
from memaware.train.loop import predict_logits

names, hparams, out = sys.argv[1].split(","), json.loads(sys.argv[2]), sys.argv[3]
distributed = start_from_environment("cpu")
data = stream(read_layout("images", "img"), network("cnn", image_size=16), workers=0)
config = TrainConfig(steps=4, batch_size=7, lr=0.02, checkpoint_freq=2)
heldout = xrm(data, config, distributed=distributed)
results = {"phase1": heldout.logits.tolist()}
for name in names:
    model = data.build_model(config, torch.Generator().manual_seed(0))
    first_conv = model[0].body[0].weight.detach().clone()
    result = fit(data, create(name, **hparams.get(name, {})), config, heldout=heldout, model=model,
                 distributed=distributed)
    conv = next(m.weight for m in result.model.modules() if isinstance(m, torch.nn.Conv2d))
    results[name] = {"history": result.history, "logits": predict_logits(result.model, data.get("test").x).tolist(),
                     "conv_moved": not torch.equal(conv.detach(), first_conv),
                     "norms": sorted({type(m).__name__ for m in result.model.modules() if "Norm" in type(m).__name__})}
if is_main(distributed):
    with open(out, "w") as file:
        json.dump(results, file)
stop(distributed)
"""


def test_every_network_method_trains_a_cnn_under_torchrun_to_the_numbers_of_one_process(tmp_path):
    """The global batch's BatchNorm statistics, and MMD's, CORAL's and CnC's penultimate features, are those of
    one process; the methods' draws and state are the same on both processes."""
    image_folder(tmp_path / "img", n=32)
    (tmp_path / "methods.py").write_text(METHODS)
    args = [",".join(NETWORK_METHODS), json.dumps(HPARAMS)]
    memaware([*args, "one.json"], tmp_path, program=["methods.py"])
    memaware([*args, "two.json"], tmp_path, processes=2, program=["methods.py"])
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert set(two) == {"phase1", *NETWORK_METHODS}
    for name in NETWORK_METHODS:
        run = two[name]
        assert [r["step"] for r in run["history"]] == [0, 2, 3] and run["conv_moved"], name
        assert np.isfinite(run["logits"]).all() and np.abs(run["logits"]).sum() > 0, name
        assert run["norms"] == ["BatchNorm2d"], name  # the trained model has its own layers back
        assert_close(one[name], run)
    assert_close(one["phase1"], two["phase1"])


class NormAndActivation(torch.nn.BatchNorm2d):
    """A BatchNorm whose forward pass does more (as timm's BatchNormAct2d)."""


def test_a_batchnorm_of_another_class_cannot_normalise_over_the_global_batch():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), NormAndActivation(4))
    with pytest.raises(MemawareError) as err:
        with Distributed(rank=0, world=2).global_batchnorm(model):
            pass
    assert str(err.value) == ("sync_batchnorm: the network's NormAndActivation layers are not torch's BatchNorm and "
                              "cannot normalise over the global batch; train with sync_batchnorm false (memaware run "
                              "--no-sync-batchnorm)")


# under torchrun: a DDP step (in a function, as `fit` takes it), then `stop`; each rank writes the names
# of its threads into threads-RANK.txt
THREADS = """
import os

import torch

from memaware.train.distributed import start_from_environment, stop


def step(distributed):
    model = distributed.wrap(torch.nn.Linear(3, 2))
    model(torch.randn(4, 3)).sum().backward()


distributed = start_from_environment("cpu")
step(distributed)
stop(distributed)
names = sorted(open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task"))
with open(f"threads-{distributed.rank}.txt", "w") as out:
    out.write(" ".join(names))
"""


def test_stop_ends_the_process_groups_threads_after_a_ddp_step(tmp_path):
    """A group that outlives `stop` keeps gloo's threads to the interpreter's teardown, where they can abort
    a process whose work is done (and torchrun then fails the command)."""
    (tmp_path / "threads.py").write_text(THREADS)
    memaware([], tmp_path, processes=2, program=["threads.py"])
    threads = [(tmp_path / f"threads-{rank}.txt").read_text().split() for rank in (0, 1)]
    assert all(threads)  # the main thread at least
    assert not [name for names in threads for name in names if "gloo" in name or "tcpstore" in name], threads


# memaware's CLI, logging per rank (calls-RANK.txt) every training entry point called, whether with the
# process group (sharded) or not (alone), and every run folder marked done
LOGGING_CLI = """
import importlib
import os
import sys
from pathlib import Path

from memaware.cli import main


def logged(module, name):
    original = getattr(importlib.import_module(module), name)

    def call(*args, **kwargs):
        what = Path(args[0]).name if name == "mark_done" else "sharded" if kwargs.get("distributed") else "alone"
        with open(f"calls-{os.environ['RANK']}.txt", "a") as log:
            log.write(f"{name} {what}\\n")
        return original(*args, **kwargs)

    setattr(importlib.import_module(module), name, call)


# phase 1 first: importing it binds the loop's own fit, which is then logged once per call
for module, name in [("memaware.heldout.xrm", "fit"), ("memaware.train", "fit"), ("memaware.train.loop", "fit"),
                     ("memaware.train.batched", "fit_many"), ("memaware.train.batched", "xrm_many"),
                     ("memaware.sweep.store", "mark_done")]:
    logged(module, name)
sys.argv[0] = "memaware"
main()
"""

FEATURES = {"name": "figure1", "args": {"n": 120, "d": 8}, "train": {"steps": 12, "checkpoint_freq": 4},
            "phase1": {"steps": 12}}


def sweep_under_torchrun(folder, *args, succeeds=True):
    """`torchrun --nproc-per-node 2 -m memaware sweep exp.yaml --out out` (logging its calls); per rank, the
    lines it logged."""
    for rank in (0, 1):
        (folder / f"calls-{rank}.txt").unlink(missing_ok=True)
    done = memaware(["sweep", "exp.yaml", "--out", "out", *args], folder, processes=2, program=["cli.py"],
                    succeeds=succeeds)
    logs = [folder / f"calls-{rank}.txt" for rank in (0, 1)]
    return done, [path.read_text().splitlines() if path.is_file() else [] for path in logs]


def done_keys(out) -> set[str]:
    return {p.parent.name for p in out.glob("*/*/done")}


@pytest.fixture(scope="module")
def torchrun_sweep(tmp_path_factory):
    """A sweep over a CNN on images and a linear head on features, under torchrun: its folder, its output
    and the calls each rank logged."""
    folder = tmp_path_factory.mktemp("ddp-sweep")
    raw = experiment(image_folder(folder / "imgs", n=32))
    raw["datasets"].append(FEATURES)
    (folder / "exp.yaml").write_text(yaml.safe_dump(raw))
    (folder / "cli.py").write_text(LOGGING_CLI)
    done, logs = sweep_under_torchrun(folder)
    return folder, done, logs


def test_a_sweep_under_torchrun_trains_each_network_once_with_both_processes_and_rank_0_writes(torchrun_sweep):
    folder, done, (rank0, rank1) = torchrun_sweep
    out = folder / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert {r["dataset"] for r in summary["results"]} == {"images", "figure1"}
    assert all(len(r["runs"]) == 2 and not r["failed"] for r in summary["results"])
    networks = [p.parent for p in out.glob("*/*/spec.json") if "network" in p.read_text()]
    assert len(networks) >= 5  # phase 1 and at least the 4 runs of the search on images
    # every run on the network trained once, by both ranks together; nothing else on rank 1
    assert rank1 == ["fit sharded"] * len(networks)
    assert [line for line in rank0 if "sharded" in line] == rank1
    # runs on features trained on rank 0 alone, by the batched engine; rank 0 alone marked every run done, once
    assert "fit_many alone" in rank0 and "xrm_many alone" in rank0
    marked = [line.split()[1] for line in rank0 if line.startswith("mark_done")]
    assert sorted(marked) == sorted(done_keys(out))
    assert done.stdout.count("sweep tiny-cnn: ") == 1 and (out / "report" / "table.md").is_file()


def test_runs_on_features_under_torchrun_give_the_results_of_one_process(torchrun_sweep, tmp_path):
    folder, _, _ = torchrun_sweep
    raw = experiment(folder / "imgs")
    raw["datasets"] = [FEATURES]
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(raw))
    result = sweep(tmp_path / "exp.yaml", tmp_path / "out")
    assert result.exit_code == 0, result.output
    one = json.loads((tmp_path / "out" / "summary.json").read_text())
    two = json.loads((folder / "out" / "summary.json").read_text())
    assert one["results"] and [r for r in two["results"] if r["dataset"] == "figure1"] == one["results"]
    assert one["phase1"]["figure1"] == two["phase1"]["figure1"]


def test_a_resumed_sweep_under_torchrun_trains_only_its_unfinished_runs(torchrun_sweep):
    folder, _, _ = torchrun_sweep
    out = folder / "out"
    summary = json.loads((out / "summary.json").read_text())
    network = next(r["runs"][1]["key"] for r in summary["results"] if r["dataset"] == "images")
    features = next(r["runs"][1]["key"] for r in summary["results"] if r["dataset"] == "figure1")
    for key in (network, features):
        (out / "runs" / key / "done").unlink()  # as a kill during those runs leaves them
    _, (rank0, rank1) = sweep_under_torchrun(folder)
    assert rank1 == ["fit sharded"]
    assert sorted(line for line in rank0 if line.startswith("mark_done")) == sorted(
        f"mark_done {key}" for key in (network, features))
    assert json.loads((out / "summary.json").read_text()) == summary


def test_other_executors_are_refused_under_torchrun(torchrun_sweep):
    folder, _, _ = torchrun_sweep
    done, _ = sweep_under_torchrun(folder, "--executor", "processes", succeeds=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --executor processes: under torchrun a sweep runs with the local executor (its "
                      "networks train across the processes)"] * 2


def test_networks_on_a_gpu_and_on_the_cpu_in_one_sweep_are_refused_under_torchrun(tmp_path):
    raw = experiment(image_folder(tmp_path / "imgs", n=32))
    on_cpu = raw["datasets"][0]
    raw["datasets"].append({**on_cpu, "label": "images-gpu", "train": {**on_cpu["train"], "device": "cuda"}})
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(raw))
    done = memaware(["sweep", "exp.yaml", "--out", "out"], tmp_path, processes=2, succeeds=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: under torchrun the networks of a sweep train on one kind of device: images-gpu is "
                      "on cuda, images on cpu"] * 2
    assert not (tmp_path / "out").exists()
