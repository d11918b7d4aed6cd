"""Training frames for ``n2a-train``: loading, validation, normalisation and patch sampling."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from noise2atom.checkpoint import DataFingerprint, Normalisation, fingerprint_frames

__all__ = ["TrainingDataError", "TrainingData", "load_training_data", "simulated_training_data",
           "counts_mapping_from_meta"]


class TrainingDataError(ValueError):
    """The training frames cannot be used; the message names the file and the problem."""


def counts_mapping_from_meta(meta: dict[str, Any]) -> tuple[float, float] | None:
    """``(gain, offset)`` (detector units per count, dark offset) from acquisition meta, if given."""
    gain = meta.get("gain_adu_per_count", meta.get("gain"))
    offset = meta.get("offset_adu", meta.get("offset"))
    try:
        if gain is not None and offset is not None and float(gain) > 0:
            return float(gain), float(offset)
    except (TypeError, ValueError):
        pass
    return None


@dataclass
class TrainingData:
    """Normalised training stacks and how they were made.

    ``stacks`` hold ``2 (raw - lo) / (hi - lo) - 1`` as float32, *not* clipped:
    network inputs are clipped to [-1, 1], blind-spot targets are not (so bright
    pixels keep their true value in the loss).
    """

    stacks: list[np.ndarray]
    normalisation: Normalisation
    fingerprint: DataFingerprint
    sources: list[str]
    counts: tuple[float, float] | None = None  # (gain, offset) of the raw units, if known
    frame_shapes: list[tuple[int, int]] = field(default_factory=list)
    #: Rows held back from training at the bottom of every frame (validation stripe), 0 for none.
    val_rows: int = 0

    def hold_back(self, fraction: float, patch: int) -> None:
        """Hold back a stripe of full rows at the bottom of every frame for validation.

        A stripe of rows (not columns), since scan noise is correlated along the rows: a training
        patch never shares a row with a validation patch. The stripe is at least ``patch`` rows,
        and at least ``patch`` rows are left for training.
        """
        if not 0 < fraction < 1:
            raise TrainingDataError(f"the validation fraction must be in (0, 1) (got {fraction})")
        h = min(s.shape[1] for s in self.stacks)
        rows = max(patch, int(round(fraction * h)))
        if h - rows < patch:
            raise TrainingDataError(
                f"frames of {h} rows are too small to hold back a {rows}-row validation stripe and "
                f"still train on {patch}x{patch} patches (got --patch {patch}; use a smaller --patch "
                f"or --val-fraction 0 with at least 2 frames)")
        self.val_rows = rows

    def _row_limit(self, s: np.ndarray) -> int:
        """Rows of ``s`` training patches may use (all but the validation stripe)."""
        return s.shape[1] - self.val_rows

    def validation_patches(self, patch: int, max_patches: int = 64) -> np.ndarray:
        """(N, 1, patch, patch) float32 patches tiling the held-back stripe (none if no stripe)."""
        out = []
        for s in self.stacks:
            r0 = s.shape[1] - self.val_rows
            for t in range(len(s)):
                for r in range(r0, s.shape[1] - patch + 1, patch):
                    for c in range(0, s.shape[2] - patch + 1, patch):
                        out.append(s[t, r:r + patch, c:c + patch])
        if not self.val_rows or not out:
            return np.zeros((0, 1, patch, patch), np.float32)
        idx = np.linspace(0, len(out) - 1, min(len(out), max_patches)).round().astype(int)
        return np.stack([out[i] for i in idx])[:, None].astype(np.float32)

    @property
    def n_frames(self) -> int:
        return sum(len(s) for s in self.stacks)

    def sample(self, batch: int, patch: int, rng: np.random.Generator, *,
               consecutive: bool, flips: bool = False) -> np.ndarray:
        """(batch, 1, patch, patch) float32 patches, unclipped.

        ``consecutive``: as the authors, ``batch`` consecutive frames of one stack
        cropped at one random place (wrapping around short stacks). Otherwise each
        patch comes from a random frame and place. ``flips``: random up-down and
        left-right flips (never transposes: the scan direction must stay along x).
        """
        out = np.empty((batch, 1, patch, patch), np.float32)
        if consecutive:
            s = self.stacks[rng.integers(len(self.stacks))]
            t0 = rng.integers(len(s))
            r, c = rng.integers(self._row_limit(s) - patch + 1), rng.integers(s.shape[2] - patch + 1)
            for i in range(batch):
                out[i, 0] = s[(t0 + i) % len(s), r:r + patch, c:c + patch]
        else:
            for i in range(batch):
                s = self.stacks[rng.integers(len(self.stacks))]
                t = rng.integers(len(s))
                r, c = rng.integers(self._row_limit(s) - patch + 1), rng.integers(s.shape[2] - patch + 1)
                out[i, 0] = s[t, r:r + patch, c:c + patch]
        if flips:
            for i in range(batch):
                if rng.random() < 0.5:
                    out[i] = out[i, :, ::-1, :]
                if rng.random() < 0.5:
                    out[i] = out[i, :, :, ::-1]
        return out

    def preview_frame(self, max_side: int = 256) -> np.ndarray:
        """A central crop of the first frame (unclipped model units) for previews."""
        f = self.stacks[0][0]
        h, w = f.shape
        r, c = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
        return f[r:r + max_side, c:c + max_side]


def _prepare(stacks: list[np.ndarray], sources: list[str], meta: dict[str, Any], *,
             patch: int, percentiles: tuple[float, float],
             counts: tuple[float, float] | None) -> TrainingData:
    """Validate raw stacks, fit the normalisation and build :class:`TrainingData`."""
    for s, src in zip(stacks, sources):
        if s.ndim != 3:
            raise TrainingDataError(f"{src}: expected frames of 2-D images (got an array of shape {s.shape})")
        if s.shape[1] < patch or s.shape[2] < patch:
            raise TrainingDataError(
                f"{src}: frames are {s.shape[1]}x{s.shape[2]}, smaller than the {patch}x{patch} "
                f"training patch (use a smaller --patch; got --patch {patch})")
        if np.issubdtype(s.dtype, np.floating):
            finite = np.isfinite(s).reshape(len(s), -1).any(1)
            if not finite.all():
                bad = np.flatnonzero(~finite)
                raise TrainingDataError(
                    f"{src}: frame {int(bad[0])} has no finite values (got only NaN/inf in "
                    f"{len(bad)} of {len(s)} frames)")
    total = sum(len(s) for s in stacks)
    if total < 1:
        raise TrainingDataError(f"need at least 1 training frame (got none in {', '.join(sources)})")
    try:
        norm = Normalisation.from_frames(stacks, percentiles)
    except ValueError as e:
        raise TrainingDataError(f"{', '.join(sources)}: {e}") from e
    scale = np.float32(2.0 / (norm.hi - norm.lo))
    normed = []
    for s in stacks:
        a = (s.astype(np.float32) - np.float32(norm.lo)) * scale - 1
        np.nan_to_num(a, copy=False, nan=-1.0, posinf=1.0, neginf=-1.0)  # stray NaN -> background
        normed.append(a)
    return TrainingData(
        stacks=normed, normalisation=norm,
        fingerprint=fingerprint_frames(stacks, sources=sources, meta=meta),
        sources=sources, counts=counts,
        frame_shapes=[tuple(s.shape[1:]) for s in stacks],
    )


def load_training_data(paths: Sequence[str | Path], *, patch: int, dataset: str | None = None,
                       percentiles: tuple[float, float] = (0.1, 99.9),
                       counts: tuple[float, float] | None = None) -> TrainingData:
    """Read frame files with :func:`noise2atom.io.read_frames` and validate them.

    Raises :class:`TrainingDataError` naming the file and the problem.
    """
    from noise2atom.io import FrameReadError, read_frames

    stacks, sources, meta = [], [], {}
    for p in paths:
        p = Path(p)
        try:
            fs = read_frames(p, dataset=dataset)
        except FrameReadError as e:
            raise TrainingDataError(str(e)) from e
        except Exception as e:  # a reader library failing on a corrupt file
            raise TrainingDataError(f"{p}: cannot read frames (got {type(e).__name__}: {e})") from e
        frames = np.asarray(fs.frames)
        if frames.ndim == 2:
            frames = frames[None]
        stacks.append(frames)
        sources.append(p.name)
        if not meta:
            meta = dict(fs.meta or {})
    if counts is None:
        counts = counts_mapping_from_meta(meta)
    return _prepare(stacks, sources, meta, patch=patch, percentiles=percentiles, counts=counts)


def simulated_training_data(*, n_frames: int, size: int, scene: str,
                            peak_counts: float | Sequence[float], seed: int, patch: int,
                            percentiles: tuple[float, float] = (0.1, 99.9),
                            **sim_kwargs: Any) -> TrainingData:
    """Training frames from the STEM series simulator (``n2a-train --simulate``).

    Several ``peak_counts`` give one series per dose (seeds ``seed``, ``seed + 1``, ...),
    normalised together, so one model covers that range of doses.
    """
    from noise2atom.stem_sim import simulate_series

    doses = [float(peak_counts)] if np.isscalar(peak_counts) else [float(d) for d in peak_counts]
    stacks, sources, meta = [], [], {}
    for i, dose in enumerate(doses):
        series = simulate_series(n_frames, shape=(size, size), scene=scene, peak_counts=dose,
                                 seed=seed + i, **sim_kwargs)
        stacks.append(series.noisy)
        sources.append(f"simulate:{scene}:{size}x{size}x{n_frames}:peak{dose:g}:seed{seed + i}")
        meta = meta or dict(series.meta)
    if len(doses) > 1:
        meta["peak_counts"] = doses
    return _prepare(stacks, sources, meta, patch=patch, percentiles=percentiles,
                    counts=counts_mapping_from_meta(meta))
