"""The viewer window: raw and denoised side by side, rolling CSS, status bar, pause and snapshots.

Threading (style item 9): the window never receives anything from the network thread. A single-shot
`QTimer` on the GUI thread pulls the newest frame from the receiver's one-slot buffer, shows it with
``setImage(autoLevels=False)`` and re-arms itself, so a slow display only skips frames (counted and
shown) and can never slow the stream.
"""
from __future__ import annotations

import collections
import math
import time
from pathlib import Path
from typing import Any, Protocol

from PySide6 import QtCore, QtGui, QtWidgets

from viewer.receiver import FrameHeader, ReceivedFrame, ReceiverError, ReceiverStatus
from viewer.snapshot import save_frame_tiff, snapshot_stem
from streamer.stats import RateMeter
from viewer.widgets import COLORMAPS, CssPlot, ImagePanel, format_value

__all__ = ["FrameSource", "ViewerWindow"]

WARN_STYLE = "color: white; background-color: #c0392b; font-weight: bold; padding: 0 4px;"
OK_STYLE = ""
BANNER_STYLE = ("font-size: 20pt; font-weight: bold; color: #222; background-color: #f5d76e;"
                " padding: 10px; border-radius: 4px;")
BANNER_ERROR_STYLE = ("font-size: 20pt; font-weight: bold; color: white; background-color: #c0392b;"
                      " padding: 10px; border-radius: 4px;")


class FrameSource(Protocol):
    """What the window pulls from (a `viewer.receiver.FrameReceiver`)."""

    address: str

    def take(self) -> ReceivedFrame | None: ...
    def take_headers(self) -> list[FrameHeader]: ...
    def status(self) -> ReceiverStatus: ...
    def maybe_raise(self) -> None: ...


