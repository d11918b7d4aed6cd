"""``python -m engines.cli.select [--device cpu|cuda[:N]] [--precision fp32|fp16|bf16]``: print what
``--engine auto`` would choose here and why not each faster back end (exit 1: none can run)."""
from __future__ import annotations

import argparse
from typing import get_args

from ..base import BackendUnavailableError, Precision
from ..config import EngineConfig
from ..select import select_backend

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engines.cli.select", description=__doc__.split("\n")[0])
    p.add_argument("--device", default=EngineConfig().device)
    p.add_argument("--precision", default=EngineConfig().precision, choices=get_args(Precision))
    args = p.parse_args(argv)
    try:
        print(select_backend(args.device, args.precision).message())
    except BackendUnavailableError as e:
        print(f"engine auto: {e}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
