"""The import rule of docs/architecture.md: the viewer imports only streamer's light modules."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {"streamer", "streamer.protocol", "streamer.net", "streamer.security", "streamer.stats",
           "streamer.worker"}


def test_the_viewer_imports_only_streamers_light_modules():
    code = ("import json, sys; import viewer.app, viewer.window, viewer.receiver; "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen",
                                           "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    ours = {m for m in modules if m.split(".")[0] in ("streamer", "engines", "noise2atom", "torch")}
    assert ours - ALLOWED == set(), f"the viewer pulled in {sorted(ours - ALLOWED)}"
    assert ALLOWED <= ours  # the rule is exercised, not vacuous
