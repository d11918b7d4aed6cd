"""Training speed of n2a-train's methods and generator sizes (iterations per second).

Times ``Trainer.step`` after one warm-up step on simulated frames, for each method and size,
and writes a markdown table to ``bench/results/train-speed-<device>.md``::

    make bench-train-speed                             # = python -m bench.train_speed (CPU, 1 thread)
    python -m bench.train_speed --device cuda          # GPU, when there is one
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from bench.harness import RESULTS
from noise2atom.target_sim import TargetPrior
from noise2atom.train import TrainOptions, Trainer
from noise2atom.train_data import simulated_training_data

# (method, size, patch, batch): the CLI defaults, plus the GAN at 64² (the CPU-friendly patch).
CASES = [
    ("blindspot", "lite", 64, 16),
    ("noise2atom", "lite", 64, 3),
    ("noise2atom", "lite", 128, 3),
    ("hybrid", "lite", 64, 3),
    ("blindspot", "paper", 64, 16),
    ("noise2atom", "paper", 128, 3),
]


def measure(method: str, size: str, patch: int, batch: int, *, device: str, seconds: float) -> tuple[float, int]:
    data = simulated_training_data(n_frames=4, size=max(patch, 128), scene="mixed", peak_counts=1.0,
                                   seed=0, patch=patch)
    opts = TrainOptions(method=method, size=size, iterations=10**9, patch=patch, batch=batch, device=device)
    t = Trainer(options=opts, data=data, prior=TargetPrior() if method != "blindspot" else None)
    t.step()  # warm-up
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        t.step()
        n += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return n / (time.perf_counter() - t0), n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0, help="timing budget per case (at least 2 steps)")
    p.add_argument("--sizes", nargs="+", default=["lite", "paper"])
    p.add_argument("--out", type=Path, default=None,
                   help="markdown table (default bench/results/train-speed-<cpu|gpu>.md)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = ["| method | size | patch | batch | it/s | steps timed |", "|---|---|---|---|---|---|"]
    for method, size, patch, batch in CASES:
        if size not in args.sizes:
            continue
        its, n = measure(method, size, patch, batch, device=args.device, seconds=args.seconds)
        rows.append(f"| {method} | {size} | {patch} | {batch} | {its:.3g} | {n} |")
        print(rows[-1], flush=True)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.processor() or 'CPU'}"
    text = (f"# n2a-train speed ({args.device})\n\nDevice: {dev}; torch {torch.__version__}, "
            f"{args.threads} thread(s). The shared 2-core machine had other jobs running, so treat "
            "CPU numbers as lower bounds.\n\n" + "\n".join(rows) + "\n")
    out = args.out or RESULTS / f"train-speed-{'gpu' if args.device.startswith('cuda') else 'cpu'}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
