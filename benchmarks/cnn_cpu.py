"""A small CNN trained end to end on a CPU: memaware against a plain PyTorch loop doing the same work.

What a user without a GPU tries first: `memaware run --backbone cnn` on a folder of a few thousand 32 px
images. The images are fashion-on-backgrounds' (Fashion-MNIST items on land or water backgrounds,
memaware.data.backgrounds; Waterbirds' group sizes times --scale: 2,945 images at 0.25) shrunk to 32 px,
written as PNGs in the `images` layout and decoded once by memaware's stream: both loops train on those
decoded images. The work of each loop, stage by stage:
- phase 1: XRM's twins, two CNNs trained together, each on its half of the train split (class-balanced
  loss on dynamic labels, the held-out twin's label flips after each step), then both twins' logits on
  every split: held-out logits and inferred groups;
- ERM, then MAT with phase 1's held-out logits (tau 0.1, calibration over the whole train split), each
  evaluated on train, val and test every 50 steps and at the last step, keeping a copy of the weights of
  the best step by validation worst-group accuracy.
Every stage: --steps steps (900) of batch 64, SGD with momentum 0.9, lr 1e-3, weight decay 1e-4; every
training image randomly resized-cropped (area 0.7-1, aspect ratio 3/4-4/3) and flipped. The model: three
3x3 convolutions (32, 64, 128 channels; strides 1, 2, 2) with BatchNorm and ReLU, global average pooling,
a linear head. The stages alternate between the two loops (memaware's phase 1, the plain one's, ...), so
that a change in the machine's load affects both alike.

    PYTHONPATH=src python benchmarks/cnn_cpu.py                     # one thread, 900 steps
    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/cnn_cpu.py --threads 2
    PYTHONPATH=src python benchmarks/cnn_cpu.py --plain-channels-last   # the plain loop in memaware's layout
    PYTHONPATH=src python benchmarks/cnn_cpu.py --steps 60 --scale 0.05     # a smoke run
    PYTHONPATH=src python benchmarks/cnn_cpu.py --step-times 30 --threads 2   # one training step alone

The plain loop is what a competent PyTorch user writes: the decoded images as one normalized float tensor
in memory (PyTorch's default layout; channels-last with --plain-channels-last), batches drawn from a
shuffled pass, the crop and flip of a whole batch by one affine resampling, evaluation in batches of 64 in
eval mode. It uses no part of memaware. The benchmark first times one evaluation of every split in chunks
of 4096 images (memaware's rule before, the GPU's) and in the CPU's chunks. Prints wall and CPU seconds
(the process's, which a busy machine inflates less). Needs Fashion-MNIST's files (--fashion-mnist,
Debian's dataset-fashion-mnist) and Pillow.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from memaware.data.backgrounds import FASHION_DIR, Recipe, make_images
from memaware.data.build import write_images
from memaware.heldout import train_phase1
from memaware.data.layouts import read_layout
from memaware.data.stream import eval_chunk, stream
from memaware.errors import MemawareError
from memaware.train import TrainConfig, fit
from memaware.train.backbones import folder_network, network
from memaware.train.loop import predict_logits

SIZE = 32
TAU = 0.1
SPLITS = ("train", "val", "test")


# ---- the plain loop ----------------------------------------------------------------------------------------

def plain_cnn(n_classes: int, args) -> nn.Module:
    """The CNN (channels-last with --plain-channels-last)."""
    layers, channels = [], 3
    for i, width in enumerate((32, 64, 128)):
        layers += [nn.Conv2d(channels, width, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                   nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        channels = width
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, n_classes))
    return model.to(memory_format=memory_format(args))


def memory_format(args) -> torch.memory_format:
    return torch.channels_last if args.plain_channels_last else torch.contiguous_format


def crop_and_flip(x: torch.Tensor, gen: torch.Generator, args) -> torch.Tensor:
    """Each image of the batch: a random crop (area 0.7-1, aspect 3/4-4/3) resized back, flipped half the time."""
    n = len(x)
    area = 0.7 + 0.3 * torch.rand(n, generator=gen)
    aspect = torch.exp(math.log(3 / 4) + math.log(16 / 9) * torch.rand(n, generator=gen))
    w, h = torch.sqrt(area * aspect).clamp(max=1), torch.sqrt(area / aspect).clamp(max=1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w * torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta[:, 1, 1] = h
    theta[:, 0, 2] = (2 * torch.rand(n, generator=gen) - 1) * (1 - w)
    theta[:, 1, 2] = (2 * torch.rand(n, generator=gen) - 1) * (1 - h)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False).contiguous(
        memory_format=memory_format(args))


def batches(n: int, size: int, gen: torch.Generator):
    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n - size + 1, size):
            yield order[i:i + size]


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    model.eval()
    out = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
    model.train()
    return out


def group_accuracies(logits: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> dict:
    correct = (logits.argmax(1) == y).float()
    groups = [correct[g == k].mean().item() for k in g.unique()]
    return {"wga": min(groups), "avg": correct.mean().item()}


def sgd(params, args):
    return torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)


def plain_xrm(data: dict, args, n_classes: int) -> dict:
    """Phase 1: the twins' held-out logits on the train split and the inferred groups of every split."""
    gen = torch.Generator().manual_seed(0)
    x, y = data["train"]
    twins = [plain_cnn(n_classes, args), plain_cnn(n_classes, args)]
    assign, labels = torch.randint(0, 2, (len(y),), generator=gen), y.clone()
    opt = sgd([p for m in twins for p in m.parameters()], args)
    draw = batches(len(y), args.batch_size, gen)
    for _ in range(args.steps):
        idx = next(draw)
        xb = crop_and_flip(x[idx], gen, args)
        out = torch.stack([m(xb) for m in twins])
        rows = torch.arange(len(idx))
        held_in, held_out, target = out[assign[idx], rows], out[1 - assign[idx], rows], labels[idx]
        per_example = F.cross_entropy(held_in, target, reduction="none")
        loss = sum(per_example[target == c].mean() for c in target.unique())
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            p, k = held_out.softmax(1).max(1)
            flip = torch.rand(len(idx), generator=gen) < ((p - 1 / n_classes) * n_classes / (n_classes - 1))
            labels[idx[flip]] = k[flip]
    final = {s: torch.stack([logits_of(m, data[s][0]) for m in twins]) for s in SPLITS}
    heldout = final["train"][1 - assign, torch.arange(len(y))]
    inferred = {s: (final[s].argmax(2) != data[s][1]).any(0) for s in SPLITS}
    return {"heldout": heldout, "inferred": inferred, "flip_rate": (labels != y).float().mean().item()}


