"""`make bench-quality`: the quality benchmark on n2a's simulator, then on material n2a did not make.

    python -m bench.quality [--quick]

Writes ``bench/results/quality.md`` (+ ``quality.json`` and figures) and
``bench/results/quality-external.md`` (+ ``.json`` and ``docs/quality-grid-real.png``). Each part
runs alone with all its options: ``python -m bench.quality.simulated --help``,
``python -m bench.quality.external --help``.
"""
from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0],
                                epilog="Each part alone: python -m bench.quality.simulated --help; "
                                       "python -m bench.quality.external --help.")
    p.add_argument("--quick", action="store_true", help="both parts' smoke runs (minutes, not hours)")
    args = p.parse_args(argv)
    from bench.quality import external, simulated

    part_argv = ["--quick"] if args.quick else []
    rc = simulated.main(part_argv)
    return rc or external.main(part_argv)


if __name__ == "__main__":
    raise SystemExit(main())
