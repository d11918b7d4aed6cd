"""The thin Swift adaptor: scan hardware sources -> :class:`ScanFrameSender`; n2a output -> data items.

Threads (none of them waits on the network):

- Swift's acquisition thread fires ``data_channel_updated_event`` for partial and complete frames;
  :meth:`LiveBridge._on_channel_updated` ignores all but ``state == "complete"`` (a whole frame,
  Nion's own rule for ``get_next_xdatas_to_finish``), copies the frame, maps the metadata and
  offers it to the sender's bounded ring: a few microseconds, never a socket call.
- The sender's worker thread encodes and sends (see :mod:`.sender`).
- The receiver's thread decodes ``n2a-stream``'s output and keeps the newest frame per Swift
  channel in a one-slot buffer; one task at a time is queued to Swift's UI thread, which writes
  the denoised frame, with its CSS and flags in the title and metadata, into a live data item
  ``"<detector> (n2a)"`` (reference key ``n2a_<raw reference key>``).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from .meta import SeriesNumbering, swift_meta, wire_frame
from .receiver import OutputReceiver
from .sender import ScanFrameSender

__all__ = ["LiveBridge"]

log = logging.getLogger("n2a.live")


def _title(detector: str, header: dict[str, Any]) -> str:
    css = header.get("css")
    flags = [f for f in header.get("flags") or []]
    if header.get("meta_mismatch"):
        flags.append("settings differ from model: " + ", ".join(header["meta_mismatch"]))
    text = f"{detector} (n2a)  CSS {css:.3f}" if isinstance(css, (int, float)) else \
        f"{detector} (n2a)  CSS -"
    return text + ("  ⚑ " + "; ".join(map(str, flags)) if flags else "")


class LiveBridge:
    """Connect Swift's scan hardware sources to ``n2a-stream`` and show its output in Swift.

    Parameters
    ----------
    sender
        A started :class:`ScanFrameSender` (its endpoint is what ``n2a-stream`` subscribes to).
    output_address
        ``n2a-stream``'s output endpoint, e.g. ``tcp://127.0.0.1:5556``.
    queue_task
        Runs a callable on Swift's UI thread (``DocumentController.queue_task``).
    get_document_model
        Returns the current ``DocumentModel`` (or ``None`` while no window is open).
    """

    def __init__(self, *, sender: ScanFrameSender, output_address: str,
                 queue_task: Callable[[Callable[[], None]], None],
                 get_document_model: Callable[[], Any], context=None) -> None:
        self.sender = sender
        self._queue_task = queue_task
        self._get_document_model = get_document_model
        self._listeners: dict[int, Any] = {}
        self._numbering: dict[str, SeriesNumbering] = {}
        self._lock = threading.Lock()
        self._latest: dict[str, Any] = {}
        self._show_pending = False
        self._hsm_listeners: list[Any] = []
        self.completed = 0      # complete frames seen from Swift
        self.shown: dict[str, int] = {}  # denoised frames written into Swift, per channel
        self.last_shown: dict[str, tuple[str, int]] = {}
        self.errors = 0
        self.last_error: str | None = None
        self._last_state: str | None = None
        self._last_report = 0.0
        self.receiver = OutputReceiver(address=output_address, on_frame=self._on_output,
                                       context=context)

    # -- wiring -------------------------------------------------------------------------------
    def start(self, hardware_source_manager: Any | None = None) -> LiveBridge:
        """Start the receiver and attach to every scan source, now and as they are registered."""
        self.receiver.start()
        if hardware_source_manager is not None:
            for hs in list(hardware_source_manager.hardware_sources):
                self.attach(hs)
            self._hsm_listeners = [
                hardware_source_manager.hardware_source_added_event.listen(self.attach),
                hardware_source_manager.hardware_source_removed_event.listen(self.detach)]
        log.info("n2a live: publishing completed scan frames on %s (%s), showing %s",
                 self.sender.endpoint, self.sender.pattern, self.receiver.address)
        return self

    def attach(self, hardware_source: Any) -> bool:
        """Listen to a scan hardware source's completed frames (other sources are ignored)."""
        if not getattr(hardware_source, "features", {}).get("is_scanning"):
            return False
        if id(hardware_source) not in self._listeners:
            event = hardware_source.data_channel_updated_event
            self._listeners[id(hardware_source)] = event.listen(
                partial(self._on_channel_updated, hardware_source.hardware_source_id))
        return True

    def detach(self, hardware_source: Any) -> None:
        listener = self._listeners.pop(id(hardware_source), None)
        if listener is not None:
            listener.close()

    def close(self) -> None:
        for listener in [*self._listeners.values(), *self._hsm_listeners]:
            listener.close()
        self._listeners.clear()
        self._hsm_listeners = []
        self.receiver.close()
        self.sender.close()

    # -- acquisition thread -------------------------------------------------------------------
    def _on_channel_updated(self, hardware_source_id: str, args: Any, xdata: Any) -> None:
        if getattr(args, "state", None) != "complete" or xdata is None:
            return  # partial frames (and 'marked': stop requested) are never sent
        try:
            frame = wire_frame(xdata.data)
            calibrations = [(c.scale, c.units) for c in xdata.dimensional_calibrations]
            meta = swift_meta(xdata.metadata, shape=frame.shape, calibrations=calibrations)
            key = meta.setdefault("swift_channel", f"{hardware_source_id}_{args.channel_id}")
            numbering = self._numbering.setdefault(key, SeriesNumbering(f"swift-{key}"))
            series, seq, _ = numbering.next(meta.get("frame_index"), frame.shape,
                                            frame.dtype.name)
            self.sender.offer(frame, series=series, seq=seq, t_acq_ns=time.time_ns(), meta=meta)
            self.completed += 1
        except Exception as e:  # noqa: BLE001 - never break Swift's acquisition; counted, logged
            self.errors += 1
            self.last_error = f"{type(e).__name__}: {e}"
            log.warning("n2a live: frame not sent (%s)", self.last_error)
        self._report()

    def _report(self) -> None:
        """Log the status when the connection state changes, and the drop counts each minute."""
        state = self.state
        now = time.monotonic()
        dropping = self.sender.dropped_total and now - self._last_report > 60
        if state != self._last_state or dropping:
            self._last_state, self._last_report = state, now
            (log.info if state == "connected" else log.warning)("%s", self.status_text())

    # -- receiver thread -> UI thread ---------------------------------------------------------
    def _on_output(self, msg: Any) -> None:
        key = msg.meta.get("swift_channel") or "n2a"
        with self._lock:
            self._latest[key] = msg
            pending, self._show_pending = self._show_pending, True
        if not pending:
            self._queue_task(self._show)

    def _show(self) -> None:
        with self._lock:
            latest, self._latest = self._latest, {}
            self._show_pending = False
        document_model = self._get_document_model()
        if document_model is None:
            return
        from nion.data import Calibration, DataAndMetadata
        from nion.swift import Facade

        library = Facade.Library(document_model)
        for key, msg in latest.items():
            denoised = np.array(msg.arrays.get("denoised", msg.frame), dtype=np.float32)
            meta = msg.meta
            size = meta.get("pixel_size_nm")
            cal = [Calibration.Calibration(scale=size, units="nm")] * 2 if size else None
            header = msg.header
            n2a = {k: header.get(k) for k in ("series", "seq", "css", "css_raw", "css_mean",
                                              "flags", "meta_mismatch", "dropped", "gaps",
                                              "model", "engine")}
            xdata = DataAndMetadata.new_data_and_metadata(
                denoised, dimensional_calibrations=cal,
                metadata={"n2a": n2a, "acquisition": dict(meta)})
            item = library.get_data_item_for_reference_key(f"n2a_{key}", create_if_needed=True)
            item.set_data_and_metadata(xdata)
            title = _title(str(meta.get("detector", key)), header)
            if item.title != title:
                item.title = title
            self.shown[key] = self.shown.get(key, 0) + 1
            self.last_shown[key] = (msg.series, msg.seq)

    # -- status -------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``connected`` (an n2a-stream subscribes), ``no n2a-stream`` or ``error``."""
        if self.sender.error is not None or self.receiver.error is not None:
            return "error"
        if self.sender.pattern == "pub" and self.sender.subscribers == 0:
            return "no n2a-stream"
        return "connected"

    def status_text(self) -> str:
        """One line for the log or a status panel."""
        s = self.sender
        d = ", ".join(f"{k} {v}" for k, v in s.dropped.items() if v) or "none"
        head = {"connected": f"n2a live: sending to {s.subscribers} n2a-stream(s) on {s.endpoint}",
                "no n2a-stream": f"n2a live: no n2a-stream subscribed to {s.endpoint}; frames "
                                 f"are counted as not sent, Swift is not held up",
                "error": f"n2a live: stopped on an error ({s.error or self.receiver.error})"
                }[self.state]
        return (f"{head}; {self.completed} complete frames, {s.sent} sent, dropped: {d}; "
                f"{self.receiver.received} denoised received from {self.receiver.address}")
