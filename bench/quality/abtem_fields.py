"""Simulate clean HAADF-STEM fields with abTEM (first-principles multislice, PRISM), once.

The fields are material n2a did not make: `bench.quality.external` shifts them by sub-pixel
drift, crops them and draws Poisson noise per frame. Each field is saved float32 with the
simulation parameters and the projected atom-column positions (pixels, row/col) beside it, in
``bench/data/abtem_<name>.npz``:

    nice -n 10 python -m bench.quality.abtem_fields srtio3     # ~18 min on one shared core
    nice -n 10 python -m bench.quality.abtem_fields au_on_c    # ~5 min on one shared core
    nice -n 10 python -m bench.quality.abtem_fields ceo2 gan   # ~35 min; held out: used to choose the model

Each field is the mean of ``--configs`` frozen-phonon configurations (8; the fields before
2026-12-02 were single snapshots, ``--configs 1``).

The cell is periodic (a whole number of unit cells for the crystal; a periodic box of amorphous
carbon for the particle), so the drift shift can wrap the field exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "data"  # bench/data/, beside the results

ENERGY_EV = 200e3
SEMIANGLE_MRAD = 25.0
# A 0.08 A potential grid antialiases at ~104 mrad at 200 kV, so the HAADF detector stops below it
# (0.07 A and a 47 A cell would have taken ~1 h per field on our shared 2-core machine).
POTENTIAL_SAMPLING_A = 0.08
DETECTOR_MRAD = (60.0, 100.0)
SCAN_SAMPLING_A = 0.3
PRISM_INTERPOLATION = 2
# A microscope records the thermal average (atoms vibrate far faster than a pixel's dwell), so the
# clean field is the mean over frozen-phonon snapshots. One snapshot leaves each unit cell 4 % of the
# range unlike the next, a "truth" no microscope records and no denoiser can recover from noise.
FROZEN_PHONON_CONFIGS = 8


def srtio3_slab():
    """SrTiO3 along [001], 8 x 8 cells (31.2 A square), 5 cells (2 nm) thick."""
    from ase.spacegroup import crystal

    cell = crystal(["Sr", "Ti", "O"], basis=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)],
                   spacegroup=221, cellpar=[3.905, 3.905, 3.905, 90, 90, 90])
    atoms = cell * (8, 8, 5)
    # Columns to score: the cation columns (Sr, Ti); pure-O columns are too faint in HAADF.
    return atoms, ("Sr", "Ti"), "SrTiO3 [001] slab, 8x8x5 cells (31.2 A square, 2.0 nm thick)"


def au_on_carbon(seed: int = 0):
    """A ~1.2 nm Au fcc particle along [001] on 1 nm of amorphous carbon, in a 28 A periodic box."""
    from ase import Atoms
    from ase.cluster import FaceCenteredCubic

    rng = np.random.default_rng(seed)
    side, c_thick = 28.0, 10.0
    # Amorphous carbon: a jittered cubic lattice at ~2 g/cm^3 (0.1 atoms/A^3), random per site.
    step = 2.15
    n = int(round(side / step))
    step = side / n
    nz = int(round(c_thick / step))
    g = np.stack(np.meshgrid(np.arange(n), np.arange(n), np.arange(nz), indexing="ij"), -1)
    pos = (g.reshape(-1, 3) + 0.5) * step + rng.normal(0.0, 0.45, (g.size // 3, 3))
    pos[:, :2] %= side
    carbon = Atoms("C" * len(pos), positions=pos)
    au = FaceCenteredCubic("Au", [(1, 0, 0), (1, 1, 0), (1, 1, 1)], [3, 4, 3], latticeconstant=4.078)
    au.positions -= au.positions.mean(axis=0)
    au.positions[:, 2] -= au.positions[:, 2].min()
    au.positions += (side / 2, side / 2, c_thick + 2.0)
    atoms = carbon + au
    atoms.cell = (side, side, c_thick + 2.0 + np.ptp(au.positions[:, 2]) + 2.0)
    atoms.pbc = True
    return atoms, ("Au",), (f"Au fcc particle ({len(au)} atoms, [001]) on {c_thick / 10:.1f} nm "
                            f"amorphous C ({len(carbon)} atoms), 28 A periodic box")


def ceo2_slab():
    """CeO2 (fluorite) along [001], 6 x 6 cells (32.5 A square), 4 cells (2.2 nm) thick.

    Held out: chosen to pick checkpoints of the bundled model, so that neither scored specimen does.
    Bright Ce columns on a square of a/sqrt(2), faint O columns between them."""
    from ase.spacegroup import crystal

    cell = crystal(["Ce", "O"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                   cellpar=[5.411, 5.411, 5.411, 90, 90, 90])
    atoms = cell * (6, 6, 4)
    return atoms, ("Ce",), "CeO2 [001] slab, 6x6x4 cells (32.5 A square, 2.2 nm thick)"


def gan_slab():
    """GaN (wurtzite) along [0001], 10 x 6 orthogonal cells (31.9 x 33.1 A), 4 cells (2.1 nm) thick.

    Held out with CeO2, to choose the bundled model on a hexagonal crystal too: along [0001] the
    Ga and N atoms share columns that form a honeycomb of equal columns, a / sqrt(3) = 1.84 A apart."""
    from abtem.atoms import orthogonalize_cell
    from ase.build import bulk

    cell = orthogonalize_cell(bulk("GaN", "wurtzite", a=3.189, c=5.185))
    atoms = cell * (10, 6, 4)
    return atoms, ("Ga",), "GaN [0001] slab, 10x6x4 orthogonal cells (31.9 x 33.1 A, 2.1 nm thick)"


SPECIMENS = {"srtio3": srtio3_slab, "au_on_c": au_on_carbon, "ceo2": ceo2_slab, "gan": gan_slab}


def project_columns(atoms, symbols, origin_a: float, sampling_a: float, tol_a: float = 0.3):
    """Unique (row, col) pixel positions of the atom columns of `symbols`, seen along z.

    abTEM's scan array is indexed [x, y]; the saved field keeps that order, so row = x, col = y.
    """
    keep = np.isin(np.array(atoms.get_chemical_symbols()), symbols)
    xy = atoms.positions[keep, :2]
    key = np.round(xy / tol_a).astype(np.int64)
    _, idx = np.unique(key, axis=0, return_index=True)
    cols = xy[np.sort(idx)]
    return ((cols - origin_a) / sampling_a).astype(np.float32)


def simulate(name: str, threads: int = 1, configs: int = FROZEN_PHONON_CONFIGS, out_dir: Path = DATA) -> Path:
    import abtem
    import dask

    dask.config.set(scheduler="threads", num_workers=threads)
    abtem.config.set({"device": "cpu", "fft": "fftw"})
    atoms, symbols, description = SPECIMENS[name]()
    t0 = time.perf_counter()
    phonons = abtem.FrozenPhonons(atoms, num_configs=configs, sigmas=0.08, seed=1)
    potential = abtem.Potential(phonons, sampling=POTENTIAL_SAMPLING_A, slice_thickness=2.0,
                                projection="infinite", parametrization="lobato")
    probe = abtem.SMatrix(semiangle_cutoff=SEMIANGLE_MRAD, energy=ENERGY_EV, potential=potential,
                          interpolation=PRISM_INTERPOLATION)
    extent = atoms.cell.lengths()[:2]
    scan = abtem.GridScan(start=(0.0, 0.0), end=tuple(extent), sampling=SCAN_SAMPLING_A)
    detector = abtem.AnnularDetector(inner=DETECTOR_MRAD[0], outer=DETECTOR_MRAD[1])
    field = probe.scan(scan=scan, detectors=detector).compute()
    image = np.asarray(field.array, dtype=np.float32)
    seconds = time.perf_counter() - t0
    sampling = float(scan.sampling[0])
    columns = project_columns(atoms, symbols, 0.0, sampling)
    params = {
        "specimen": description, "abtem": abtem.__version__, "energy_eV": ENERGY_EV,
        "semiangle_mrad": SEMIANGLE_MRAD, "detector_mrad": list(DETECTOR_MRAD),
        "potential_sampling_A": POTENTIAL_SAMPLING_A, "scan_sampling_A": list(map(float, scan.sampling)),
        "prism_interpolation": PRISM_INTERPOLATION, "frozen_phonon_configs": configs,
        "frozen_phonon_sigma_A": 0.08, "slice_thickness_A": 2.0, "parametrization": "lobato",
        "extent_A": [float(e) for e in extent], "shape": list(image.shape),
        "column_symbols": list(symbols), "array_order": "[x, y] (abTEM scan order): row = x",
        "seconds": round(seconds, 1), "threads": threads,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"abtem_{name}.npz"
    np.savez_compressed(out, field=image, columns=columns, params=json.dumps(params))
    print(f"{name}: {image.shape} in {seconds:.0f} s -> {out} ({out.stat().st_size / 1e3:.0f} kB)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.quality.abtem_fields", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", choices=sorted(SPECIMENS))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--configs", type=int, default=FROZEN_PHONON_CONFIGS,
                    help="frozen-phonon configurations averaged (default %(default)s)")
    ap.add_argument("--out", type=Path, default=DATA, help="folder for abtem_<name>.npz (default bench/data)")
    args = ap.parse_args(argv)
    if args.configs < 1:
        ap.error(f"--configs must be at least 1 (got {args.configs})")
    if args.out.exists() and not args.out.is_dir():
        ap.error(f"--out must be a folder (got the file {args.out})")
    for name in args.names:
        simulate(name, args.threads, args.configs, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
