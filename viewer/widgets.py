"""The viewer's building blocks: an image panel with its histogram, and the rolling CSS plot."""
from __future__ import annotations

import collections
import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

__all__ = ["COLORMAPS", "FrameImageItem", "ImagePanel", "CssPlot", "robust_levels", "colormap", "format_value"]

#: Colour maps offered in the viewer; "grey" first (the default for STEM images).
COLORMAPS = ("grey", "viridis", "inferno", "magma", "cividis")

RAW_PEN = (255, 160, 60)
DENOISED_PEN = (80, 200, 255)


def colormap(name: str) -> pg.ColorMap:
    """The pyqtgraph colour map called `name` (one of `COLORMAPS`)."""
    if name not in COLORMAPS:
        raise ValueError(f"colour map must be one of {COLORMAPS} (got {name!r})")
    if name == "grey":
        return pg.ColorMap(pos=[0.0, 1.0], color=[(0, 0, 0), (255, 255, 255)], name="grey")
    return pg.colormap.get(name)


def robust_levels(image: np.ndarray, *, low: float = 0.1, high: float = 99.9,
                  max_samples: int = 256 * 256) -> tuple[float, float]:
    """Display levels from percentiles of a subsample, so a few hot pixels do not wash it out.

    Examples
    --------
    >>> robust_levels(np.arange(1000, dtype=np.float32).reshape(10, 100), low=0, high=100)
    (0.0, 999.0)
    >>> robust_levels(np.zeros((4, 4), np.uint16))
    (0.0, 1.0)
    """
    step = max(1, int(math.ceil(math.sqrt(image.size / max_samples))))
    sample = np.asarray(image[::step, ::step], dtype=np.float64)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(finite, [low, high]))
    if not hi > lo:
        hi = lo + 1.0
    return (lo, hi)


