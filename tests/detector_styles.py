"""Frames of six detector styles made from one simulated clean lattice (issue 12, item 6).

The same Poisson counts, written the way six kinds of detector or acquisition program deliver
them: counts from 0, an offset of 15,000, a 3e6 scale in uint32, float in 0..1, int16 with a
negative offset, uint8. ``noise2atom.stem_sim`` gives the clean truth.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from noise2atom.stem_sim import StemSimulator

#: Counts at a full atom's peak: inside the bundled model's training doses (0.4-2).
PEAK_COUNTS = 2.0


def clean_series(n: int = 3, shape: tuple[int, int] = (128, 128), seed: int = 3) -> np.ndarray:
    """(n, H, W) float32 clean lattice frames in [0, 1] (a slowly drifting crystal)."""
    sim = StemSimulator(shape=shape, scene="crystal", seed=seed)
    return np.stack([sim.frame(t).clean for t in range(n)])


def detector_styles(clean: np.ndarray, *, peak: float = PEAK_COUNTS, seed: int = 1) -> dict[str, np.ndarray]:
    """``{style: (n, H, W) frames}``: the same Poisson counts in six detector encodings."""
    counts = np.random.default_rng(seed).poisson(clean * peak + 0.05)
    return {
        "uint16_counts": counts.astype(np.uint16),
        "uint16_offset15000": (15_000 + 8 * counts).astype(np.uint16),
        "uint32_3e6": (3_000_000 + 100_000 * counts).astype(np.uint32),
        "float32_unit": (counts / 12.0).astype(np.float32),
        "int16_negative_offset": (-2_000 + 50 * counts).astype(np.int16),
        "uint8": np.minimum(10 + 30 * counts, 255).astype(np.uint8),
    }


STYLES = tuple(detector_styles(np.zeros((1, 2, 2), np.float32)))


def mean_correlation(frames: np.ndarray, truth: np.ndarray) -> float:
    """Mean over frames of the pixel correlation with the truth (0 for a constant frame)."""
    values = []
    for f, t in zip(frames, truth):
        f = np.asarray(f, np.float64)
        values.append(0.0 if f.std() == 0 else float(np.corrcoef(f.ravel(), t.ravel())[0, 1]))
    return float(np.mean(values))


def shared_data() -> Path:
    """``../shared/data`` beside the repository root (the clone sits beside ``shared/`` in CI);
    ``$N2A_SHARED_DATA`` points elsewhere (a worktree that does not sit beside it)."""
    env = os.environ.get("N2A_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def zero_checkpoint(path: Path) -> Path:
    """A real lite checkpoint whose generator outputs a constant (every weight zero), with the
    bundled model's config (as a plain, non-residual ``lite``: a zeroed residual net is the
    identity): the engine runs it like any model and it blanks every frame."""
    import torch

    from noise2atom.checkpoint import default_model_path, load_checkpoint, save_checkpoint
    from noise2atom.models import build_generator

    config = load_checkpoint(default_model_path()).config.model_copy(update={"size": "lite"})
    state = {k: torch.zeros_like(v) for k, v in build_generator("lite").state_dict().items()}
    return save_checkpoint(path, config, state)


def bundled_model() -> Path:
    """The bundled model's checkpoint; the test is skipped (with the path) when it is missing."""
    import pytest

    from noise2atom.checkpoint import default_model_path

    path = default_model_path()
    if not path.is_file():
        pytest.skip(f"the bundled model is missing (expected {path})")
    return path


def read_tiff_with_meta(path) -> tuple[np.ndarray, dict]:
    """An n2a-denoise output: its frames and the JSON metadata in the first page's description."""
    import json

    import tifffile

    with tifffile.TiffFile(path) as f:
        return f.asarray(), json.loads(f.pages[0].description)


def denoise_file(tmp_path, src, name: str, *extra: str, capsys) -> tuple[np.ndarray, dict, str]:
    """``n2a-denoise SRC --out tmp_path/NAME.tif`` with the bundled model in ONNX Runtime (its own
    entry point, real files); returns the output frames, its ``n2a`` metadata and the summary."""
    from engines.cli.denoise import main

    out = Path(tmp_path) / f"{name}.tif"
    rc = main([str(src), "--model", str(bundled_model()), "--out", str(out), "--engine", "onnxruntime",
               "--quiet", *extra])
    report = capsys.readouterr().out
    assert rc == 0, report
    den, meta = read_tiff_with_meta(out)
    return den, meta["n2a"], report


def defect_free_crystal(shape: tuple[int, int], n: int, pitch_px: float = 9.0) -> tuple[np.ndarray, np.ndarray]:
    """(truth, uint16 counts): a drifting film of columns with no vacancies or surface changes, ~2
    counts a column: what ``--lattice-average`` is for."""
    sim = StemSimulator(shape=shape, scene="film", pitch_px=pitch_px, sigma_px=1.2, rotation_deg=11,
                        surface_dynamics=False, seed=5)
    clean = np.stack([sim.frame(t).clean for t in range(n)])
    return clean, np.random.default_rng(3).poisson(clean * 2.0 + 0.05).astype(np.uint16)
