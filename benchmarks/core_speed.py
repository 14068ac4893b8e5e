"""Time the Figure-1 experiment (XRM + four runs of 1000 full-batch steps) on a device.

    PYTHONPATH=src python benchmarks/core_speed.py --device cuda
"""
import argparse
import time

import torch

from memaware.demo import run_demo


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    for i in range(args.repeats):
        start = time.perf_counter()
        runs, phase1 = run_demo(device=args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        minority = {r.label: round(sum(r.result.history[-1]["test"]["group_acc"][g] for g in ("0,1", "1,0")) / 2, 4)
                    for r in runs}
        print(f"repeat {i}: {elapsed:.2f} s on {args.device}; minority test accuracy {minority}; "
              f"XRM flip rate {phase1['flip_rate']:.4f}")


if __name__ == "__main__":
    main()