class ViewerWindow(QtWidgets.QMainWindow):
    """Main window of ``n2a-view``.

    Parameters
    ----------
    source : FrameSource or None
        Where frames come from; None for a window driven by `show_frame` alone (benchmarks).
    refresh_ms : int
        Pause between display updates (the timer re-arms after each update).
    silence_timeout_s : float
        With no message for this long, the window goes back to "waiting".
    history : int
        Frames kept in the rolling CSS plot.
    snapshot_dir : Path
        Where snapshots go (created on demand; changeable from the toolbar).
    slow_refresh_s : float
        Minimum interval between redraws of the histograms, the CSS plot and the status bar (the
        images follow every displayed frame).
    """

    #: Emitted (GUI thread) after each displayed frame with the number of frames shown so far.
    frame_shown = QtCore.Signal(int)

    def __init__(self, *, source: FrameSource | None, refresh_ms: int = 10,
                 silence_timeout_s: float = 5.0, history: int = 600,
                 snapshot_dir: Path = Path("n2a-snapshots"), slow_refresh_s: float = 0.25,
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        if refresh_ms < 0:
            raise ValueError(f"refresh_ms must be >= 0 (got {refresh_ms})")
        if not silence_timeout_s > 0:
            raise ValueError(f"silence_timeout_s must be > 0 (got {silence_timeout_s})")
        self._source = source
        self.address = source.address if source is not None else "(no source)"
        self.silence_timeout_s = float(silence_timeout_s)
        self.snapshot_dir = Path(snapshot_dir)
        self.slow_refresh_s = float(slow_refresh_s)
        self.setWindowTitle(f"n2a-view — {self.address}")

        self.current: ReceivedFrame | None = None
        self.frames_shown = 0
        self.state = "waiting"
        self.paused = False
        self.update_costs_ns: collections.deque[int] = collections.deque(maxlen=10_000)
        self._display_rate = RateMeter(window_s=2.0)
        self._status: ReceiverStatus | None = None
        self._last_slow_refresh = 0.0
        self._slow_dirty = False
        self._last_header: FrameHeader | None = None
        self._closed = False
        self._plot_series: str | None = None

        self._build_ui(history)
        self._set_waiting(f"Waiting for n2a-stream at {self.address}")

        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(refresh_ms))
        self._timer.timeout.connect(self._tick)
        if source is not None:
            self._timer.start()

    # ------------------------------------------------------------------------------------ UI

    def _build_ui(self, history: int) -> None:
        self.raw_panel = ImagePanel(title="raw")
        self.denoised_panel = ImagePanel(title="denoised")
        # Zoom and pan are linked: the denoised view follows the raw one and vice versa.
        self.denoised_panel.view.setXLink(self.raw_panel.view)
        self.denoised_panel.view.setYLink(self.raw_panel.view)
        for panel in (self.raw_panel, self.denoised_panel):
            panel.scene().sigMouseMoved.connect(lambda pos, p=panel: self._on_mouse_moved(p, pos))

        self.banner = QtWidgets.QLabel()
        self.banner.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.banner.setWordWrap(True)

        images = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        images.addWidget(self.raw_panel)
        images.addWidget(self.denoised_panel)
        self.css_plot = CssPlot(history=history)
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        split.addWidget(images)
        split.addWidget(self.css_plot)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)

        central = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(central)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.banner)
        layout.addWidget(split, 1)
        self.setCentralWidget(central)

        tb = self.addToolBar("view")
        tb.setObjectName("view-toolbar")
        tb.setMovable(False)
        self.pause_action = QtGui.QAction("Pause", self, checkable=True)
        self.pause_action.setShortcut(QtGui.QKeySequence("Space"))
        self.pause_action.setToolTip("Freeze the display (Space); the stream keeps running")
        self.pause_action.toggled.connect(self.set_paused)
        tb.addAction(self.pause_action)
        self.auto_levels_action = QtGui.QAction("Auto levels", self)
        self.auto_levels_action.setShortcut(QtGui.QKeySequence("A"))
        self.auto_levels_action.setToolTip("Fit both images' contrast to the current frames (A)")
        self.auto_levels_action.triggered.connect(self.auto_levels)
        tb.addAction(self.auto_levels_action)
        tb.addWidget(QtWidgets.QLabel(" colour map "))
        self.colormap_box = QtWidgets.QComboBox()
        self.colormap_box.addItems(COLORMAPS)
        self.colormap_box.currentTextChanged.connect(self.set_colormap)
        tb.addWidget(self.colormap_box)
        tb.addSeparator()
        self.snapshot_action = QtGui.QAction("Snapshot", self)
        self.snapshot_action.setShortcut(QtGui.QKeySequence.StandardKey.Save)
        self.snapshot_action.setToolTip("Save raw + denoised as TIFF and the window as PNG (Ctrl+S)")
        self.snapshot_action.triggered.connect(self._snapshot_clicked)
        tb.addAction(self.snapshot_action)
        self.snapshot_dir_action = QtGui.QAction("Snapshot folder…", self)
        self.snapshot_dir_action.triggered.connect(self._choose_snapshot_dir)
        tb.addAction(self.snapshot_dir_action)
        tb.addSeparator()
        self.readout = QtWidgets.QLabel("")
        self.readout.setMinimumWidth(320)
        tb.addWidget(self.readout)

        sb = self.statusBar()
        self.status_labels: dict[str, QtWidgets.QLabel] = {}
        for key in ("state", "series", "frame", "fps", "latency", "dropped", "gaps", "skips",
                    "errors", "engine", "learn", "mismatch", "flags"):
            label = QtWidgets.QLabel("")
            label.setObjectName(f"status-{key}")
            self.status_labels[key] = label
            sb.addPermanentWidget(label) if key in ("engine", "learn", "mismatch", "flags") else sb.addWidget(label)
        self.status_labels["mismatch"].hide()
        self.status_labels["learn"].hide()
        self.status_labels["flags"].hide()

    # ------------------------------------------------------------------------------- actions

    def set_paused(self, paused: bool) -> None:
        """Freeze or resume the display; the receiver keeps draining the socket meanwhile."""
        self.paused = bool(paused)
        if self.pause_action.isChecked() != self.paused:
            self.pause_action.setChecked(self.paused)
        self._refresh_slow(force=True)

    def auto_levels(self) -> None:
        """Fit both images' levels to the frames on screen (levels then stay fixed again)."""
        self.raw_panel.auto_levels()
        self.denoised_panel.auto_levels()

    def set_colormap(self, name: str) -> None:
        """Apply one of `viewer.widgets.COLORMAPS` to both images."""
        self.raw_panel.set_colormap(name)
        self.denoised_panel.set_colormap(name)
        if self.colormap_box.currentText() != name:
            self.colormap_box.setCurrentText(name)

    def snapshot(self, folder: Path | None = None) -> list[Path]:
        """Save the frames on screen as TIFF (header as JSON metadata) and the window as PNG.

        Returns the written paths (raw TIFF, denoised TIFF when present, then the PNG).
        """
        frame = self.current
        if frame is None:
            raise RuntimeError("nothing to save yet: no frame has been shown (got none)")
        folder = Path(folder) if folder is not None else self.snapshot_dir
        folder.mkdir(parents=True, exist_ok=True)
        self.flush()
        stem = snapshot_stem(frame.series, frame.seq)
        written = []
        for name, image in (("raw", frame.raw), ("denoised", frame.denoised)):
            if image is not None:
                written.append(save_frame_tiff(folder / f"{stem}_{name}.tif", image, frame.header))
        png = folder / f"{stem}_window.png"
        if not self.grab().save(str(png), "PNG"):
            raise OSError(f"could not write the window image to {png}")
        written.append(png)
        return written

    def _snapshot_clicked(self) -> None:
        try:
            paths = self.snapshot()
        except (RuntimeError, OSError) as e:
            self.statusBar().showMessage(f"snapshot failed: {e}", 8000)
            return
        self.statusBar().showMessage(f"saved {len(paths)} files to {paths[0].parent}", 8000)

    def _choose_snapshot_dir(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Snapshot folder", str(self.snapshot_dir))
        if folder:
            self.snapshot_dir = Path(folder)

    # ----------------------------------------------------------------------------- the loop

    def _tick(self) -> None:
        try:
            self.pull()
        finally:
            if self._source is not None and not self._closed:
                self._timer.start()

    def pull(self) -> bool:
        """One display update: take the newest frame and all new headers (unless paused), show them,
        refresh the state. Returns True when a frame was shown.
        """
        if self._source is None:
            return False
        shown = False
        if not self.paused:
            # Frame first: its header was queued before it, so the headers taken next include it.
            frame = self._source.take()
            headers = self._source.take_headers()
            if frame is not None:
                self.show_frame(frame, headers=headers)
                shown = True
            elif headers:
                self._add_headers(headers)
        self._status = self._source.status()
        self._update_state(self._status)
        self._refresh_slow()
        return shown

    def show_frame(self, frame: ReceivedFrame, *, headers: list[FrameHeader] | None = None) -> None:
        """Display one frame: both images with fixed levels, the CSS points, the status bar.

        `headers` are all frame headers received since the last update (the frame's own by
        default); each adds a point to the CSS plot, including frames whose images were skipped.
        """
        t0 = time.perf_counter_ns()
        if headers is None:
            headers = [FrameHeader(index=frame.index, series=frame.series, seq=frame.seq, header=frame.header)]
        new_series = self.current is None or frame.series != self.current.series
        for panel, image, old in ((self.raw_panel, frame.raw, self.current and self.current.raw),
                                  (self.denoised_panel, frame.denoised, self.current and self.current.denoised)):
            if image is None:
                continue
            reset = new_series or old is None or old.shape != image.shape or old.dtype != image.dtype
            panel.set_image(image, reset_levels=reset)
        self.current = frame
        self._add_headers(headers)
        self.frames_shown += 1
        self._display_rate.tick(time.monotonic())
        self._refresh_slow()
        self.update_costs_ns.append(time.perf_counter_ns() - t0)
        self.frame_shown.emit(self.frames_shown)

    def _add_headers(self, headers: list[FrameHeader]) -> None:
        for fh in headers:
            if fh.series != self._plot_series:
                self.css_plot.clear()
                self._plot_series = fh.series
            h = fh.header
            self.css_plot.append(seq=fh.seq, css_raw=h.get("css_raw"), css=h.get("css"),
                                 css_mean=h.get("css_mean"), css_raw_mean=h.get("css_raw_mean"),
                                 refresh=False)
        if headers:
            self._last_header = headers[-1]
            self._slow_dirty = True

    # ----------------------------------------------------------------------------- state

    def _update_state(self, status: ReceiverStatus) -> None:
        try:
            self._source.maybe_raise()
        except ReceiverError as e:
            self._set_waiting(f"Receiver stopped: {e.__cause__!r} — restart n2a-view", error=True)
            return
        silent = status.seconds_since_message is None or status.seconds_since_message > self.silence_timeout_s
        if status.last_frame_index >= 0 and status.last_frame_index > status.last_end_index and not silent:
            self._set_live()
        elif status.last_frame_index < 0:
            self._set_waiting(f"Waiting for n2a-stream at {self.address}")
        elif status.last_end_index > status.last_frame_index:
            self._set_waiting(f"Series {status.last_end_series!r} ended — waiting for n2a-stream at {self.address}")
        else:
            self._set_waiting(f"No frames for {self.silence_timeout_s:g} s — waiting for n2a-stream at {self.address}")

    def _set_waiting(self, text: str, *, error: bool = False) -> None:
        if self.state != "waiting" or self.banner.text() != text or self.banner.isHidden():
            self.state = "waiting"
            self.banner.setText(text)
            self.banner.setStyleSheet(BANNER_ERROR_STYLE if error else BANNER_STYLE)
            self.banner.show()

    def _set_live(self) -> None:
        if self.state != "live":
            self.state = "live"
            self.banner.hide()
            self.banner.setText("")

    # ---------------------------------------------------------------------------- status bar

    def _refresh_frame_labels(self, frame: FrameHeader) -> None:
        h = frame.header
        lab = self.status_labels
        lab["series"].setText(f"series {frame.series}")
        lab["frame"].setText(f"frame {frame.seq}")
        dropped, gaps = int(h.get("dropped") or 0), int(h.get("gaps") or 0)
        _set_warn(lab["dropped"], f"dropped {dropped}", dropped > 0)
        _set_warn(lab["gaps"], f"gaps {gaps}", gaps > 0)
        translations = h.get("lattice_average")  # n2a-stream --lattice-average: averaged over the lattice
        lattice = f" · lattice average ×{translations}" if isinstance(translations, int) and translations else ""
        lab["engine"].setText(f"{_describe_engine(h.get('engine'))} · {h.get('model') or 'no model'}{lattice}")
        learn = h.get("learn")
        mismatch = h.get("meta_mismatch") or []
        flags = h.get("flags") or []
        _show_optional(lab["learn"], _learn_text(learn) if isinstance(learn, dict) else None,
                       LEARN_TIP, warn=False)  # n2a-stream --learn: what the learner is doing
        _show_optional(lab["mismatch"], ("meta mismatch: " + ", ".join(map(str, mismatch))
                                         if mismatch else None), MISMATCH_TIP)
        # the fidelity guard's flags: CSS cannot be trusted on this frame
        _show_optional(lab["flags"], "⚠ " + ", ".join(map(str, flags)) if flags else None,
                       FLAGS_TIP)

    def _refresh_slow(self, *, force: bool = False) -> None:
        """Redraw what need not follow every frame (histograms, CSS plot, status bar) at most every
        `slow_refresh_s`: they cost more to paint than the images, and a human reads them at a few Hz.
        """
        now = time.monotonic()
        if not force and now - self._last_slow_refresh < self.slow_refresh_s:
            return
        self._last_slow_refresh = now
        if self._slow_dirty:
            self._slow_dirty = False
            self.raw_panel.refresh_histogram()
            self.denoised_panel.refresh_histogram()
            self.css_plot.refresh()
            if self._last_header is not None:
                self._refresh_frame_labels(self._last_header)
        self._refresh_status()

    def flush(self) -> None:
        """Bring the histograms, CSS plot and status bar up to date now (before a snapshot)."""
        self._refresh_slow(force=True)

    def _refresh_status(self) -> None:
        now = time.monotonic()
        lab = self.status_labels
        state = "PAUSED" if self.paused else self.state
        _set_warn(lab["state"], state, self.paused)
        st = self._status
        if st is None:
            return
        lab["fps"].setText(f"in {st.fps_in:.1f} fps · shown {self._display_rate.rate(now=now):.1f} fps")
        if math.isnan(st.latency_p50_ms):
            lab["latency"].setText("latency –")
        else:
            lab["latency"].setText(f"latency p50 {st.latency_p50_ms:.1f} ms · p99 {st.latency_p99_ms:.1f} ms")
        lab["skips"].setText(f"display skips {st.display_skips}")
        _set_warn(lab["errors"], f"bad messages {st.decode_errors}", st.decode_errors > 0)
        lab["errors"].setToolTip(st.last_decode_error or "")

    # ------------------------------------------------------------------------- pixel readout

    def _on_mouse_moved(self, panel: ImagePanel, scene_pos: QtCore.QPointF) -> None:
        self.readout.setText(self.readout_text(panel.pixel_at(scene_pos)))

    def readout_text(self, pixel: tuple[int, int] | None) -> str:
        """The readout line for (row, col): both images' values there."""
        frame = self.current
        if pixel is None or frame is None:
            return ""
        row, col = pixel
        parts = [f"row {row}, col {col}"]
        for name, image in (("raw", frame.raw), ("denoised", frame.denoised)):
            if image is not None and row < image.shape[0] and col < image.shape[1]:
                parts.append(f"{name} {format_value(image[row, col])}")
        return " · ".join(parts)

    # ----------------------------------------------------------------------------- closing

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self._closed = True
        self._timer.stop()
        super().closeEvent(event)


LEARN_TIP = ("n2a-stream fine-tunes the model on this series and swaps it in when its held-out "
             "loss improves; the model id changes with each swap.")
MISMATCH_TIP = ("The acquisition settings differ from the model's training data; frames are still "
                "denoised.")
FLAGS_TIP = ("n2a-stream's fidelity guard flagged this frame (clipped input, flat output, structure "
             "in the residual or input outside the model's training range): its CSS is not to be "
             "trusted.")


def _learn_text(learn: dict) -> str:
    loss = learn.get("heldout_loss")
    return (f"learn {learn.get('state', '?')}: {learn.get('swaps', 0)} swaps, "
            f"loss {'-' if loss is None else format(loss, '.4g')}")


def _show_optional(label: QtWidgets.QLabel, text: str | None, tooltip: str, *,
                   warn: bool = True) -> None:
    """Show an optional status label with ``text`` (red when ``warn``), or hide it (``None``)."""
    if text is None:
        label.hide()
        return
    if warn:
        _set_warn(label, text, True)
    else:
        label.setText(text)
    label.setToolTip(tooltip)
    label.show()


def _set_warn(label: QtWidgets.QLabel, text: str, warn: bool) -> None:
    label.setText(text)
    style = WARN_STYLE if warn else OK_STYLE
    if label.styleSheet() != style:
        label.setStyleSheet(style)


def _describe_engine(engine: Any) -> str:
    if engine is None:
        return "no engine"
    if isinstance(engine, dict):
        keys = ("backend", "device", "precision")
        return " ".join(str(engine[k]) for k in keys if engine.get(k)) or str(engine)
    return str(engine)
