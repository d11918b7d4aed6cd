"""``make demo``: simulated microscope -> n2a-stream (bundled model, CPU) -> viewer or a summary.

Starts ``n2a-replay --simulate`` (a drifting nanoparticle on an amorphous support, low dose), then
``n2a-stream`` with the bundled model on the CPU, and, when a display exists (``DISPLAY`` or
``WAYLAND_DISPLAY``) and the viewer is installed, ``n2a-view`` on the stream's output. Without a
display it runs headless: it prints the stream's once-a-second status lines and a final summary
(frames, drops, latency, mean CSS of raw vs denoised frames). It ends by itself after ``--frames``
frames, stops every process it started (also on Ctrl-C) and exits non-zero if anything failed.

Usage::

    python -m streamer.demo --frames 150 [--size 256] [--fps 10] [--headless]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["main"]

SUMMARY_PREFIX = "n2a-stream summary: "


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_pair() -> int:
    """A port P with P+1 also free (n2a-stream's default output port)."""
    for _ in range(50):
        p = _free_port()
        if p >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
        return p
    raise RuntimeError("found no two adjacent free ports on 127.0.0.1 (got 50 tries)")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _viewer_available() -> bool:
    try:
        return importlib.util.find_spec("viewer.app") is not None
    except (ImportError, ValueError):
        return False


def _stop(procs: list[tuple[str, subprocess.Popen]], timeout: float = 10.0) -> None:
    """SIGTERM every child still running, then SIGKILL what is left after ``timeout``."""
    for _, p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for _, p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m streamer.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=150, help="frames to stream (150)")
    p.add_argument("--size", type=int, default=256, help="frame side in pixels (256)")
    p.add_argument("--fps", type=float, default=10.0, help="simulated frame rate (10)")
    p.add_argument("--peak-counts", type=float, default=1.0, help="dose: counts at an atom peak")
    p.add_argument("--drift", type=float, default=0.1, help="drift in px/frame (0.1)")
    p.add_argument("--model", help="checkpoint (default: the bundled model)")
    p.add_argument("--engine", default="onnxruntime", help="engine back end (onnxruntime: CPU)")
    p.add_argument("--headless", action="store_true", help="never start the viewer")
    p.add_argument("--no-resample", dest="resample", action="store_false",
                   help="pass --no-resample to n2a-stream (denoise at the frames' own sampling)")
    p.add_argument("--record", help="also record raw and denoised frames to this directory")
    return p


Procs = list[tuple[str, subprocess.Popen]]


