"""Learning while streaming: SSIM to truth of the published frames against time, with and without
``n2a-stream --learn``, next to the best classical filter.

A series the bundled model was not trained for — simulated with another detector scale (gain 3.7,
offset 2,000), another atom pitch and a low dose — is replayed at 5 fps (256², in process:
``n2a-replay`` XPUB -> ``Stream`` -> a SUB client) for ``--seconds``. Every published frame is
scored against its truth (SSIM after the least-squares affine fit, as in the quality benchmark).
Runs: the bundled model unadapted, and the same with ``--learn``. Reference: the best Gaussian
filter (sigma chosen against the truth on the first frames, i.e. an oracle). Also: frames per
second with and without learning, latency p50/p99 overall and around swaps (frames published within
1 s after a swap), frames dropped.

Writes ``bench/results/learn-cpu.md`` and ``learn-cpu.png``. Usage:
``make bench-learn`` or ``python -m bench.learn [--seconds 60] [--fps 5] [--size 256]``.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from bench.harness import RESULTS, OutputClient  # noqa: E402

SCENE = dict(scene="crystal", peak_counts=0.6, pitch_px=11.0, sigma_px=2.2, gain=3.7,
             offset_adu=2000.0, read_noise=0.5, drift_px_per_frame=0.15, seed=11)


def run(frames: np.ndarray, *, fps: float, learn: bool, model: Path | None) -> dict:
    from streamer.learner import LearnConfig
    from streamer.pipeline import Stream
    from streamer.replay import Replay

    ctx = zmq.Context()
    replay = Replay(frames=list(frames), fps=fps, count=len(frames), pattern="pub",
                    wait_subscribers=1, meta={"detector": "HAADF", "pixel_size_nm": 0.021})
    options = dict(source=replay.bind(), engine="onnxruntime", max_queue=4, with_raw=False)
    if model is not None:
        options["model"] = model
    if learn:
        options["learn"] = LearnConfig()
    stream = Stream(**options).start()
    client = OutputClient(ctx, stream.out_endpoint, keep_denoised=True)
    client.start()
    deadline = time.monotonic() + 20
    while stream.subscriptions < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.time()
    replay.start()
    deadline = time.monotonic() + len(frames) / fps + 60
    while not stream.ended and time.monotonic() < deadline:
        stream.maybe_raise()
        time.sleep(0.02)
    summary = stream.stop()
    client.close()
    replay.close()
    ctx.term()
    return {"rows": client.rows, "t0": t0, "summary": summary}


def best_gaussian(noisy: np.ndarray, clean: np.ndarray) -> tuple[float, list[float]]:
    from scipy.ndimage import gaussian_filter

    from bench.quality.scoring import ssim_to_truth

    sigmas = [0.5, 0.8, 1.0, 1.3, 1.6, 2.0, 2.5, 3.0]
    probe = range(min(5, len(noisy)))
    score = {s: np.mean([ssim_to_truth(gaussian_filter(noisy[i].astype(float), s), clean[i])
                         for i in probe]) for s in sigmas}
    sigma = max(score, key=score.get)
    return sigma, [ssim_to_truth(gaussian_filter(f.astype(float), sigma), c)
                   for f, c in zip(noisy, clean)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.learn", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--model", type=Path, default=None, help="starting model (default: bundled)")
    p.add_argument("--out", type=Path, default=RESULTS / "learn-cpu.md")
    args = p.parse_args(argv)
    from bench.quality.scoring import ssim_to_truth
    from noise2atom.stem_sim import simulate_series

    n = int(args.seconds * args.fps)
    series = simulate_series(n, shape=(args.size, args.size), **SCENE)
    noisy, clean = series.noisy, series.clean
    sigma, gauss = best_gaussian(noisy, clean)
    results = {}
    for name, learn in (("bundled, no learning", False), ("bundled + --learn", True)):
        r = run(noisy, fps=args.fps, learn=learn, model=args.model)
        rows = r["rows"]
        for row in rows:
            row["ssim"] = ssim_to_truth(row.pop("denoised"), clean[row["seq"]])
            row["since"] = row["t"] - r["t0"]
        results[name] = r
        s = r["summary"]
        print(f"{name}: {len(rows)}/{n} published, dropped {s['dropped']}, "
              f"SSIM first 10 {np.mean([x['ssim'] for x in rows[:10]]):.3f}, "
              f"last 10 {np.mean([x['ssim'] for x in rows[-10:]]):.3f}", flush=True)
    write(args, n, sigma, gauss, results)
    return 0


def _swap_times(rows: list[dict]) -> list[float]:
    return [b["since"] for a, b in zip(rows, rows[1:]) if a["model"] != b["model"]]


def write(args, n: int, sigma: float, gauss: list[float], results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in results.items():
        rows = r["rows"]
        ax.plot([x["since"] for x in rows], [x["ssim"] for x in rows], label=name)
    ax.axhline(float(np.mean(gauss)), color="k", ls="--", label=f"best Gaussian (σ={sigma}, oracle)")
    for t in _swap_times(results["bundled + --learn"]["rows"]):
        ax.axvline(t, color="g", alpha=0.2)
    ax.set_xlabel("seconds since the first frame")
    ax.set_ylabel("SSIM to truth")
    ax.legend()
    ax.set_title(f"n2a-stream --learn, {args.size}² at {args.fps:g} fps (CPU)")
    png = args.out.with_suffix(".png")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    lines = [
        "# Learning while streaming (CPU)", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} logical CPUs (shared), Python "
        f"{platform.python_version()}. Made by `python -m bench.learn --seconds {args.seconds:g} "
        f"--fps {args.fps:g} --size {args.size}`, {time.strftime('%Y-%m-%d %H:%M')}.", "",
        f"Series: {n} frames of `simulate_series(**{SCENE})` — another gain, offset, pitch and a "
        "low dose than the bundled model saw. SSIM to truth after the affine fit. Green lines in "
        f"the plot: swaps. ![curve]({png.name})", "",
        "| run | published/sent | dropped | fps out | SSIM 0–10 s | SSIM 10–30 s | SSIM 30–60 s "
        "| SSIM last 10 frames | latency p50 / p99 ms | p99 within 1 s after a swap | swaps |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        rows, s = r["rows"], r["summary"]

        def window(a, b):
            v = [x["ssim"] for x in rows if a <= x["since"] < b]
            return f"{np.mean(v):.3f}" if v else "-"

        lat = np.array([x["latency_ms"] for x in rows]) if rows else np.array([np.nan])
        swaps = _swap_times(rows)
        near = [x["latency_ms"] for x in rows if any(0 <= x["since"] - t < 1 for t in swaps)]
        lines.append(
            f"| {name} | {len(rows)}/{n} | {s['dropped']} | {s['fps_out']:.2f} | {window(0, 10)} "
            f"| {window(10, 30)} | {window(30, 1e9)} "
            f"| {np.mean([x['ssim'] for x in rows[-10:]]):.3f} "
            f"| {np.percentile(lat, 50):.0f} / {np.percentile(lat, 99):.0f} "
            f"| {np.percentile(near, 99):.0f} | {len(swaps)} |" if near else
            f"| {name} | {len(rows)}/{n} | {s['dropped']} | {s['fps_out']:.2f} | {window(0, 10)} "
            f"| {window(10, 30)} | {window(30, 1e9)} "
            f"| {np.mean([x['ssim'] for x in rows[-10:]]):.3f} "
            f"| {np.percentile(lat, 50):.0f} / {np.percentile(lat, 99):.0f} | - | {len(swaps)} |")
    lines.append(f"| best Gaussian σ={sigma} (oracle, per frame) | - | - | - | - | - | - "
                 f"| {np.mean(gauss[-10:]):.3f} | - | - | - |")
    learn = results["bundled + --learn"]["summary"].get("learn") or {}
    lines += ["", f"Learner at the end: {learn}", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    raise SystemExit(main())
