"""Training throughput of whole networks on one GPU, three ways in one run, on the same model:
- ceiling: synthetic batches already on the GPU, bf16 autocast, channels-last (for the CNN);
- memaware: `memaware.train.fit` on a layout folder of JPEGs (texts.csv for text), inputs streamed by
  example index from the uint8 cache that the first pass fills (its time is printed apart);
- plain: the usual PyTorch loop, a DataLoader that decodes JPEGs (tokenizes texts) with workers, fp32.

Models: ResNet-50 (torchvision, random weights written to a file and read back with --weights) on 224 px
crops, and a BERT-base-shaped encoder (transformers, random weights, a made-up vocabulary) at 128 tokens.
Peak GPU memory is printed beside each figure.

    python benchmarks/finetune_throughput.py                      # needs CUDA, torchvision, transformers
    python benchmarks/finetune_throughput.py --images 1024 --steps 20 --skip-text
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from memaware.data.layouts import read_layout
from memaware.data.stream import CROP_SCALE, stream
from memaware.train import TrainConfig, fit
from memaware.train.backbones import network


def write_jpegs(folder: Path, n: int, workers: int) -> None:
    """n JPEGs of 320 x 240 px (smooth colour fields plus noise) in the generic `images` layout."""
    folder.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        rng = np.random.default_rng(i)
        base = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((320, 240), Image.BILINEAR)
        noisy = np.clip(np.asarray(base, np.int16) + rng.integers(-25, 25, (240, 320, 3)), 0, 255)
        Image.fromarray(noisy.astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(n)))
    split = np.where(np.arange(n) < n - 16, "train", np.where(np.arange(n) % 2, "val", "test"))
    pd.DataFrame({"filename": [f"{i}.jpg" for i in range(n)], "y": np.arange(n) % 2, "split": split}).to_csv(
        folder / "metadata.csv", index=False)


def write_texts(folder: Path, n: int, vocabulary: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(vocabulary, 200)) for _ in range(n)]
    split = np.where(np.arange(n) < n - 16, "train", np.where(np.arange(n) % 2, "val", "test"))
    pd.DataFrame({"text": texts, "y": np.arange(n) % 2, "split": split}).to_csv(folder / "texts.csv", index=False)


def bert_base_folder(folder: Path) -> list[str]:
    """A BERT-base-shaped model (random weights) and a WordPiece tokenizer of made-up words, saved in `folder`."""
    import transformers

    words = [f"w{i}" for i in range(30000)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    transformers.BertTokenizerFast(str(folder / "vocab.txt")).save_pretrained(str(folder))
    transformers.BertModel(transformers.BertConfig()).save_pretrained(str(folder))
    return words


def timed(step_fn, warmup: int, steps: int, examples: int) -> tuple[float, float]:
    """(examples a second over `steps` steps after `warmup`, peak GPU memory in GiB)."""
    for _ in range(warmup):
        step_fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step_fn()
    torch.cuda.synchronize()
    return steps * examples / (time.perf_counter() - start), torch.cuda.max_memory_allocated() / 2**30


def memaware_rate(data, config: TrainConfig, warmup: int, steps: int) -> tuple[float, float]:
    """Examples a second of memaware's loop (ERM, no evaluation) between step `warmup` and the last step."""
    marks = {}

    def callback(step, record):
        if step in (warmup - 1, warmup + steps - 1):
            torch.cuda.synchronize()
            marks[step] = time.perf_counter()
            if step == warmup - 1:
                torch.cuda.reset_peak_memory_stats()

    fit(data, "erm", config.model_copy(update={"steps": warmup + steps}), callback=callback, evaluate_splits=False)
    seconds = marks[warmup + steps - 1] - marks[warmup - 1]
    return steps * config.batch_size / seconds, torch.cuda.max_memory_allocated() / 2**30


def ceiling_step(model, optimizer, x, y):
    def step():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


