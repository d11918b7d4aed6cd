"""Screenshot of the live viewer during real streaming: n2a-replay --simulate -> n2a-stream -> n2a-view.

Writes ``docs/viewer.png`` by default. Runs offscreen (``QT_QPA_PLATFORM=offscreen``), so it needs no
display. Every process it starts is stopped at the end.

Usage::

    python -m bench.viewer_screenshot [--model CKPT] [--size 256] [--fps 10] [--after 60] [--out docs/viewer.png]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from bench.harness import ROOT

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.viewer_screenshot", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="checkpoint for n2a-stream (default: the bundled model)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--after", type=int, default=60, help="displayed frames before the screenshot")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "viewer.png")
    p.add_argument("--window", default="1500x950", help="viewer window size WxH")
    args = p.parse_args(argv)

    py = sys.executable
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs: list[subprocess.Popen] = []
    try:
        replay = subprocess.Popen(
            [py, "-m", "streamer.replay_cli", "--simulate", "--size", str(args.size), "--scene", "nanoparticle",
             "--fps", str(args.fps), "--count", str(args.after * 4), "--port", "0", "--wait-subscribers", "1",
             "--series", "simulated-nanoparticle"],
            env=env, stdout=subprocess.PIPE, text=True)
        procs.append(replay)
        endpoint = json.loads(replay.stdout.readline())["endpoint"]
        stream_cmd = [py, "-m", "streamer.cli", "--source", endpoint, "--out-port", "0", "--engine", "auto"]
        if args.model:
            stream_cmd += ["--model", args.model]
        stream = subprocess.Popen(stream_cmd, env=env, stderr=subprocess.PIPE, text=True)
        procs.append(stream)
        out_endpoint = _stream_endpoint(stream)
        view = subprocess.run(
            [py, "-m", "viewer.app", "--source", out_endpoint, "--size", args.window, "--screenshot", str(args.out),
             "--screenshot-after", str(args.after), "--timeout", str(max(120.0, 4 * args.after / args.fps))],
            env=env, check=False)
        return view.returncode
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _stream_endpoint(stream: subprocess.Popen) -> str:
    """n2a-stream's first stderr line: ``n2a-stream: SOURCE -> OUT_ENDPOINT (engine, ...)``.

    The rest of its stderr (status lines) is relayed by a thread so the pipe never fills.
    """
    line = stream.stderr.readline()
    m = re.search(r"-> (\S+) \(", line)
    if m is None:
        raise RuntimeError(f"n2a-stream did not report its output endpoint (got {line!r})")
    print(line.rstrip(), flush=True)
    threading.Thread(target=lambda: [print(x.rstrip(), flush=True) for x in stream.stderr], daemon=True).start()
    return m.group(1)


if __name__ == "__main__":
    raise SystemExit(main())