def mat_shift(heldout: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    q = torch.softmax(heldout.double() / TAU, 1)
    joint = q.T @ F.one_hot(y, n_classes).double() / len(y)
    calibration = joint / joint.sum(1, keepdim=True).clamp_min(1e-12)
    return torch.log(q @ calibration + 1e-8).float()


def plain_fit(data: dict, groups: dict, args, n_classes: int, shift: torch.Tensor | None = None) -> dict:
    """ERM (or MAT with `shift`), evaluated every 50 steps; the record of the best validation WGA, with a copy
    of the model's weights at that step (as memaware keeps its best checkpoint)."""
    gen = torch.Generator().manual_seed(0)
    x, y = data["train"]
    model = plain_cnn(n_classes, args)
    opt = sgd(model.parameters(), args)
    draw = batches(len(y), args.batch_size, gen)
    best = None
    for step in range(args.steps):
        idx = next(draw)
        logits = model(crop_and_flip(x[idx], gen, args))
        loss = F.cross_entropy(logits if shift is None else logits + shift[idx], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.checkpoint_freq == 0 or step == args.steps - 1:
            record = {s: group_accuracies(logits_of(model, data[s][0]), data[s][1], groups[s]) for s in SPLITS}
            if best is None or (record["val"]["wga"], record["val"]["avg"]) > (best["val"]["wga"], best["val"]["avg"]):
                best = {"step": step, **record, "state": copy.deepcopy(model.state_dict())}
    return best


def plain_inputs(images, args) -> tuple[dict, dict]:
    """The decoded uint8 images as normalized float tensors per split, with labels and groups (y, a)."""
    x = torch.as_tensor(images.store).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)
    x = x.contiguous(memory_format=memory_format(args))
    data, groups = {}, {}
    for s in SPLITS:
        mask = torch.as_tensor(images.mask(s))
        y, a = torch.as_tensor(images.y[images.mask(s)]), torch.as_tensor(images.a[images.mask(s)])
        data[s], groups[s] = (x[mask], y), 2 * y + a
    return data, groups


# ---- the benchmark -----------------------------------------------------------------------------------------

def timed(label: str, fn, times: dict):
    """fn(), its wall and CPU seconds kept in times[label] and printed."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    times[label] = (time.perf_counter() - start, time.process_time() - cpu)
    print(f"  {label}: {times[label][0]:.1f} s (CPU {times[label][1]:.1f} s)", flush=True)
    return out


def evaluation_chunks(images, config: TrainConfig) -> None:
    """Print the seconds of one evaluation of memaware's CNN on every split, in chunks of 4096 images (the
    rule before eval_chunk, still the GPU's for 32 px) and in the CPU's chunks (eval_chunk), twice each."""
    model = images.build_model(config, torch.Generator().manual_seed(0))
    seconds = {}
    for chunk in (4096, eval_chunk(SIZE, "cpu")) * 2:
        start = time.perf_counter()
        for split in SPLITS:
            inputs = images.get(split).x
            inputs.eval_batch = chunk
            predict_logits(model, inputs)
        seconds.setdefault(chunk, []).append(time.perf_counter() - start)
    print("one evaluation of the three splits: " + ", ".join(
        f"chunks of {chunk} images {' and '.join(f'{t:.2f}' for t in times)} s" for chunk, times in seconds.items()))


def run(images, args) -> tuple[dict, dict]:
    """Both loops, stage by stage, each stage's first loop in turn (memaware, plain, memaware), so that a
    drift of the machine's load favours neither; (seconds per (loop, stage), test WGA of the best step)."""
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=1e-4,
                         momentum=0.9, checkpoint_freq=args.checkpoint_freq, seed=0)
    torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1)  # a first optimizer imports torch._dynamo: not timed
    evaluation_chunks(images, config)
    data, groups = plain_inputs(images, args)
    k = images.n_classes
    times, out = {}, {}

    def stage(name: str, mine, plain, plain_first: bool = False) -> None:
        for loop, fn in [("memaware", mine), ("plain", plain)][::-1 if plain_first else 1]:
            out[f"{loop} {name}"] = timed(f"{loop} {name}", fn, times)

    stage("phase 1", lambda: train_phase1(images, "xrm", config), lambda: plain_xrm(data, args, k))
    shift = mat_shift(out["plain phase 1"]["heldout"], data["train"][1], k)
    stage("erm", lambda: fit(images, "erm", config, heldout=out["memaware phase 1"]),
          lambda: plain_fit(data, groups, args, k), plain_first=True)
    stage("mat", lambda: fit(images, "mat", config, heldout=out["memaware phase 1"]),
          lambda: plain_fit(data, groups, args, k, shift))
    print(f"  flip rates: memaware {out['memaware phase 1'].flip_rate:.3f}, "
          f"plain {out['plain phase 1']['flip_rate']:.3f}")
    wga = {}
    for m in ("erm", "mat"):
        wga[f"memaware {m}"] = out[f"memaware {m}"].selected("va_wga")["test"]["wga"]
        wga[f"plain {m}"] = out[f"plain {m}"]["test"]["wga"]
    return times, wga


