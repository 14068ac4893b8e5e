"""Two measurements behind the batched engine's choices on a GPU (docs/speed.md), each a CUDA graph replayed
many times:

    PYTHONPATH=src python benchmarks/gpu_kernels.py

- graphs: a step of N tiny elementwise kernels, captured one step or many steps a graph. Prints the
  time per step and the host's time to launch: whether a graph's small kernels cost the GPU a fixed
  time each, in which case capturing more steps a graph cannot help.
- products: a step's first-layer product and its gradient for M stacked models of K outputs on B rows
  gathered from 4,795 rows of 2,048 features, in both orders (batch x weights^T, weights x batch^T).
  Prints microseconds per step by batch rows: where cuBLAS picks a slow kernel (NARROW_PRODUCT).
"""
from __future__ import annotations

import time

import torch

REPLAYS = 3000


def replay_time(step, steps_per_graph: int = 1) -> tuple[float, float]:
    """Microseconds per step of `step` captured steps_per_graph times a graph: in all, and the host's launches."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(steps_per_graph):
            step()
    replays = REPLAYS // steps_per_graph
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(replays):
        graph.replay()
    launched = time.perf_counter() - start
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    return total / (replays * steps_per_graph) * 1e6, launched / (replays * steps_per_graph) * 1e6


def graphs() -> None:
    state = torch.randn(10, 128, device="cuda")
    for n in (1, 10, 40, 80):
        def step(n=n):
            x = state
            for _ in range(n):
                x = x * 1.0001 + 0.0001  # two kernels
            state.copy_(x)

        for per_graph in (1, 10, 50):
            total, host = replay_time(step, per_graph)
            print(f"graphs: {2 * n + 1:3d} kernels a step, {per_graph:2d} steps a graph: {total:6.1f} us a step "
                  f"(host launches {host:5.1f} us a step)", flush=True)


def products() -> None:
    x = torch.randn(4795, 2048, device="cuda")
    for m, k in [(10, 2), (10, 4), (20, 4), (100, 2)]:
        row = []
        for b in (16, 32, 48, 56, 64, 96, 128, 256):
            idx = torch.randint(0, len(x), (m, b), device="cuda")
            w = torch.randn(m, k, x.shape[1], device="cuda", requires_grad=True)
            grad = torch.randn(m, b, k, device="cuda")

            def batch_first():
                rows = x.index_select(0, idx.reshape(-1)).view(m, b, -1)
                return torch.autograd.grad(torch.bmm(rows, w.transpose(1, 2)), w, grad)

            def weights_first():
                rows = x.index_select(0, idx.reshape(-1)).view(m, b, -1)
                return torch.autograd.grad(torch.bmm(w, rows.transpose(1, 2)).transpose(1, 2), w, grad)

            row.append(f"{b}: {replay_time(batch_first)[0]:.0f}/{replay_time(weights_first)[0]:.0f}")
        print(f"products, {m} models x {k} outputs, rows: us batch-first/weights-first  " + "  ".join(row),
              flush=True)


if __name__ == "__main__":
    if not torch.cuda.is_available():
        raise SystemExit("gpu_kernels.py measures CUDA graphs: run it on a machine with a GPU")
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    graphs()
    products()
