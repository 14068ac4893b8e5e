"""JTT's first model and upweight on an offline data set: why JTT collapses on compas (docs/baselines.md).

For each first-model length and upweight λ: the fraction e of training examples the first model gets
wrong (per group), the share λe / (λe + 1 - e) of the draws that its errors carry in the second stage,
and the second model's test WGA, average accuracy and AUROC at the last step. The run's settings are the
`linear` family's defaults (SGD lr 1e-3, momentum 0.9, batch 64, weight decay 1e-4), 1001 steps, seed 0.

    PYTHONPATH=src python benchmarks/jtt_upweight.py --data compas
    PYTHONPATH=src python benchmarks/jtt_upweight.py --data adult --epochs 2 --upweights 1 5 20 100
"""
import argparse

from memaware.data.registry import load_dataset
from memaware.methods import create
from memaware.train import TrainConfig, fit


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="compas")
    parser.add_argument("--epochs", type=float, nargs="+", default=[1, 2, 20])
    parser.add_argument("--upweights", type=float, nargs="+", default=[1, 1.5, 2, 3, 4, 5, 20, 100])
    parser.add_argument("--steps", type=int, default=1001)
    args = parser.parse_args()
    data = load_dataset(args.data)
    config = TrainConfig(steps=args.steps, batch_size=64, lr=1e-3, weight_decay=1e-4, checkpoint_freq=0)
    groups = data.get("train").groups
    print("first_epochs upweight | error rate (per group) | errors' share of draws | test wga  avg  auroc")
    for epochs in args.epochs:
        for upweight in args.upweights:
            jtt = create("jtt", first_epochs=epochs, upweight=upweight)
            test = fit(data, jtt, config).history[-1]["test"]
            errors = jtt.errors.double()
            share = upweight * errors.sum() / (upweight * errors.sum() + (1 - errors).sum())
            per_group = " ".join(f"{float(errors[groups == g].mean()):.2f}" for g in range(int(groups.max()) + 1))
            print(f"{epochs:>12g} {upweight:>8g} | {float(errors.mean()):.3f} ({per_group}) | {float(share):.2f} | "
                  f"{test['wga']:.3f} {test['avg_acc']:.3f} {test['auroc']:.3f}", flush=True)


if __name__ == "__main__":
    main()
