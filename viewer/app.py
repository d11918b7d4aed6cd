"""``n2a-view``: the live viewer for ``n2a-stream``'s output.

Examples
--------
``n2a-view --port 5556`` subscribes to ``tcp://127.0.0.1:5556``; ``n2a-view --source
microscope-pc:5556`` to another machine. ``--screenshot viewer.png --screenshot-after 50`` saves
the window after 50 displayed frames and quits (works offscreen: ``QT_QPA_PLATFORM=offscreen``).
``n2a-view --port 5556 --curve-keys keys/`` connects to ``n2a-stream --curve-keys keys/`` as an
authenticated CURVE client (it reads ``keys/viewer/server.key`` and ``keys/viewer/client.key_secret``).
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

__all__ = ["build_parser", "main", "source_address"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="n2a-view", description="Live viewer for n2a-stream's output: raw and "
                                "denoised frames, rolling CSS, latency, drops.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int, help="n2a-stream's output port on --host")
    where.add_argument("--source", help="HOST:PORT or a ZeroMQ endpoint (tcp://HOST:PORT)")
    p.add_argument("--host", default="127.0.0.1", help="host for --port (default: %(default)s)")
    p.add_argument("--curve-keys", type=Path, metavar="DIR",
                   help="connect as a CURVE client of n2a-stream --curve-keys DIR: reads DIR/viewer/server.key "
                        "and DIR/viewer/client.key_secret (mode 0600; made by n2a-stream --make-keys DIR)")
    p.add_argument("--silence-timeout", type=float, default=5.0, metavar="S",
                   help="seconds without messages before showing 'waiting' again (default: %(default)s)")
    p.add_argument("--refresh-ms", type=int, default=10,
                   help="pause between display updates in ms (default: %(default)s)")
    p.add_argument("--history", type=int, default=600, help="frames in the CSS plot (default: %(default)s)")
    p.add_argument("--snapshot-dir", type=Path, default=Path("n2a-snapshots"),
                   help="folder for snapshots (default: %(default)s)")
    p.add_argument("--colormap", default="grey", help="initial colour map (grey, viridis, inferno, magma, cividis)")
    p.add_argument("--size", default="1400x900", help="window size WxH (default: %(default)s)")
    p.add_argument("--screenshot", type=Path, metavar="PNG", help="save the window as PNG and quit ...")
    p.add_argument("--screenshot-after", type=int, default=30, metavar="N",
                   help="... after N displayed frames (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="quit after S seconds (with --screenshot: fail if no screenshot by then)")
    return p


def source_address(args: argparse.Namespace) -> str:
    """The ZeroMQ endpoint the arguments name."""
    from viewer.receiver import normalise_address

    if args.source is not None:
        return normalise_address(args.source)
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535 (got {args.port})")
    return normalise_address(f"{args.host}:{args.port}")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise ValueError(f"--size must be WxH like 1400x900 (got {text!r})") from e
    return w, h


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from streamer.security import CurveKeys
    from viewer.receiver import FrameReceiver

    try:
        address = source_address(args)
        width, height = _parse_size(args.size)
        curve = None if args.curve_keys is None else CurveKeys.load_client(args.curve_keys)
    except ValueError as e:  # CurveKeyError is a ValueError
        print(f"n2a-view: {e}", file=sys.stderr)
        return 2

    import pyqtgraph as pg
    from PySide6 import QtCore

    from viewer.widgets import COLORMAPS
    from viewer.window import ViewerWindow

    if args.colormap not in COLORMAPS:
        print(f"n2a-view: --colormap must be one of {COLORMAPS} (got {args.colormap!r})", file=sys.stderr)
        return 2
    app = pg.mkQApp("n2a-view")
    result = {"rc": 0}
    with FrameReceiver(address=address, curve=curve) as receiver:
        window = ViewerWindow(source=receiver, refresh_ms=args.refresh_ms,
                              silence_timeout_s=args.silence_timeout, history=args.history,
                              snapshot_dir=args.snapshot_dir)
        window.set_colormap(args.colormap)
        window.resize(width, height)
        if args.screenshot is not None:
            def grab(n: int) -> None:
                if n >= args.screenshot_after:
                    window.frame_shown.disconnect(grab)
                    # One more update so the status bar shows this frame's numbers, then grab.
                    QtCore.QTimer.singleShot(300, lambda: _save_and_quit(window, args.screenshot, app))
            window.frame_shown.connect(grab)
        if args.timeout is not None:
            def give_up() -> None:
                if args.screenshot is not None:
                    print(f"n2a-view: no screenshot after {args.timeout} s "
                          f"({window.frames_shown} frames shown, needed {args.screenshot_after})", file=sys.stderr)
                    result["rc"] = 1
                app.quit()
            QtCore.QTimer.singleShot(int(args.timeout * 1000), give_up)
        # Let Ctrl+C quit: Python only sees signals while the interpreter runs, so wake it up often.
        signal.signal(signal.SIGINT, lambda *_: app.quit())
        wake = QtCore.QTimer()
        wake.timeout.connect(lambda: None)
        wake.start(200)
        window.show()
        app.exec()
        wake.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        window.close()
        window.deleteLater()
        # Delete the widgets while Python and Qt are both alive (avoids a crash at exit).
        QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
    return result["rc"]


def _save_and_quit(window, path: Path, app) -> None:
    window.pull()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().save(str(path), "PNG"):
        print(f"n2a-view: could not write {path}", file=sys.stderr)
    else:
        print(f"n2a-view: saved {path} after {window.frames_shown} frames")
    app.quit()


if __name__ == "__main__":
    sys.exit(main())