def report(times: dict, wga: dict) -> None:
    """A Markdown table of wall seconds (CPU seconds) per stage and loop, and the test WGAs."""
    times = {**times, **{f"{loop} all": tuple(sum(v[i] for key, v in times.items() if key.startswith(loop))
                                               for i in (0, 1)) for loop in ("memaware", "plain")}}
    print("\n| stage | memaware: wall (CPU) | plain loop: wall (CPU) | memaware / plain, wall (CPU) |")
    print("|---|---|---|---|")
    for stage in ("phase 1", "erm", "mat", "all"):
        (mine, mine_cpu), (plain, plain_cpu) = times[f"memaware {stage}"], times[f"plain {stage}"]
        print(f"| {stage} | {mine:.1f} s ({mine_cpu:.1f} s) | {plain:.1f} s ({plain_cpu:.1f} s) | "
              f"{mine / plain:.2f} ({mine_cpu / plain_cpu:.2f}) |")
    print("test WGA at the best validation-WGA step: " + ", ".join(f"{k} {v:.3f}" for k, v in wga.items()))


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 "unknown CPU")
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}"


def step_times(args) -> None:
    """Print the milliseconds (wall and CPU) of one training step of memaware's CNN on a batch of random
    32 px images, over args.step_times steps after 3 untimed ones: the threads' effect alone, no data."""
    model = network("cnn", image_size=SIZE).classifier(2, TrainConfig(), torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = torch.rand(args.batch_size, 3, SIZE, SIZE), torch.randint(0, 2, (args.batch_size,))
    for i in range(3 + args.step_times):
        if i == 3:
            start, cpu = time.perf_counter(), time.process_time()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    wall, cpu = [1000 * t / args.step_times for t in (time.perf_counter() - start, time.process_time() - cpu)]
    print(f"{args.threads} thread(s), OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}: a step "
          f"{wall:.0f} ms ({cpu:.0f} ms CPU); {machine()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--checkpoint-freq", type=int, default=50)
    parser.add_argument("--scale", type=float, default=0.25, help="fraction of Waterbirds' group sizes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both loops")
    parser.add_argument("--plain-channels-last", action="store_true",
                        help="the plain loop's images and model channels-last, as memaware's (default: PyTorch's)")
    parser.add_argument("--fashion-mnist", default=str(FASHION_DIR), help="folder of Fashion-MNIST's four .gz files")
    parser.add_argument("--step-times", type=int, metavar="N", help="only time N training steps of the CNN")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.step_times:
        return step_times(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        write_images(folder, *make_images(args.scale, 0, Path(args.fashion_mnist), Recipe(image_size=SIZE)))
        raw = read_layout("images", folder)
        net, size_note = folder_network(raw, "cnn")
        start = time.perf_counter()
        images = stream(raw, net, workers=0)
        print(f"{len(images)} images, {size_note}, decoded in {time.perf_counter() - start:.1f} s; {args.steps} "
              f"steps of batch {args.batch_size}; {args.threads} thread(s); {machine()}", flush=True)
    report(*run(images, args))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    try:
        main()
    except MemawareError as err:
        sys.exit(f"error: {err}")
