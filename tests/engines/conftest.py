"""Engine test fixtures: random-init checkpoints of both generator sizes, made once per session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from noise2atom.checkpoint import ModelConfig, Normalisation, fingerprint_frames, save_checkpoint
from noise2atom.models import build_generator


def make_checkpoint(path: Path, size: str, seed: int) -> Path:
    """A checkpoint of a freshly initialised ``size`` generator (seeded, so reproducible)."""
    torch.manual_seed(seed)
    generator = build_generator(size)
    config = ModelConfig(
        size=size,
        method="blindspot",
        normalisation=Normalisation(lo=100.0, hi=900.0),
        data=fingerprint_frames([np.zeros((1, 8, 8), np.uint16)], sources=["test"], meta={"dwell_us": 2.0}),
    )
    return save_checkpoint(path, config, generator.state_dict())


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """``{"lite": path, "paper": path}``; each in its own folder so exports cache beside it."""
    out = {}
    for size, seed in (("lite", 1), ("paper", 2)):
        folder = tmp_path_factory.mktemp(f"ckpt-{size}")
        out[size] = make_checkpoint(folder / f"{size}.safetensors", size, seed)
    return out


@pytest.fixture(scope="session")
def checkpoint_maker():
    """``make(path, size, seed) -> path``: tests that need their own checkpoint file."""
    return make_checkpoint


@pytest.fixture(scope="session")
def lite_checkpoint(checkpoints) -> Path:
    return checkpoints["lite"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep $N2A_CACHE (TensorRT plans, read-only-folder exports) out of the user's home."""
    monkeypatch.setenv("N2A_CACHE", str(tmp_path_factory.getbasetemp() / "n2a-cache"))


@pytest.fixture(autouse=True, scope="session")
def _two_threads():
    torch.set_num_threads(2)