class JpegFolder(torch.utils.data.Dataset):
    """The usual kind: decode and augment each JPEG in a loader worker."""

    def __init__(self, folder: Path):
        import torchvision.transforms as T

        self.frame = pd.read_csv(folder / "metadata.csv")
        self.folder = folder
        self.transform = T.Compose([T.RandomResizedCrop(224, scale=CROP_SCALE), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    def __len__(self):
        return len(self.frame)

    def __getitem__(self, i):
        with Image.open(self.folder / self.frame.filename[i]) as im:
            return self.transform(im.convert("RGB")), int(self.frame.y[i])


def loader_step(model, optimizer, loader, forward):
    """A step of the plain loop: the next batch from `loader` (a new pass when one ends), fp32."""
    batches = iter(())

    def step():
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        loss = F.cross_entropy(forward(model, x), y.cuda(non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def images(args, tmp: Path) -> None:
    import torchvision

    folder, weights = tmp / "jpegs", tmp / "resnet50.pt"
    start = time.perf_counter()
    write_jpegs(folder, args.images, args.workers)
    torch.save(torchvision.models.resnet50().state_dict(), weights)
    print(f"wrote {args.images} JPEGs (320 x 240) in {time.perf_counter() - start:.1f} s")
    net = network("torchvision:resnet50", weights, 224)
    start = time.perf_counter()
    data = stream(read_layout("images", folder), net, workers=args.workers, cache_dir=tmp / "cache")
    print(f"first pass (decode {args.images} JPEGs into the uint8 cache, {args.workers} workers): "
          f"{args.images / (time.perf_counter() - start):.0f} img/s; the cache "
          f"({data.store.nbytes / 2**30:.2f} GiB) lies on {data.store_for('cuda').device} in training")
    for batch in args.batches:
        config = TrainConfig(batch_size=batch, lr=0.01, device="cuda", checkpoint_freq=0)
        model = net.classifier(2, config, torch.Generator().manual_seed(0)).cuda()
        x = torch.rand(batch, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 2, (batch,), device="cuda")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        ceiling = timed(ceiling_step(model, optimizer, x, y), args.warmup, args.steps, batch)
        del model, optimizer, x
        ours = memaware_rate(data, config, args.warmup, args.steps)
        plain_model = torchvision.models.resnet50(num_classes=2).cuda()
        loader = torch.utils.data.DataLoader(JpegFolder(folder), batch_size=batch, shuffle=True, drop_last=True,
                                             num_workers=args.workers, pin_memory=True, persistent_workers=True)
        plain_opt = torch.optim.SGD(plain_model.parameters(), lr=0.01, momentum=0.9)
        plain = timed(loader_step(plain_model, plain_opt, loader, lambda m, x: m(x.cuda(non_blocking=True))),
                      args.warmup, args.steps, batch)
        del plain_model, plain_opt, loader
        report(f"ResNet-50 224 px, batch {batch}", "img/s", ceiling, ours, plain)
        if args.profile:
            profile_loop(data, config, args.warmup)


def profile_loop(data, config: TrainConfig, warmup: int, steps: int = 10) -> None:
    """torch.profiler over `steps` of memaware's loop after `warmup`: the operations by GPU time and by host
    time, and the GPU's busy time against the wall time (what the GPU waits for)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    state = {}

    def callback(step, record):
        if step == warmup - 1:
            torch.cuda.synchronize()
            state["prof"] = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]).__enter__()
            state["start"] = time.perf_counter()
        if step == warmup + steps - 1:
            torch.cuda.synchronize()
            state["wall"] = time.perf_counter() - state["start"]
            state["prof"].__exit__(None, None, None)

    fit(data, "erm", config.model_copy(update={"steps": warmup + steps}), callback=callback, evaluate_splits=False)
    events = state["prof"].key_averages()
    busy = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) / 1e6
    print(f"profile, batch {config.batch_size}: {steps} steps in {state['wall']:.3f} s wall, GPU busy {busy:.3f} s")
    print(events.table(sort_by="self_device_time_total", row_limit=20, max_name_column_width=70))
    print(events.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=70))


def texts(args, tmp: Path) -> None:
    folder, model_dir = tmp / "texts", tmp / "bert-base"
    words = bert_base_folder(model_dir)
    write_texts(folder, args.texts, words)
    net = network(f"hf:{model_dir}", max_length=128)
    data = stream(read_layout("texts", folder), net)
    for batch in args.text_batches:
        config = TrainConfig(batch_size=batch, lr=1e-5, optimizer="adamw", lr_schedule="linear", device="cuda",
                             checkpoint_freq=0)
        model = net.classifier(2, config, torch.Generator().manual_seed(0)).cuda()
        x = data.get("train").x[torch.arange(batch)].cuda()
        y = torch.randint(0, 2, (batch,), device="cuda")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        ceiling = timed(ceiling_step(model, optimizer, x, y), args.warmup, args.steps, batch)
        del model, optimizer
        ours = memaware_rate(data, config, args.warmup, args.steps)
        plain_model = net.classifier(2, config, torch.Generator().manual_seed(0)).cuda()
        frame = pd.read_csv(folder / "texts.csv")
        pairs = list(zip(frame.text, frame.y))

        def collate(items, tokenizer=net.tokenizer):
            enc = tokenizer([t for t, _ in items], max_length=128, truncation=True, padding=True,
                            return_tensors="pt")
            return torch.stack([enc["input_ids"], enc["attention_mask"]], 1), torch.tensor([y for _, y in items])

        loader = torch.utils.data.DataLoader(pairs, batch_size=batch, shuffle=True, drop_last=True, collate_fn=collate,
                                             num_workers=args.workers, persistent_workers=True)
        plain_opt = torch.optim.AdamW(plain_model.parameters(), lr=1e-5)
        plain = timed(loader_step(plain_model, plain_opt, loader, fp32_text), args.warmup, args.steps, batch)
        del plain_model, plain_opt, loader
        report(f"BERT-base shape, 128 tokens, batch {batch}", "seq/s", ceiling, ours, plain)


def fp32_text(model, x):
    """The text classifier without its bf16 autocast: the body and head in fp32."""
    x = x.cuda(non_blocking=True)
    encoder, head = model[0], model[1]
    hidden = encoder.body(input_ids=x[:, 0], attention_mask=x[:, 1]).last_hidden_state
    mask = x[:, 1].unsqueeze(2).float()
    return head((hidden * mask).sum(1) / mask.sum(1))


def report(label: str, unit: str, ceiling, ours, plain) -> None:
    print(f"{label}: ceiling {ceiling[0]:,.0f} {unit} ({ceiling[1]:.1f} GiB) | memaware {ours[0]:,.0f} {unit} "
          f"({ours[1]:.1f} GiB), {ours[0] / ceiling[0]:.0%} of ceiling | plain loop {plain[0]:,.0f} {unit} "
          f"({plain[1]:.1f} GiB), memaware / plain {ours[0] / plain[0]:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--texts", type=int, default=2048)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--text-batches", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--profile", action="store_true", help="also profile memaware's loop at each image batch")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {os.cpu_count()} CPU cores", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        images(args, Path(tmp))
        if not args.skip_text:
            texts(args, Path(tmp))


if __name__ == "__main__":
    main()
