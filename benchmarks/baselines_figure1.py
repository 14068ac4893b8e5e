"""Every registered method on the paper's Figure-1 problem (sigma = 0.5): test WGA and average accuracy.

Full-batch SGD (lr 0.01, no momentum, bias-free linear model), default hyperparameters except
GroupDRO's eta = 0.1; one XRM run per seed supplies held-out logits and inferred groups.

    PYTHONPATH=src python benchmarks/baselines_figure1.py --n 1000 --d 1800 --steps 1000 --seeds 0 1 2
"""
import argparse
import time

import numpy as np

from memaware.data import make_figure1
from memaware.demo import FIGURE1_CONFIG
from memaware.heldout import xrm
from memaware.methods import REGISTRY
from memaware.train import TrainConfig, fit

HPARAMS = {"groupdro": {"eta": 0.1}, "xrm+groupdro": {"eta": 0.1}}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--d", type=int, default=1800)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    results = {name: [] for name in sorted(REGISTRY)}
    for seed in args.seeds:
        data = make_figure1(n=args.n, d=args.d, sigma=0.5, seed=seed)
        config = TrainConfig(steps=args.steps, checkpoint_freq=0, seed=seed, device=args.device, **FIGURE1_CONFIG)
        heldout = xrm(data, config)
        for name in results:
            start = time.perf_counter()
            test = fit(data, name, config, heldout=heldout, **HPARAMS.get(name, {})).history[-1]["test"]
            results[name].append((test["wga"], test["avg_acc"], time.perf_counter() - start))
    print(f"n={args.n} d={args.d} steps={args.steps} seeds={args.seeds} device={args.device}")
    print(f"{'method':18s} {'test WGA (each seed)':28s} {'mean':>6s} {'avg acc':>8s} {'s/run':>6s}")
    for name, rows in results.items():
        wga, avg, secs = (np.array(col) for col in zip(*rows))
        print(f"{name:18s} {' '.join(f'{w:.3f}' for w in wga):28s} {wga.mean():6.3f} {avg.mean():8.3f} {secs.mean():6.2f}")


if __name__ == "__main__":
    main()
