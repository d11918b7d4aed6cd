"""``n2a-replay``: the command line of :class:`streamer.replay.Replay` (a detector stand-in).

Prints one JSON line naming the bound endpoint, sends the series, prints one JSON line with what
was sent. See :mod:`streamer.replay` for the examples.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from .replay import Replay, simulated_source
from .source import add_socket_arguments, bind_and_announce, socket_options


def _parser() -> argparse.ArgumentParser:
    from noise2atom.stem_sim import SCENES  # lazily, as the streamer imports noise2atom everywhere

    p = argparse.ArgumentParser(
        prog="n2a-replay",
        description="Publish STEM frames over n2a's protocol v1 from a file or the simulator.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="frame file (TIFF/DM4/EMD/HDF5/npy), as n2a-train reads")
    src.add_argument("--simulate", action="store_true", help="simulate a STEM series")
    p.add_argument("--dataset", help="dataset inside an HDF5/EMD file")
    p.add_argument("--size", type=int, default=256, help="simulated frame side (default 256)")
    p.add_argument("--shape", type=int, nargs=2, metavar=("H", "W"), help="simulated H W")
    p.add_argument("--scene", choices=SCENES, default="nanoparticle")
    p.add_argument("--peak-counts", "--dose", dest="peak_counts", type=float, default=1.0,
                   help="simulated dose: mean counts at a full atom's peak (default 1.0, low dose)")
    p.add_argument("--drift", type=float, default=0.05, help="simulated drift, px/frame (0.05)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precompute", type=int, default=0,
                   help="simulate this many frames up front and cycle them (benchmarks)")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second, 0 = no pacing")
    p.add_argument("--count", type=int, help="frames to send (default: the file once; "
                                             "simulation: until stopped)")
    p.add_argument("--loop", action="store_true", help="repeat the file")
    p.add_argument("--series", help="series name (default: replay-<time>)")
    add_socket_arguments(p)
    p.add_argument("--wait-subscribers", type=int, default=0,
                   help="PUB: wait for this many subscribers before the first frame")
    p.add_argument("--wait-timeout", type=float, default=30.0)
    p.add_argument("--log-level", default="WARNING")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``n2a-replay``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(name)s: %(message)s")
    sockets = socket_options(args, _parser())
    if args.fps < 0:
        _parser().error(f"--fps must be >= 0 (got {args.fps})")
    if args.count is not None and args.count < 0:
        _parser().error(f"--count must be >= 0 (got {args.count})")
    if args.simulate:
        shape = tuple(args.shape) if args.shape else (args.size, args.size)
        try:
            frames, meta = simulated_source(shape=shape, scene=args.scene,
                                            peak_counts=args.peak_counts,
                                            drift_px_per_frame=args.drift, seed=args.seed,
                                            precompute=args.precompute)
        except ValueError as e:
            _parser().error(str(e))
    else:
        from noise2atom.io import read_frames

        try:
            stack = read_frames(args.file, dataset=args.dataset)
        except Exception as e:
            print(f"n2a-replay: cannot read {args.file}: {e}", file=sys.stderr)
            return 2
        frames, meta = stack.frames, dict(stack.meta)
    replay = Replay(frames=frames, fps=args.fps, count=args.count, loop=args.loop, meta=meta,
                    series=args.series, wait_subscribers=args.wait_subscribers,
                    wait_timeout_s=args.wait_timeout, **sockets)
    if not bind_and_announce(replay, "n2a-replay"):
        return 2
    try:
        sent = replay.run()
    finally:
        replay.close()
    print(json.dumps({"sent": sent, "series": replay.series}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
