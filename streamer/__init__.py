"""streamer: n2a's live path — wire protocol, receive/denoise/publish pipeline, recorder, replay.

``import streamer`` stays light (the viewer imports :mod:`streamer.protocol`, :mod:`streamer.net`,
:mod:`streamer.security`, :mod:`streamer.stats` and :mod:`streamer.worker`); the pipeline, replay,
recorder and security modules are imported on first use of their names.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .protocol import Message, ProtocolError, decode, encode_end, encode_frame, encode_start

__all__ = [
    "CurveKeys",
    "Message",
    "ProtocolError",
    "Recorder",
    "Recording",
    "Replay",
    "Stream",
    "StreamConfig",
    "decode",
    "encode_end",
    "encode_frame",
    "encode_start",
    "read_recording",
]

_LAZY = {"Stream": "pipeline", "StreamConfig": "pipeline", "Replay": "replay",
         "CurveKeys": "security", "Recorder": "recorder", "Recording": "recorder",
         "read_recording": "recorder"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'streamer' has no attribute {name!r}")
