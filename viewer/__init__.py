"""n2a's live viewer: subscribes to ``n2a-stream``'s output and shows raw and denoised frames.

Depends on `streamer.protocol` only (never on the engines). Run it as ``n2a-view --port PORT``.
"""
from viewer.receiver import FrameReceiver, ReceivedFrame, ReceiverError, ReceiverStatus, normalise_address
from viewer.slot import LatestSlot
from viewer.window import ViewerWindow

__all__ = [
    "FrameReceiver",
    "LatestSlot",
    "ReceivedFrame",
    "ReceiverError",
    "ReceiverStatus",
    "ViewerWindow",
    "normalise_address",
]