def _start_replay(args: argparse.Namespace, env: dict[str, str], port: int, procs: Procs) -> str:
    """Start the simulated source; return the endpoint it reports."""
    replay = subprocess.Popen(
        [sys.executable, "-m", "streamer.replay_cli", "--simulate", "--size", str(args.size),
         "--scene", "nanoparticle", "--peak-counts", str(args.peak_counts),
         "--drift", str(args.drift), "--fps", str(args.fps), "--count", str(args.frames),
         "--port", str(port), "--wait-subscribers", "1", "--wait-timeout", "120",
         "--series", "demo"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(("n2a-replay", replay))
    first = replay.stdout.readline()
    try:
        return json.loads(first)["endpoint"]
    except (ValueError, KeyError) as e:
        raise RuntimeError(f"n2a-replay did not report its endpoint (got {first!r}; "
                           f"stderr {replay.stderr.read()[-500:]!r})") from e


def _start_stream(args: argparse.Namespace, env: dict[str, str], endpoint: str, out_port: int,
                  procs: Procs) -> subprocess.Popen:
    """Start ``n2a-stream`` on the source, ending when the series ends."""
    cmd = [sys.executable, "-m", "streamer.cli", "--source", endpoint, "--out-port", str(out_port),
           "--engine", args.engine, "--exit-on-end"]
    if args.model:
        cmd += ["--model", args.model]
    if args.record:
        cmd += ["--record", args.record]
    if not args.resample:
        cmd += ["--no-resample"]
    stream = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    procs.append(("n2a-stream", stream))
    return stream


def _start_viewer(args: argparse.Namespace, env: dict[str, str], out_port: int,
                  procs: Procs) -> None:
    """Start the viewer when there is a display and the viewer is installed."""
    if args.headless or not _has_display() or not _viewer_available():
        print("demo: headless (no display or no viewer): status lines follow", flush=True)
        return
    viewer = subprocess.Popen(
        [sys.executable, "-c", "import sys; from viewer.app import main; sys.exit(main(sys.argv[1:]))",
         "--port", str(out_port)], env=env)
    procs.append(("n2a-view", viewer))
    print("demo: viewer started (close it or press Ctrl-C to end early)", flush=True)


def _relay(stream: subprocess.Popen, summary: dict) -> threading.Thread:
    """Print n2a-stream's status lines as they come; keep its summary line in ``summary``."""
    def relay() -> None:
        for line in stream.stderr:
            line = line.rstrip("\n")
            if line.startswith(SUMMARY_PREFIX):
                summary.update(json.loads(line[len(SUMMARY_PREFIX):]))
            else:
                print(line, flush=True)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    return thread


def _wait_for_stream(procs: Procs, deadline: float, interrupted: threading.Event) -> list[str]:
    """Wait until n2a-stream ends; what went wrong meanwhile (interrupt, deadline, source)."""
    (_, replay), (_, stream) = procs[:2]
    while stream.poll() is None:
        if interrupted.is_set():
            return ["interrupted"]
        if time.monotonic() > deadline:
            return ["n2a-stream did not finish in time"]
        if replay.poll() not in (None, 0):
            return [f"n2a-replay exited with {replay.returncode}: {replay.stderr.read()[-500:]}"]
        time.sleep(0.2)
    return []


def _report(summary: dict, frames: int) -> list[str]:
    """Print the demo's one-line summary; what failed."""
    if not summary:
        return ["n2a-stream printed no summary"]

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    print(f"demo summary: {summary['published']} of {frames} frames denoised, "
          f"{summary['dropped']} dropped, {summary['gaps']} lost upstream; latency p50 "
          f"{f(summary['latency_p50_ms'], '.1f')} ms, p99 {f(summary['latency_p99_ms'], '.1f')}"
          f" ms; mean CSS raw {f(summary['css_raw_mean'], '.3f')} -> denoised "
          f"{f(summary['css_mean'], '.3f')}; engine {summary['engine']}", flush=True)
    return ["no frame was denoised"] if summary["published"] == 0 else []


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns 0 when every process ran and ended cleanly."""
    args = _parser().parse_args(argv)
    if args.frames < 1:
        _parser().error(f"--frames must be >= 1 (got {args.frames})")
    if args.fps <= 0:
        _parser().error(f"--fps must be > 0 (got {args.fps})")
    env, port = _env(), _free_pair()
    procs: Procs = []
    summary: dict = {}
    failures: list[str] = []
    interrupted = threading.Event()
    old = {s: signal.signal(s, lambda *_: interrupted.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        endpoint = _start_replay(args, env, port, procs)
        stream = _start_stream(args, env, endpoint, port + 1, procs)
        print(f"demo: n2a-replay {endpoint} ({args.frames} frames of {args.size}² at "
              f"{args.fps:g} fps) -> n2a-stream -> tcp://127.0.0.1:{port + 1}", flush=True)
        _start_viewer(args, env, port + 1, procs)
        relay = _relay(stream, summary)
        failures += _wait_for_stream(procs, time.monotonic() + args.frames / args.fps + 300,
                                     interrupted)
        _stop(procs)
        relay.join(10)
    except (RuntimeError, OSError) as e:
        failures.append(str(e))
    finally:
        _stop(procs)
        for s, h in old.items():
            signal.signal(s, h)
    for name, p in procs:
        if name != "n2a-view" and p.returncode not in (0, None) and not interrupted.is_set():
            failures.append(f"{name} exited with {p.returncode}")
    failures += _report(summary, args.frames)
    if failures:
        print("demo FAILED: " + "; ".join(dict.fromkeys(failures)), file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