def format_value(value: float | int) -> str:
    """A pixel value for the readout: integers as they are, floats with 4 significant digits."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.4g}"


class FrameImageItem(pg.ImageItem):
    """An `ImageItem` whose rendering cost follows the screen, not the frame, and that counts renders.

    When the view shows fewer screen pixels than the image has, it converts only every k-th row and
    column (k = image pixels per screen pixel, rounded down) to a QImage and lets Qt stretch it over
    the full-size rectangle. Qt's default (non-smooth) scaling samples nearest pixels anyway, so the
    picture is the same while the LUT and the draw touch k² times fewer pixels. Zooming in re-renders
    at full resolution. `image` always holds the full frame (readout, histogram, snapshot use it).
    `renders` lets tests and benchmarks prove that frames were really drawn.
    """

    def __init__(self, *args, **kwargs) -> None:
        self.renders = 0
        self._stride = 1
        super().__init__(*args, **kwargs)

    def _screen_stride(self) -> int:
        xds, yds = self._computeDownsampleFactors()
        return max(1, min(int(xds), int(yds)))

    def render(self, *args, **kwargs):
        self.renders += 1
        full = self.image
        self._stride = k = self._screen_stride() if full is not None else 1
        if k > 1:
            self.image = full[::k, ::k]
        try:
            return super().render(*args, **kwargs)
        finally:
            self.image = full

    def viewTransformChanged(self) -> None:
        super().viewTransformChanged()
        if self.image is not None and self._screen_stride() != self._stride:
            self._renderRequired = True
            self.update()


class ImagePanel(pg.GraphicsLayoutWidget):
    """One image (row-major, row 0 at the top) with a title and a histogram / contrast control.

    Levels stay fixed between frames (no flicker); `auto_levels` recomputes them on demand, and
    `set_image(..., reset_levels=True)` does so for the first frame of a series.
    """

    def __init__(self, *, title: str, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.title = title
        self._title = self.addLabel(title, row=0, col=0, colspan=2, size="12pt")
        self.view: pg.ViewBox = self.addViewBox(row=1, col=0)
        self.view.setAspectLocked(True)
        self.view.invertY(True)
        self.image_item = FrameImageItem(axisOrder="row-major")
        self.view.addItem(self.image_item)
        self.histogram = pg.HistogramLUTItem(image=self.image_item)
        # The histogram is recomputed on request (a few times a second), not on every new frame.
        self.image_item.sigImageChanged.disconnect(self.histogram.imageChanged)
        self.addItem(self.histogram, row=1, col=1)
        self.set_colormap("grey")

    @property
    def image(self) -> np.ndarray | None:
        """The array the image item shows (the very array passed to `set_image`)."""
        return self.image_item.image

    def set_image(self, image: np.ndarray, *, reset_levels: bool = False) -> None:
        """Show `image` with the current levels, or with fresh robust levels when `reset_levels`."""
        if reset_levels or self.image_item.levels is None:
            lo, hi = robust_levels(image)
            self.image_item.setImage(image, autoLevels=False, levels=(lo, hi))
            self.histogram.setLevels(lo, hi)
            self.view.autoRange(padding=0.0)
        else:
            self.image_item.setImage(image, autoLevels=False)

    def refresh_histogram(self) -> None:
        """Recompute the histogram of the current image (levels unchanged)."""
        if self.image is not None:
            self.histogram.imageChanged(autoLevel=False)

    def auto_levels(self) -> None:
        """Fit the levels to the current image (robust percentiles)."""
        image = self.image
        if image is None:
            return
        lo, hi = robust_levels(image)
        self.histogram.setLevels(lo, hi)
        self.refresh_histogram()

    def levels(self) -> tuple[float, float] | None:
        """The current display levels."""
        lv = self.image_item.levels
        return None if lv is None else (float(lv[0]), float(lv[1]))

    def set_colormap(self, name: str) -> None:
        """Apply one of `COLORMAPS`."""
        self.histogram.gradient.setColorMap(colormap(name))
        self.colormap_name = name

    def set_title(self, text: str) -> None:
        self._title.setText(text)

    def pixel_at(self, scene_pos: QtCore.QPointF) -> tuple[int, int] | None:
        """(row, col) of the image pixel under a scene position, or None outside the image."""
        image = self.image
        if image is None or not self.view.sceneBoundingRect().contains(scene_pos):
            return None
        p = self.view.mapSceneToView(scene_pos)
        row, col = int(math.floor(p.y())), int(math.floor(p.x()))
        if 0 <= row < image.shape[0] and 0 <= col < image.shape[1]:
            return (row, col)
        return None


def _big_label(color: tuple[int, int, int]) -> QtWidgets.QLabel:
    label = QtWidgets.QLabel("–")
    font = label.font()
    font.setPointSize(22)
    font.setBold(True)
    label.setFont(font)
    label.setStyleSheet("color: rgb(%d, %d, %d);" % color)
    return label


class CssPlot(QtWidgets.QWidget):
    """Rolling CSS of the raw and the denoised stream, with the current values in large type.

    Missing values (the first frame of a series has no predecessor) are stored as NaN and leave a gap.
    """

    def __init__(self, *, history: int = 600, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        if history < 2:
            raise ValueError(f"history must be >= 2 frames (got {history})")
        self.history = history
        self._seq: collections.deque[float] = collections.deque(maxlen=history)
        self._raw: collections.deque[float] = collections.deque(maxlen=history)
        self._den: collections.deque[float] = collections.deque(maxlen=history)
        self._last: tuple = (None, None, None, None)

        self.raw_label = _big_label(RAW_PEN)
        self.denoised_label = _big_label(DENOISED_PEN)
        self.mean_label = QtWidgets.QLabel("")
        self.mean_label.setStyleSheet("color: gray;")
        values = QtWidgets.QVBoxLayout()
        values.addWidget(QtWidgets.QLabel("CSS (consecutive-frame SSIM)"))
        values.addWidget(self.denoised_label)
        values.addWidget(self.raw_label)
        values.addWidget(self.mean_label)
        values.addStretch(1)

        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", "frame")
        self.plot.setLabel("left", "CSS")
        # CSS is an SSIM of images mapped to [0, 1]: a fixed 0..1 axis reads at a glance (and its
        # ticks need no regeneration as values move).
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setYRange(0.0, 1.0, padding=0.02)
        self.plot.enableAutoRange(axis="y", enable=False)
        # No grid: grid lines are painted with the axes, and cost more than everything else here.
        self.plot.addLegend(offset=(10, 5))
        self.denoised_curve = self.plot.plot([], [], pen=pg.mkPen(DENOISED_PEN, width=2), name="denoised")
        self.raw_curve = self.plot.plot([], [], pen=pg.mkPen(RAW_PEN, width=2), name="raw")

        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(values, 0)
        layout.addWidget(self.plot, 1)

    def append(self, *, seq: int, css_raw: float | None, css: float | None,
               css_mean: float | None = None, css_raw_mean: float | None = None,
               refresh: bool = True) -> None:
        """Add one frame's values; with `refresh`, redraw the curves and the big labels."""
        self._seq.append(float(seq))
        self._raw.append(math.nan if css_raw is None else float(css_raw))
        self._den.append(math.nan if css is None else float(css))
        self._last = (css, css_raw, css_mean, css_raw_mean)
        if refresh:
            self.refresh()

    def refresh(self) -> None:
        """Redraw the curves and the big labels from the stored values."""
        css, css_raw, css_mean, css_raw_mean = self._last
        x = np.fromiter(self._seq, dtype=np.float64, count=len(self._seq))
        self.raw_curve.setData(x, np.fromiter(self._raw, np.float64, len(self._raw)), connect="finite")
        self.denoised_curve.setData(x, np.fromiter(self._den, np.float64, len(self._den)), connect="finite")
        self.denoised_label.setText(f"denoised {_fmt_css(css)}")
        self.raw_label.setText(f"raw {_fmt_css(css_raw)}")
        self.mean_label.setText(f"rolling mean: denoised {_fmt_css(css_mean)}, raw {_fmt_css(css_raw_mean)}")

    def clear(self) -> None:
        """Forget the history (a new series starts)."""
        for d in (self._seq, self._raw, self._den):
            d.clear()
        self.raw_curve.setData([], [])
        self.denoised_curve.setData([], [])
        self.raw_label.setText("raw –")
        self.denoised_label.setText("denoised –")
        self.mean_label.setText("")

    def data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(frame numbers, raw CSS, denoised CSS) currently in the plot."""
        return (np.array(self._seq), np.array(self._raw), np.array(self._den))


def _fmt_css(value: float | None) -> str:
    return "–" if value is None else f"{float(value):.3f}"
