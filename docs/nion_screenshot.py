"""Take docs/nion-swift.png: Swift scanning the usim simulated microscope, raw and n2a side by side.

Runs the real Swift application (its PySide6 front end), with Nion's simulated microscope
(nionswift-usim) and the n2a plug-in loaded by Swift's own plug-in manager, and a real
``n2a-stream`` (bundled model, ONNX Runtime) as a subprocess. It starts a 256x256 scan, waits until
the denoised data item has been updated a few times, lays the window out as two panels (raw | n2a),
grabs the window and quits. Swift's profile and library go into a temporary HOME.

    xvfb-run -a -s "-screen 0 1400x900x24" python docs/nion_screenshot.py [--out FILE.png]

(needs ``pip install -e '.[nion]'``; under Xvfb Qt uses its xcb platform, as on a desktop.)
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIDE = 256
MIN_SHOWN = 8  # denoised frames shown in Swift before the picture is taken


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "nion-swift.png")
    p.add_argument("--timeout", type=float, default=240.0, help="give up after this many seconds")
    args = p.parse_args(argv)

    home = tempfile.mkdtemp(prefix="n2a-swift-home-")
    os.environ["HOME"] = home  # Swift's profile, library and settings: not the user's
    os.environ.setdefault("XDG_RUNTIME_DIR", home)
    port, out_port = _free_port(), _free_port()
    os.environ["N2A_LIVE_ADDRESS"] = f"tcp://127.0.0.1:{port}"
    os.environ["N2A_LIVE_OUTPUT"] = f"tcp://127.0.0.1:{out_port}"
    sys.path.insert(0, str(REPO))

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    stream_log = open(Path(home) / "n2a-stream.log", "w")
    stream = subprocess.Popen([sys.executable, "-m", "streamer.cli", "--port", str(port),
                               "--out-port", str(out_port), "--engine", "onnxruntime"],
                              env=env, cwd=REPO, stdout=stream_log, stderr=subprocess.STDOUT)
    try:
        return _run_swift(args.out, args.timeout)
    finally:
        stream.terminate()
        stream.wait(30)
        stream_log.close()


def _run_swift(out: Path, timeout: float) -> int:
    from nion.instrumentation import HardwareSource
    from nion.swift import Workspace
    from nion.utils import Geometry
    from nionui_app.nionswift.main import main as swift_main
    from PySide6 import QtCore, QtWidgets

    # {"qt": ...} picks nionui's PySide6 proxy (nion.swift.command passes {"pyqt": None}, which
    # nionui 10.2 does not know: the `nionswift` command fails without nionswift-tool).
    app = swift_main(["nionui_app.nionswift"], {"qt": None})
    t0 = time.monotonic()
    state = {"step": "wait_window", "result": 1}

    def finish(code: int, message: str) -> None:
        print(message, flush=True)
        state["result"] = code
        state["step"] = "done"
        app.exit()

    def tick() -> None:
        try:
            _tick()
        except Exception as e:  # noqa: BLE001 - the script reports and quits
            import traceback
            traceback.print_exc()
            finish(1, f"screenshot failed: {e}")
        if state["step"] != "done":
            QtCore.QTimer.singleShot(200, tick)

    def _tick() -> None:
        if time.monotonic() - t0 > timeout:
            print("windows:", [(type(w).__name__, getattr(w, "title", None)) for w in app.windows])
            QtWidgets.QApplication.primaryScreen().grabWindow(0).save(str(out) + ".failed.png")
            finish(1, f"screenshot: gave up after {timeout} s in step {state['step']}")
            return
        controllers = [w for w in app.document_controllers if hasattr(w, "document_model")]
        if not controllers:
            if not state.get("project"):  # a fresh profile: Swift asks for a project; make one
                state["project"] = True
                app._close_dialogs()
                app.create_project_reference(Path(os.environ["HOME"]) / "n2a-demo", "n2a demo")
            return
        dc = controllers[0]
        dm = dc.document_model
        hs = HardwareSource.HardwareSourceManager().get_hardware_source_for_hardware_source_id(
            "usim_scan_device")
        if state["step"] == "wait_window":
            if hs is None:
                return
            window = max(QtWidgets.QApplication.topLevelWidgets(),
                         key=lambda w: w.width() * w.height())
            window.move(0, 0)
            window.resize(1400, 860)  # no window manager under Xvfb: size the window ourselves
            params = hs.get_current_frame_parameters()
            params.size = Geometry.IntSize(SIDE, SIDE)
            hs.start_playing(frame_parameters=params)
            state["step"] = "wait_denoised"
        elif state["step"] == "wait_denoised":
            item = dm.get_data_item_reference("n2a_usim_scan_device_a").data_item
            if item is None or item.metadata.get("n2a", {}).get("seq", -1) < MIN_SHOWN:
                return
            raw = dm.get_data_item_reference("usim_scan_device_a").data_item
            wc = dc.workspace_controller
            layout = Workspace.create_splitter_desc(
                "vertical", [0.5, 0.5],
                [Workspace.create_image_desc(), Workspace.create_image_desc()])
            wc.change_workspace(wc.new_workspace("n2a live", layout))
            panels = wc.display_panels
            panels[0].set_display_panel_display_item(dm.get_display_item_for_data_item(raw))
            panels[1].set_display_panel_display_item(dm.get_display_item_for_data_item(item))
            state["step"], state["shot_at"] = "settle", item.metadata["n2a"]["seq"] + 8
        elif state["step"] == "settle":
            item = dm.get_data_item_reference("n2a_usim_scan_device_a").data_item
            if item.metadata["n2a"]["seq"] < state["shot_at"]:
                return
            window = QtWidgets.QApplication.activeWindow() or max(
                QtWidgets.QApplication.topLevelWidgets(), key=lambda w: w.width() * w.height())
            out.parent.mkdir(parents=True, exist_ok=True)
            ok = window.grab().save(str(out))
            n2a = item.metadata["n2a"]
            hs.stop_playing()
            finish(0 if ok else 1, json.dumps({"saved": str(out), "ok": ok, "title": item.title,
                                               "seq": n2a["seq"], "css": n2a["css"],
                                               "dropped": n2a["dropped"],
                                               "platform": QtWidgets.QApplication.platformName()}))

    start = app.start

    def start_then_drive() -> bool:  # Swift's Qt application exists only once run() starts it
        started = start()
        QtCore.QTimer.singleShot(500, tick)
        return started

    app.start = start_then_drive
    app.run()
    return state["result"]


if __name__ == "__main__":
    sys.exit(main())
