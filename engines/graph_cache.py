"""Per-shape runners of a fixed-shape function, bounded, with a copy-out contract.

`ShapeGraphCache` is how the PyTorch engine runs a frame on CUDA: the first batch of a shape
builds an *entry* (static device input and output, optionally a CUDA graph captured from the
function, which may be ``torch.compile``'d with fixed shapes; pinned host buffers), later batches
of that shape reuse it. A replay writes into the same static output every time, so each result is
copied out (device -> pinned host -> a fresh array the caller owns) before the next replay can run.

Transfers and compute run on two streams, so a caller that submits frame n+1 before it collects
frame n gets frame n+1's upload overlapped with frame n's compute::

    pending = cache.submit(frame0)
    for frame in frames[1:]:
        nxt = cache.submit(frame)       # upload on the copy stream while frame n computes
        out = pending.result()          # frame n, copied out
        pending = nxt

Each entry has two slots (pinned input, device staging input, pinned output); a third submission
of one shape before the first was collected collects the first itself (kept in its `Pending`), so
nothing is lost or overwritten and no buffer grows.

On the CPU (or with ``device="cpu"``) the same cache and the same copy-out run with an eager call
instead of a graph and no streams: that fallback is what the CPU tests exercise.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import numpy as np

from .base import EngineError

__all__ = ["Pending", "ShapeGraphCache"]

_SLOTS = 2  # double buffering: frame n+1 uploads while frame n computes


class Pending:
    """The result of one submitted batch; :meth:`result` waits for it and returns a fresh array."""

    def __init__(self, entry: _Entry, slot: int, seq: int) -> None:
        self._entry, self._slot, self.seq = entry, slot, seq
        self._value: np.ndarray | None = None

    @property
    def collected(self) -> bool:
        """True once the result was copied out of the shared buffers."""
        return self._value is not None

    def _collect(self) -> None:
        if self._value is None:
            e = self._entry
            if e.done is not None:
                e.done[self._slot].synchronize()
            self._value = e.host_out[self._slot].numpy().copy()  # the copy-out: caller owns it
            if e.tickets[self._slot] is self:
                e.tickets[self._slot] = None

    def result(self) -> np.ndarray:
        """The output batch (float32, the input's shape); the caller owns it."""
        self._collect()
        return self._value


class _Entry:
    """Everything one input shape needs; built once, reused by every batch of that shape."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.static_in = self.static_out = None
        self.graph = None
        self.host_in: list = []
        self.host_out: list = []
        self.staging: list = []  # device copies of host_in, written on the copy stream
        self.uploaded = self.consumed = self.done = None  # CUDA events per slot
        self.tickets: list[Pending | None] = [None] * _SLOTS
        self.next_slot = 0


class ShapeGraphCache:
    """Run ``fn`` per input shape through cached static buffers (and CUDA graphs on CUDA).

    Parameters
    ----------
    fn
        ``(N, H, W) float32 tensor -> (N, H, W) float32 tensor`` on ``device``; called with the
        entry's static input (and captured into a CUDA graph when ``cuda_graph``).
    device
        ``"cpu"`` (eager fallback, no streams) or ``"cuda[:N]"``.
    cuda_graph
        CUDA only: capture ``fn`` once per shape and replay it.
    max_shapes
        At most this many entries; the least recently used is dropped for a new shape.
    warmup
        Calls of ``fn`` on the compute stream before a capture (compilation, cuDNN autotuning).
    """

    def __init__(self, fn: Callable, *, device: str = "cpu", cuda_graph: bool = False,
                 max_shapes: int = 4, warmup: int = 3) -> None:
        import torch

        if max_shapes < 1:
            raise EngineError(f"expected max_shapes >= 1 (got {max_shapes})")
        on_cuda = device.startswith("cuda")
        if cuda_graph and not on_cuda:
            raise EngineError(f"CUDA graphs need a CUDA device (got device {device!r})")
        self._torch = torch
        self.fn, self.device, self.cuda_graph = fn, device, cuda_graph
        self.max_shapes, self.warmup = max_shapes, warmup
        self._entries: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()
        self.captures = self.hits = self.evictions = 0
        self._seq = 0
        if on_cuda:
            self.compute_stream = torch.cuda.Stream(device=device)
            self.copy_stream = torch.cuda.Stream(device=device)
        else:
            self.compute_stream = self.copy_stream = None

    # -- public ----------------------------------------------------------------------------
    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Cached shapes, least recently used first."""
        return list(self._entries)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.submit(batch).result()

    def submit(self, batch: np.ndarray) -> Pending:
        """Start one float32 batch; returns at once on CUDA (after the host-side copy)."""
        if batch.dtype != np.float32:
            raise EngineError(f"expected a float32 batch (got {batch.dtype})")
        entry = self._entry(tuple(batch.shape))
        slot = entry.next_slot
        entry.next_slot = (slot + 1) % _SLOTS
        previous = entry.tickets[slot]
        if previous is not None:  # its buffers are about to be reused: copy its result out now
            previous._collect()
        self._seq += 1
        ticket = Pending(entry, slot, self._seq)
        entry.tickets[slot] = ticket
        if self.compute_stream is None:
            self._run_cpu(entry, slot, batch)
        else:
            self._run_cuda(entry, slot, batch)
        return ticket

    def clear(self) -> None:
        """Collect every outstanding result and drop every entry (graphs, buffers)."""
        while self._entries:
            self._evict(next(iter(self._entries)), count=False)

    def stats(self) -> dict[str, str]:
        return {"graph_captures" if self.cuda_graph else "shape_entries": str(self.captures),
                "shape_hits": str(self.hits), "shape_evictions": str(self.evictions),
                "max_shapes": str(self.max_shapes)}

    # -- entries ---------------------------------------------------------------------------
    def _entry(self, shape: tuple[int, ...]) -> _Entry:
        entry = self._entries.get(shape)
        if entry is not None:
            self._entries.move_to_end(shape)
            self.hits += 1
            return entry
        while len(self._entries) >= self.max_shapes:
            self._evict(next(iter(self._entries)))
        entry = self._build(shape)
        self._entries[shape] = entry
        self.captures += 1
        return entry

    def _evict(self, shape: tuple[int, ...], count: bool = True) -> None:
        entry = self._entries.pop(shape)
        for ticket in entry.tickets:
            if ticket is not None:
                ticket._collect()
        if self.compute_stream is not None:
            self.compute_stream.synchronize()
            self.copy_stream.synchronize()
        entry.graph = entry.static_in = entry.static_out = None  # frees the graph's memory pool
        if count:
            self.evictions += 1

    def _build(self, shape: tuple[int, ...]) -> _Entry:
        torch = self._torch
        entry = _Entry(shape)
        pinned = self.compute_stream is not None
        entry.host_in = [torch.empty(shape, dtype=torch.float32, pin_memory=pinned) for _ in range(_SLOTS)]
        entry.host_out = [torch.empty(shape, dtype=torch.float32, pin_memory=pinned) for _ in range(_SLOTS)]
        entry.static_in = torch.zeros(shape, dtype=torch.float32, device=self.device)
        if self.compute_stream is None:
            return entry
        entry.staging = [torch.empty(shape, dtype=torch.float32, device=self.device) for _ in range(_SLOTS)]
        entry.uploaded = [torch.cuda.Event() for _ in range(_SLOTS)]
        entry.consumed = [torch.cuda.Event() for _ in range(_SLOTS)]
        entry.done = [torch.cuda.Event() for _ in range(_SLOTS)]
        stream = self.compute_stream
        stream.wait_stream(torch.cuda.current_stream(self.device))  # static_in's zeros are written
        with torch.no_grad(), torch.cuda.stream(stream):
            for _ in range(self.warmup if self.cuda_graph else 1):
                out = self.fn(entry.static_in)
            self._check_out(out, shape)
            if self.cuda_graph:
                stream.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=stream):
                    entry.static_out = self.fn(entry.static_in)
                entry.graph = graph
        stream.synchronize()
        return entry

    @staticmethod
    def _check_out(out, shape) -> None:
        if tuple(out.shape) != shape or str(out.dtype) != "torch.float32":
            raise EngineError(f"the cached function returned {out.dtype} {tuple(out.shape)} "
                              f"(expected torch.float32 {shape})")

    # -- running ---------------------------------------------------------------------------
    def _run_cpu(self, entry: _Entry, slot: int, batch: np.ndarray) -> None:
        torch = self._torch
        entry.host_in[slot].numpy()[...] = batch
        with torch.inference_mode():
            entry.static_in.copy_(entry.host_in[slot])
            out = self.fn(entry.static_in)
            self._check_out(out, entry.shape)
            entry.host_out[slot].copy_(out)

    def _run_cuda(self, entry: _Entry, slot: int, batch: np.ndarray) -> None:
        torch = self._torch
        entry.uploaded[slot].synchronize()  # the last upload from this pinned slot has finished
        entry.host_in[slot].numpy()[...] = batch
        with torch.no_grad():
            with torch.cuda.stream(self.copy_stream):
                self.copy_stream.wait_event(entry.consumed[slot])  # staging slot read by compute
                entry.staging[slot].copy_(entry.host_in[slot], non_blocking=True)
                entry.uploaded[slot].record(self.copy_stream)
            stream = self.compute_stream
            with torch.cuda.stream(stream):
                stream.wait_event(entry.uploaded[slot])
                entry.static_in.copy_(entry.staging[slot], non_blocking=True)
                entry.consumed[slot].record(stream)
                if entry.graph is not None:
                    entry.graph.replay()
                    out = entry.static_out
                else:
                    out = self.fn(entry.static_in)
                # Copy-out on the compute stream: ordered before the next replay overwrites it.
                entry.host_out[slot].copy_(out, non_blocking=True)
                entry.done[slot].record(stream)
