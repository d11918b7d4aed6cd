"""What the benchmarks share: where results go, the machine line of a report, a model to time, and
a client of n2a-stream's output. Measures nothing itself.

- ``ROOT``, ``RESULTS`` (``bench/results/``, where every benchmark writes by default);
- :func:`machine`: the one-line machine description of the quality reports;
- :func:`random_checkpoint` / :func:`timing_model`: a random-initialised generator saved as a
  checkpoint (speed does not depend on the weights), or the bundled model when it has the size;
- :class:`OutputClient`: a SUB client of ``n2a-stream``'s output that keeps one row per frame
  (used by ``bench.latency``, ``bench.guard`` and ``bench.learn``).
"""
from __future__ import annotations

import os
import platform
import threading
import time
from pathlib import Path

import numpy as np

__all__ = ["RESULTS", "ROOT", "OutputClient", "machine", "random_checkpoint", "timing_model"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def machine() -> str:
    """CPU, cores, load at the start and Python, for a report's header (CPU runs)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared with other "
            f"jobs; load average {load:.1f} at the start), no GPU; Python {platform.python_version()}")


def random_checkpoint(path: Path, size: str, *, frames: np.ndarray | None = None,
                      meta: dict | None = None) -> Path:
    """Save a random-initialised (seed 0) ``size`` generator as a checkpoint at ``path``.

    The normalisation comes from ``frames`` when given (so the stream sees realistic inputs), else
    [0, 1].
    """
    import torch

    from noise2atom.checkpoint import ModelConfig, Normalisation, fingerprint_frames, save_checkpoint
    from noise2atom.models import build_generator

    torch.manual_seed(0)
    if frames is None:
        norm = Normalisation(lo=0.0, hi=1.0)
        data = fingerprint_frames([np.zeros((1, 8, 8), np.uint16)], sources=["bench"])
    else:
        norm = Normalisation.from_frames(frames)
        data = fingerprint_frames([frames], meta=meta)
    config = ModelConfig(size=size, method="blindspot", normalisation=norm, data=data)
    return save_checkpoint(Path(path), config, build_generator(size).state_dict())


def timing_model(folder: Path, size: str = "lite") -> tuple[Path, str]:
    """The bundled model if it is a ``size`` generator (``lite``, ``lite-residual`` and
    ``lite-dilated`` count as one: the same convolutions, plus one add, some dilated), else a
    random-initialised one in ``folder`` (the same compute); returns (checkpoint, a note for the report)."""
    from noise2atom.checkpoint import default_model_path, load_checkpoint
    from noise2atom.stem_sim import StemSimulator

    bundled = default_model_path()
    have = load_checkpoint(bundled).config.size if bundled.is_file() else None
    if have is not None and (have == size or {have, size} <= {"lite", "lite-residual", "lite-dilated"}):
        return bundled, f"bundled ({bundled.name})"
    sim = StemSimulator(shape=(128, 128), seed=0)
    frames = np.stack([sim.frame(t).noisy for t in range(4)])
    path = random_checkpoint(Path(folder) / f"{size}.safetensors", size, frames=frames, meta=sim.meta)
    return path, f"random-init {size} (no bundled {size} model)"


class OutputClient(threading.Thread):
    """SUB client of n2a-stream's output: one row per frame received, in ``rows``.

    A row: ``seq``, ``model``, ``learn``, ``t`` (receive time, s since the epoch), ``latency_ms``
    (``t_acq_ns`` to received), ``dropped``, ``timing`` (the header's stage times) and, with
    ``keep_denoised``, ``denoised`` (a copy of the array). The first ``skip`` frames (compilation,
    graph capture) are counted in ``seen`` but get no row. ``close()`` stops the thread and its socket.
    """

    def __init__(self, ctx, endpoint: str, *, skip: int = 0, keep_denoised: bool = False) -> None:
        import zmq

        from streamer.protocol import decode

        super().__init__(daemon=True)
        self.skip = skip
        self.keep_denoised = keep_denoised
        self.seen = 0
        self.rows: list[dict] = []
        self._decode = decode
        self._halt = threading.Event()
        self.sock = ctx.socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.sock.subscribe(b"")

    @property
    def latency_ms(self) -> list[float]:
        return [r["latency_ms"] for r in self.rows]

    def run(self) -> None:
        while not self._halt.is_set():
            if not self.sock.poll(50):
                continue
            parts = self.sock.recv_multipart(copy=False)
            t = time.time_ns()
            m = self._decode(parts)
            if m.type != "frame":
                continue
            self.seen += 1
            if self.seen <= self.skip:
                continue
            row = {"seq": m.seq, "model": m.header.get("model"), "learn": m.header.get("learn"),
                   "t": t / 1e9, "latency_ms": (t - m.t_acq_ns) / 1e6, "dropped": m.header.get("dropped", 0),
                   "timing": m.header.get("timing", {}), "resample": m.header.get("resample")}
            if self.keep_denoised:
                row["denoised"] = np.array(m.arrays["denoised"])
            self.rows.append(row)
        self.sock.close(0)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (it closes its socket) and wait up to ``timeout`` s."""
        self._halt.set()
        self.join(timeout)
