"""Training throughput of one GPU against two (torchrun, DistributedDataParallel), through memaware's loop.

The same model and the same per-GPU batch on 1 and on N processes (so N processes train on a global batch N
times larger): ResNet-50 (torchvision, random weights written to a file and read with --weights) at 224 px,
bf16 autocast and channels-last as `memaware run --backbone` trains it, ERM, from a layout folder of JPEGs
written here (benchmarks/finetune_throughput.py's) whose uint8 cache the first pass fills once. Each setting
prints its images a second (all processes together) and the peak GPU memory of its busiest process; then
the ratio N GPUs / 1 GPU.

    PYTHONPATH=src python benchmarks/ddp_scaling.py                    # needs 2 GPUs, torchvision, pydantic
    PYTHONPATH=src python benchmarks/ddp_scaling.py --gpus 1 2 4 --batch 128
    PYTHONPATH=src python benchmarks/ddp_scaling.py --tiny             # CPU, gloo, a small CNN: checks the script

Every setting runs in fresh processes: `python -m torch.distributed.run --standalone --nproc-per-node N
benchmarks/ddp_scaling.py --worker ...`; each writes its figures to a JSON file read back here.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2], help="numbers of processes to compare")
    parser.add_argument("--batch", type=int, default=128, help="examples per GPU and step")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="JPEG decoding processes")
    parser.add_argument("--tiny", action="store_true", help="CPU, gloo, the small cnn at 32 px: checks the script")
    parser.add_argument("--no-sync-batchnorm", dest="sync_batchnorm", action="store_false",
                        help="BatchNorm over each process's part of the batch (default: over the global batch)")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)  # a process of one setting
    parser.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        args.images, args.batch, args.steps, args.warmup = 96, 8, 3, 1
    return args


def recipe(args) -> dict:
    """The backbone, its weights file, image size and device of the benchmark (or of its --tiny check)."""
    if args.tiny:
        return {"backbone": "cnn", "weights": None, "image_size": 32, "device": "cpu"}
    return {"backbone": "torchvision:resnet50", "weights": str(args.folder / "resnet50.pt"), "image_size": 224,
            "device": "cuda"}


def prepare(args, folder: Path) -> None:
    """The JPEGs, ResNet-50's weights, and the uint8 cache filled once (the processes then map it)."""
    from finetune_throughput import write_jpegs

    from memaware.data.layouts import read_layout
    from memaware.data.stream import stream
    from memaware.train.backbones import network

    start = time.perf_counter()
    write_jpegs(folder / "jpegs", args.images, max(1, args.workers))
    settings = recipe(args)
    if settings["weights"]:
        import torchvision

        torch.save(torchvision.models.resnet50().state_dict(), settings["weights"])
    net = network(settings["backbone"], settings["weights"], settings["image_size"])
    stream(read_layout("images", folder / "jpegs"), net, workers=args.workers, cache_dir=folder / "cache")
    print(f"wrote {args.images} JPEGs (320 x 240) and filled the cache in {time.perf_counter() - start:.1f} s",
          flush=True)


def worker(args) -> None:
    """One process of one setting: ERM for warmup + steps steps on its part of the global batch; writes
    {img_s, peak_gib} of this rank to args.worker / rank-R.json."""
    from memaware.data.layouts import read_layout
    from memaware.data.stream import stream
    from memaware.train import TrainConfig, fit
    from memaware.train.backbones import network
    from memaware.train.distributed import process_device, start_from_environment, stop

    settings = recipe(args)
    distributed = start_from_environment(settings["device"])
    world, rank = (1, 0) if distributed is None else (distributed.world, distributed.rank)
    device = process_device(settings["device"], distributed)
    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cudnn.benchmark = True
    net = network(settings["backbone"], settings["weights"], settings["image_size"])
    data = stream(read_layout("images", args.folder / "jpegs"), net, workers=0, cache_dir=args.folder / "cache")
    config = TrainConfig(steps=args.warmup + args.steps, batch_size=args.batch * world, lr=0.01, device=device,
                         checkpoint_freq=0, sync_batchnorm=args.sync_batchnorm)
    marks = {}

    def callback(step, record):
        if step in (args.warmup - 1, args.warmup + args.steps - 1):
            if cuda:
                torch.cuda.synchronize()
            marks[step] = time.perf_counter()
            if cuda and step == args.warmup - 1:
                torch.cuda.reset_peak_memory_stats()

    fit(data, "erm", config, callback=callback, evaluate_splits=False, distributed=distributed)
    seconds = marks[args.warmup + args.steps - 1] - marks[args.warmup - 1]
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    (args.worker / f"rank-{rank}.json").write_text(json.dumps({"img_s": args.steps * args.batch * world / seconds,
                                                               "peak_gib": peak}))
    stop(distributed)


def run_setting(args, processes: int, folder: Path) -> dict:
    """img/s (rank 0's clock, all processes' images) and the largest peak memory of `processes` processes."""
    out = Path(tempfile.mkdtemp(dir=folder, prefix=f"w{processes}-"))
    forwarded = ["--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
                 "--folder", str(folder), "--worker", str(out), *(["--tiny"] if args.tiny else []),
                 *([] if args.sync_batchnorm else ["--no-sync-batchnorm"])]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               str(Path(__file__).resolve()), *forwarded]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent / "src"), str(HERE),
                                                                      os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(processes)]
    return {"img_s": ranks[0]["img_s"], "peak_gib": max(r["peak_gib"] for r in ranks)}


def main() -> None:
    args = parse_args()
    if args.worker is not None:
        return worker(args)
    if not args.tiny and torch.cuda.device_count() < max(args.gpus):
        raise SystemExit(f"this benchmark needs {max(args.gpus)} GPUs ({torch.cuda.device_count()} visible); "
                         f"--tiny checks it on the CPU")
    where = "CPU (gloo), --tiny" if args.tiny else f"{torch.cuda.get_device_name()}"
    print(f"{where}, torch {torch.__version__}, {os.cpu_count()} CPU cores", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        args.folder = folder
        prepare(args, folder)
        model = "small cnn, 32 px, fp32" if args.tiny else "ResNet-50, 224 px, bf16, channels-last"
        rates = {}
        for processes in args.gpus:
            rates[processes] = result = run_setting(args, processes, folder)
            print(f"{model}, batch {args.batch} per GPU, {processes} GPU{'s' if processes > 1 else ''}: "
                  f"{result['img_s']:,.0f} img/s, peak {result['peak_gib']:.1f} GiB per GPU", flush=True)
        base = rates[min(rates)]
        for processes, result in rates.items():
            if processes != min(rates):
                print(f"{processes} GPUs / {min(rates)}: {result['img_s'] / base['img_s']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
