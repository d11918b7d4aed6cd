"""End-to-end latency and streamer overhead of n2a-stream on this machine (CPU, lite, ONNX Runtime).

For each frame size (256², 512², 1024²):

1. *bare engine*: ``engine.infer`` on a normalised frame, timed with ``perf_counter_ns`` after a
   warm-up;
2. *paced*: ``n2a-replay`` (in process, XPUB) at 70 % of the engine's own rate -> ``Stream`` (SUB,
   policy latest) -> a SUB client. Latency is acquisition timestamp (``t_acq_ns``) -> output
   received by the client; the per-stage times come from the output headers;
3. *saturated*: the same over PUSH/PULL with ``--policy block`` and the source unpaced: the stream's
   sustained frame rate. Overhead = bare engine time / stream frame time − 1, i.e. what the
   streamer (receive, normalise, CSS of raw and denoised, encode, send) adds to the engine.

Writes ``bench/results/latency-cpu.md``. Usage: ``make bench-latency`` or
``python -m bench.latency [--sizes 256 512 1024]``.
The model is the bundled one when present, else a random-initialised lite generator (the same
compute; weights do not change the timing). On a GPU::

    python -m bench.latency --engine auto --model-size paper --sizes 512 1024 --fps 60 \
        --warmup-frames 10 --out bench/results/latency-gpu.md

``--model-size paper`` uses a random-initialised paper generator; ``--fps`` paces the source at
that rate instead of 70 % of the saturated rate; the first ``--warmup-frames`` outputs of every
run (compilation, graph capture on the first frame of a shape) are left out of the statistics.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from bench.harness import RESULTS, OutputClient, timing_model  # noqa: E402

FRAMES = {256: 40, 512: 24, 1024: 10}


def bare_engine_ms(model: Path, frames: list[np.ndarray], n: int, engine: str = "onnxruntime",
                   device: str | None = None) -> float:
    from engines import open_engine

    with open_engine(model, backend=engine, device=device) as eng:
        norm = eng.config.normalisation
        xs = [norm.to_model(f)[None] for f in frames]
        eng.infer(xs[0])
        eng.infer(xs[1 % len(xs)])
        times = []
        for i in range(n):
            t0 = time.perf_counter_ns()
            eng.infer(xs[i % len(xs)])
            times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e6


def _gpu() -> str:
    import engines

    if not engines.cuda_available():
        return "no GPU"
    import torch

    return torch.cuda.get_device_name(0)


def run_stream(model: Path, frames: list[np.ndarray], *, n: int, fps: float,
               saturated: bool, css: bool = True, engine: str = "onnxruntime", device: str | None = None,
               skip: int = 0, resample: bool = True, lattice_average: bool = False) -> dict:
    from streamer.pipeline import Stream
    from streamer.replay import Replay

    pattern = "push" if saturated else "pub"
    ctx = zmq.Context()
    replay = Replay(frames=frames, fps=0 if saturated else fps, count=n + skip, loop=True,
                    pattern=pattern, wait_subscribers=0 if saturated else 1)
    stream = Stream(source=replay.bind(), model=model, engine=engine, device=device,
                    pattern="pull" if saturated else "sub",
                    policy="block" if saturated else "latest", max_queue=2, css=css,
                    resample=resample, lattice_average=lattice_average).start()
    client = OutputClient(ctx, stream.out_endpoint, skip=skip)
    client.start()
    deadline = time.monotonic() + 10
    while stream.subscriptions < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    replay.start()
    deadline = time.monotonic() + n / max(fps, 0.1) * 3 + 60
    while len(client.rows) < n and time.monotonic() < deadline:
        stream.maybe_raise()
        time.sleep(0.005)
    got = len(client.rows)
    engine_name, selected = stream.engine_name, stream.engine_info.get("selected", "")
    summary = stream.stop()
    client.close()
    replay.close()
    ctx.term()
    stages = {k: float(np.median([r["timing"].get(k) or 0 for r in client.rows])) / 1e6
              for k in ("receive", "queue", "normalise", "resample", "denoise", "lattice", "css",
                        "receive_to_publish")}
    # Throughput from the first to the last output received (the first frame's start-up excluded);
    # the client's receive times, so a run that ends before this loop first looks is still timed.
    rows = client.rows[:got]
    span = rows[-1]["t"] - rows[0]["t"] if got > 1 else 0.0
    fps_out = (got - 1) / span if span > 0 else float("nan")
    lat = np.array(client.latency_ms)
    return {"received": got, "sent": n, "dropped": summary["dropped"],
            "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "stages": stages, "fps_out": fps_out, "engine": engine_name, "selected": selected,
            "zoom": rows[-1].get("resample") if rows else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    p.add_argument("--out", type=Path, default=RESULTS / "latency-cpu.md")
    p.add_argument("--engine", default="onnxruntime", help="engine back end (default onnxruntime; auto on a GPU)")
    p.add_argument("--device", default=None)
    p.add_argument("--model-size", choices=("lite", "paper"), default="lite")
    p.add_argument("--fps", type=float, default=None, help="paced rate (default: 70 %% of the saturated rate)")
    p.add_argument("--frames", type=int, default=None, help="frames per run (default: per size)")
    p.add_argument("--warmup-frames", type=int, default=0, help="outputs left out of every run's statistics")
    args = p.parse_args(argv)
    run = dict(engine=args.engine, device=args.device, skip=args.warmup_frames)
    from streamer.replay import simulated_source

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model, model_note = timing_model(Path(tmp), args.model_size)
        for size in args.sizes:
            n = args.frames or FRAMES.get(size, 20)
            source, _ = simulated_source(shape=(size, size), precompute=4)
            frames = [source(t) for t in range(4)]
            eng_ms = bare_engine_ms(model, frames, n=max(5, n // 2), engine=args.engine, device=args.device)
            sat = run_stream(model, frames, n=n, fps=0, saturated=True, **run)
            nocss = run_stream(model, frames, n=n, fps=0, saturated=True, css=False, **run)
            paced_fps = args.fps or 0.7 * sat["fps_out"]
            paced = run_stream(model, frames, n=n, fps=paced_fps, saturated=False, **run)
            eng_after = bare_engine_ms(model, frames, n=max(5, n // 2), engine=args.engine, device=args.device)
            eng_ms = min(eng_ms, eng_after)  # the machine is shared: take the quieter run
            frame_ms = 1000 / sat["fps_out"]
            nocss_ms = 1000 / nocss["fps_out"]
            rows.append((size, eng_ms, paced_fps, paced, sat, frame_ms, nocss_ms))
            print(f"{size}²: engine {eng_ms:.1f} ms; stream {frame_ms:.1f} ms/frame "
                  f"({(frame_ms / eng_ms - 1) * 100:+.1f} %), without CSS {nocss_ms:.1f} ms "
                  f"({(nocss_ms / eng_ms - 1) * 100:+.1f} %); paced {paced_fps:.2f} fps: p50 "
                  f"{paced['p50']:.1f} ms p99 {paced['p99']:.1f} ms", flush=True)
    engine_label = rows[-1][3]["engine"] if rows else args.engine
    selected = rows[-1][3]["selected"] if rows else ""
    lines = [
        f"# n2a-stream latency ({args.model_size} model, engine {engine_label})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} logical CPUs, {_gpu()} "
        f"(shared with other jobs while measured), {platform.python_version()}; "
        f"model: {model_note}. Made by `{' '.join(['python -m bench.latency', *(argv or sys.argv[1:])])}`, "
        f"{time.strftime('%Y-%m-%d %H:%M')}.",
        *([f"{selected}.", ""] if selected else [""]),
        "Throughput: PUSH/PULL, `--policy block`, source unpaced; ms/frame = 1 / sustained rate. "
        "Overhead = stream ms/frame / bare engine ms − 1 (target ≤ 10 % at 512²), with the "
        "rolling CSS on (default) and off (`--no-css`). Latency = acquisition timestamp "
        "(`t_acq_ns`) to the output received by a SUB client, source paced at "
        + (f"{args.fps:g} fps" if args.fps else "70 % of the stream's sustained rate")
        + " (policy latest); stage times are medians of the output headers' `timing`."
        + (f" The first {args.warmup_frames} outputs of every run are left out." if args.warmup_frames else ""),
        "",
        "| size | bare engine ms | stream ms/frame | overhead | no-CSS ms/frame | overhead no CSS "
        "| paced fps | e2e p50 ms | e2e p99 ms | received/sent | receive ms | queue ms "
        "| normalise ms | denoise ms | CSS ms | receive→publish ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, eng_ms, paced_fps, paced, sat, frame_ms, nocss_ms in rows:
        s = paced["stages"]
        lines.append(
            f"| {size}² | {eng_ms:.1f} | {frame_ms:.1f} | {(frame_ms / eng_ms - 1) * 100:+.1f} % "
            f"| {nocss_ms:.1f} | {(nocss_ms / eng_ms - 1) * 100:+.1f} % | {paced_fps:.2f} "
            f"| {paced['p50']:.1f} | {paced['p99']:.1f} | {paced['received']}/{paced['sent']} "
            f"| {s['receive']:.2f} | {s['queue']:.2f} | {s['normalise']:.2f} | {s['denoise']:.1f} "
            f"| {s['css']:.1f} | {s['receive_to_publish']:.1f} |")
    lines += ["", "CSS is computed for the raw and the denoised frame (two SSIMs in float64, "
              "scipy Gaussian filters) in the publish thread, which runs beside the engine's two "
              "ONNX Runtime threads on the same two cores.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
