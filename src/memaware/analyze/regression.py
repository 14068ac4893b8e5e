"""The good, the bad and the ugly memorization (the MAT paper's Figure 3), as a small regression.

Twenty points x in [-3, 3] with targets tanh(x) + 0.5 tanh(-5x) + noise. Each point gets `extra`
more input dimensions drawn sigma N(0, 1), its own: an MLP (300-300, tanh) fit to near-zero loss can
memorize a point's residual through them. At test time the extra dimensions are 0, so the curve over x
shows what the network learned from x: the underlying function with the noise memorized aside, the
noise bent into the curve (sigma = 0: nothing else to memorize with), or the points memorized without
the function.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

SIGMAS = (1e-4, 1e-3, 0.0)


def true_function(x):
    return np.tanh(x) + 0.5 * np.tanh(-5 * x)


def make_points(n: int = 20, extra: int = 30, sigma: float = 1e-3, noise: float = 0.15, seed: int = 0):
    """(inputs (n, 1 + extra), targets (n,)): x evenly spread over [-3, 3] with jitter, per-example extra
    dimensions sigma N(0, 1), targets the true function plus noise N(0, noise^2)."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-3, 3, n))
    targets = true_function(x) + noise * rng.standard_normal(n)
    inputs = np.column_stack([x, sigma * rng.standard_normal((n, extra))])
    return inputs.astype(np.float32), targets.astype(np.float32)


def mlp(n_inputs: int, hidden=(300, 300), seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    layers, width = [], n_inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.Tanh()]
        width = h
    layers.append(nn.Linear(width, 1))
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                bound = 1.0 / np.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
    return model


@dataclass
class RegressionFit:
    sigma: float
    train_mse: float
    steps: int
    grid: np.ndarray  # x values
    curve: np.ndarray  # the model on the grid, extra dimensions 0
    test_mse: float  # curve against the true function over the grid
    points: tuple[np.ndarray, np.ndarray]  # training x and targets


def fit_regression(sigma: float, steps: int = 3000, lr: float = 1e-3, tol: float = 1e-5, seed: int = 0,
                   extra: int = 30) -> RegressionFit:
    """Fit the MLP by full-batch Adam until the training MSE is below `tol` (or `steps` steps)."""
    inputs, targets = make_points(extra=extra, sigma=sigma, seed=seed)
    x, t = torch.as_tensor(inputs), torch.as_tensor(targets).view(-1, 1)
    model = mlp(x.shape[1], seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    step = 0
    for step in range(1, steps + 1):
        loss = nn.functional.mse_loss(model(x), t)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < tol:
            break
    grid = np.linspace(-3.5, 3.5, 281, dtype=np.float32)
    with torch.no_grad():
        train_mse = float(nn.functional.mse_loss(model(x), t))
        test_in = torch.zeros(len(grid), x.shape[1])
        test_in[:, 0] = torch.as_tensor(grid)
        curve = model(test_in).squeeze(1).numpy()
    test_mse = float(np.mean((curve - true_function(grid)) ** 2))
    return RegressionFit(sigma, train_mse, step, grid, curve, test_mse, (inputs[:, 0], targets))
