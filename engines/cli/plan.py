"""``python -m engines.cli.plan CHECKPOINT``: build and cache a TensorRT plan ahead of time.

::

    python -m engines.cli.plan model.safetensors [--precision fp32|fp16|bf16] [--opt 1024x1024]
                               [--min HxW] [--max HxW] [--streams K] [--device N] [--rebuild]

Every default is `engines.EngineConfig`'s, so the plan built here is the one
``n2a-stream --engine tensorrt`` and ``open_engine(path, "tensorrt")`` load when given the same
settings. Prints the plan's path; a one-line error and exit status 2 on failure.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import get_args

from ..base import Precision
from ..config import EngineConfig
from ..tensorrt_build import ensure_plan

__all__ = ["main"]


def _hw(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    try:
        return int(h), int(w or h)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected HxW like 1024x1024 (got {text!r})") from e


def _parser() -> argparse.ArgumentParser:
    defaults = EngineConfig()
    hw = lambda t: f"{t[0]}x{t[1]}"  # noqa: E731
    p = argparse.ArgumentParser(prog="python -m engines.cli.plan", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--precision", choices=get_args(Precision), default=defaults.precision,
                   help=f"default {defaults.precision}, as the runtime's")
    for name in ("min", "opt", "max"):
        value = getattr(defaults.profile, name)
        p.add_argument(f"--{name}", type=_hw, default=value, metavar="HxW", help=f"default {hw(value)}")
    p.add_argument("--streams", type=int, default=defaults.streams,
                   help=f"K frames in flight, one profile each (default {defaults.streams})")
    p.add_argument("--device", type=int, default=0, help="CUDA device number (default 0)")
    p.add_argument("--rebuild", action="store_true", help="build again even if a good plan is cached")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = EngineConfig.of(None, backend="tensorrt", device=f"cuda:{args.device}",
                                 precision=args.precision, streams=args.streams,
                                 profile=dict(min=args.min, opt=args.opt, max=args.max))
        path = ensure_plan(args.checkpoint, precision=config.precision, profile=config.profile,
                           streams=config.streams, device_id=args.device, rebuild=args.rebuild)
    except Exception as e:  # one line for the console; the traceback is for bugs
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
