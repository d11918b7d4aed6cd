"""`make bench-quality`: the quality benchmark on n2a's simulator, then on material n2a did not make.

    python -m bench.quality [--quick]

Writes ``bench/results/quality.md`` (+ ``quality.json`` and figures),
``bench/results/quality-external.md`` (+ ``.json`` and ``docs/quality-grid-real.png``) and
``bench/results/lattice-average-cpu.md``. Each part runs alone with all its options:
``python -m bench.quality.simulated --help``, ``python -m bench.quality.external --help``,
``python -m bench.quality.lattice_average --help``.
"""
from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0],
                                epilog="Each part alone: python -m bench.quality.simulated --help; "
                                       "python -m bench.quality.external --help; "
                                       "python -m bench.quality.lattice_average --help.")
    p.add_argument("--quick", action="store_true", help="both parts' smoke runs (minutes, not hours)")
    args = p.parse_args(argv)
    from bench.quality import external, lattice_average, simulated

    part_argv = ["--quick"] if args.quick else []
    rc = simulated.main(part_argv) or external.main(part_argv)
    if not rc:
        lattice_average.main(["--series", "30", "--repeats", "2", "--stream-frames", "5"] if args.quick else [])
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
