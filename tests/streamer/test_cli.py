"""The console scripts: n2a-stream (bad input, SIGTERM), n2a-replay, and the demo, as subprocesses."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from stream_testutils import SHAPE, Collector, cli_env
from noise2atom.stem_sim import StemSimulator
from streamer.cli import main as stream_main
from streamer.recorder import read_recording
from streamer.replay import Replay
from streamer.replay import main as replay_main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], r"an input is required: --port PORT or --source ADDR \(got neither\)"),
        (["--port", "70000"], r"expected a port number 0..65535 \(got 70000\)"),
        (["--port", "x"], r"expected a port number 0..65535 \(got 'x'\)"),
        (["--port", "5555", "--source", "tcp://a:1"], r"not both"),
        (["--source", "tcp://127.0.0.1:5"], r"--out-port is required with --source"),
        (["--port", "5555", "--policy", "block"], r"policy 'block' needs pattern 'pull'.*\(got "
                                                  r"pattern 'sub'\)"),
        (["--port", "5555", "--max-queue", "0"], r"expected a positive integer \(got 0\)"),
        (["--port", "5555", "--model", "/nonexistent.safetensors"],
         r"no such checkpoint file \(got /nonexistent.safetensors\)"),
        (["--port", "5555", "--pattern", "req"], r"invalid choice: 'req'"),
        (["--port", "5555", "--denoise-delay-ms", "-1"], r"must be >= 0 \(got -1.0\)"),
        (["--port", "5555", "--curve-keys", "/nonexistent"], r"expected a directory"),
    ],
)
def test_stream_cli_rejects_bad_input(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        stream_main(argv)
    assert info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_stream_cli_reports_an_unusable_model(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert stream_main(["--port", "5555", "--out-port", "0", "--model", str(bad),
                        "--engine", "onnxruntime", "--status-interval", "0"]) == 2
    assert "n2a-stream: cannot start:" in capsys.readouterr().err


def test_replay_cli_rejects_bad_input(capsys):
    for argv, message in (([], r"one of the arguments --file --simulate is required"),
                          (["--simulate", "--fps", "-1"], r"--fps must be >= 0 \(got -1.0\)"),
                          (["--simulate", "--size", "4"], r"at least 8x8 \(got \(4, 4\)\)")):
        with pytest.raises(SystemExit) as info:
            replay_main(argv)
        assert info.value.code == 2
        assert re.search(message, capsys.readouterr().err)


def test_replay_cli_prints_its_real_port_and_publishes(zmq_ctx):
    import zmq

    p = subprocess.Popen([sys.executable, "-m", "streamer.replay", "--simulate", "--size", "32",
                          "--port", "0", "--count", "5", "--fps", "50", "--wait-subscribers", "1",
                          "--wait-timeout", "20"], env=cli_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(p.stdout.readline())
        assert first["pattern"] == "pub" and first["port"] > 0
        assert first["endpoint"] == f"tcp://127.0.0.1:{first['port']}"
        sub = zmq_ctx.make(zmq.SUB)
        sub.connect(first["endpoint"])
        sub.subscribe(b"")
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["sent"] == 5


def _stream_proc(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streamer.cli", *args], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_stops_cleanly_with_summary_and_a_complete_recording(zmq_ctx, lite_model,
                                                                     tmp_path):
    """A slow engine, SIGTERM mid-stream: exit 0, summary, every received raw frame recorded."""
    sim = StemSimulator(shape=SHAPE, seed=4)
    frames = [sim.frame(t).noisy for t in range(400)]
    with Replay(frames=frames, fps=25, series="term", wait_subscribers=1,
                wait_timeout_s=60) as replay:
        p = _stream_proc("--source", replay.bind(), "--out-port", "0", "--model", str(lite_model),
                         "--engine", "onnxruntime", "--denoise-delay-ms", "100",
                         "--record", str(tmp_path / "rec"), "--status-interval", "0.5")
        try:
            seen = []
            while not (m := re.search(r"-> (tcp://\S+)", seen[-1] if seen else "")):
                seen.append(p.stderr.readline())  # skips library warnings before the banner
                assert seen[-1], "".join(seen)
            col = Collector(zmq_ctx, m.group(1))
            replay.start()
            col.wait_for(lambda: len(col.frames) >= 10, 60, "denoised frames")
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        time.sleep(0.3)
        col.stop()
    assert p.returncode == 0, err
    assert "in " in err and "fps" in err  # status lines were printed
    summary = json.loads(err.split("n2a-stream summary: ", 1)[1].splitlines()[0])
    assert summary["frames_in"] > summary["published"] > 0
    assert summary["frames_in"] == (summary["published"] + summary["dropped"]
                                    + summary["dropped_at_stop"])
    assert len(col.frames) == summary["published"]
    assert summary["recorded"]["raw"] >= summary["frames_in"]
    rec = read_recording(tmp_path / "rec")
    assert rec.truncated == {}
    raw = rec.frames("raw")
    assert [m.seq for m in raw] == list(range(summary["frames_in"]))
    for m in raw:
        np.testing.assert_array_equal(m.frame, frames[m.seq])
    assert len(rec.frames("denoised")) == summary["published"]


def test_demo_runs_headless_and_ends_by_itself(lite_model):
    p = subprocess.run([sys.executable, "-m", "streamer.demo", "--frames", "30", "--size", "64",
                        "--fps", "15", "--headless", "--model", str(lite_model)],
                       env=cli_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    m = re.search(r"demo summary: (\d+) of 30 frames denoised, (\d+) dropped, 0 lost", p.stdout)
    assert m, p.stdout
    assert int(m.group(1)) > 0 and int(m.group(1)) + int(m.group(2)) == 30
    assert re.search(r"mean CSS raw \d\.\d+ -> denoised \d\.\d+", p.stdout)
