"""n2a live denoising inside Nion Swift (a Swift plug-in; ``pip install n2a[nion]``).

Swift imports every package under the ``nionswift_plugin`` namespace and instantiates the classes
whose names end in ``Extension``. This one publishes each completed frame of a live STEM scan to
``n2a-stream`` over protocol v1 and shows the denoised frame in Swift; see ``docs/nion.md``.

Settings (environment variables, read when Swift starts):

- ``N2A_LIVE_ADDRESS``: where the plug-in binds for ``n2a-stream`` (``tcp://127.0.0.1:5555``)
- ``N2A_LIVE_PATTERN``: ``pub`` (``n2a-stream`` default) or ``push`` (``n2a-stream --pattern pull``)
- ``N2A_LIVE_OUTPUT``: ``n2a-stream``'s output (``tcp://127.0.0.1:5556``)
- ``N2A_LIVE_MAX_QUEUE``: frames waiting to be sent before the oldest is dropped (8)
- ``N2A_LIVE``: ``0`` turns the plug-in off

The Swift-free parts (:mod:`.meta`, :mod:`.sender`, :mod:`.receiver`) import nothing from Swift;
the adaptor (:mod:`.swift_bridge`) is imported only when Swift creates the extension.
"""
from __future__ import annotations

import logging
import os

__all__ = ["N2ALiveExtension", "settings_from_env"]


def settings_from_env(env: dict[str, str] | None = None) -> dict:
    """The plug-in's settings from the environment (see the module docstring).

    >>> settings_from_env({"N2A_LIVE_PATTERN": "push"})["pattern"]
    'push'
    >>> settings_from_env({"N2A_LIVE_MAX_QUEUE": "x"})
    Traceback (most recent call last):
    ...
    ValueError: N2A_LIVE_MAX_QUEUE must be an int >= 1 (got 'x')
    """
    env = os.environ if env is None else env
    q = env.get("N2A_LIVE_MAX_QUEUE", "8")
    if not q.isdigit() or int(q) < 1:
        raise ValueError(f"N2A_LIVE_MAX_QUEUE must be an int >= 1 (got {q!r})")
    pattern = env.get("N2A_LIVE_PATTERN", "pub")
    if pattern not in ("pub", "push"):
        raise ValueError(f"N2A_LIVE_PATTERN must be 'pub' or 'push' (got {pattern!r})")
    return {"address": env.get("N2A_LIVE_ADDRESS", "tcp://127.0.0.1:5555"), "pattern": pattern,
            "output": env.get("N2A_LIVE_OUTPUT", "tcp://127.0.0.1:5556"), "max_queue": int(q),
            "enabled": env.get("N2A_LIVE", "1") != "0"}


class N2ALiveExtension:
    """Created by Swift at start-up; closed when Swift quits."""

    extension_id = "n2a.live"

    def __init__(self, api_broker) -> None:
        self.bridge = None
        settings = settings_from_env()
        if not settings["enabled"]:
            return
        from nion.instrumentation import HardwareSource

        from .sender import ScanFrameSender
        from .swift_bridge import LiveBridge

        api = api_broker.get_api(version="~1.0", ui_version="~1.0")
        app = api.application._application

        def queue_task(task) -> None:
            controllers = app.document_controllers
            if controllers:
                controllers[0].queue_task(task)

        try:
            sender = ScanFrameSender(address=settings["address"], pattern=settings["pattern"],
                                 max_queue=settings["max_queue"]).start()
        except OSError as e:
            logging.getLogger("n2a.live").error("%s: the n2a plug-in is off", e)
            return
        def document_model():
            return app.document_model if app.document_controllers else None

        self.bridge = LiveBridge(sender=sender, output_address=settings["output"],
                                 queue_task=queue_task,
                                 get_document_model=document_model).start(
            HardwareSource.HardwareSourceManager())

    def close(self) -> None:
        if self.bridge is not None:
            self.bridge.close()
            self.bridge = None
