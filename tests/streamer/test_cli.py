"""The console scripts: n2a-stream (bad input, SIGTERM), n2a-replay, and the demo, as subprocesses."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from stream_testutils import PATIENCE, SHAPE, Collector, LineReader, cli_env
from noise2atom.stem_sim import StemSimulator
from streamer.cli import main as stream_main
from streamer.recorder import read_recording
from streamer.replay import Replay
from streamer.replay_cli import main as replay_main


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

    p = subprocess.Popen([sys.executable, "-m", "streamer.replay_cli", "--simulate", "--size", "32",
                          "--port", "0", "--count", "5", "--fps", "50", "--wait-subscribers", "1",
                          "--wait-timeout", str(int(PATIENCE))], env=cli_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(p.stdout.readline())
        assert first["pattern"] == "pub" and first["port"] > 0
        assert first["endpoint"] == f"tcp://127.0.0.1:{first['port']}"
        sub = zmq_ctx.make(zmq.SUB)
        sub.connect(first["endpoint"])
        sub.subscribe(b"")
        out, err = p.communicate(timeout=2 * PATIENCE)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["sent"] == 5


def _stream_proc(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streamer.cli", *args], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(900)  # a subprocess that exports its model: minutes on a loaded machine
def test_sigterm_stops_cleanly_with_summary_and_a_complete_recording(zmq_ctx, lite_model,
                                                                     tmp_path):
    """A slow engine, SIGTERM mid-stream: exit 0, summary, every received raw frame recorded."""
    sim = StemSimulator(shape=SHAPE, seed=4)
    frames = [sim.frame(t).noisy for t in range(400)]
    status = re.compile(r"^in +\d+\.\d fps \| out +\d+\.\d fps \| .*frames (\d+)/(\d+) \|")
    with Replay(frames=frames, fps=25, series="term", wait_subscribers=1,
                wait_timeout_s=PATIENCE) as replay:
        p = _stream_proc("--source", replay.bind(), "--out-port", "0", "--model", str(lite_model),
                         "--engine", "onnxruntime", "--denoise-delay-ms", "100",
                         "--record", str(tmp_path / "rec"), "--status-interval", "0.5")
        col = None
        stderr = LineReader(p.stderr)
        try:
            # The banner names the output endpoint (library warnings may come before it).
            banner = stderr.wait_for_line(lambda line: re.search(r"-> (tcp://\S+)", line),
                                          5 * PATIENCE, "the banner")
            col = Collector(zmq_ctx, re.search(r"-> (tcp://\S+)", banner).group(1))
            replay.start()
            col.wait_for(lambda: len(col.frames) >= 10, 2 * PATIENCE, "denoised frames")
            # A status line that counts published frames: the status lines are really printed.
            stderr.wait_for_line(lambda line: (m := status.search(line)) and int(m.group(1)) > 0,
                                 PATIENCE, "a status line with published frames")
            p.send_signal(signal.SIGTERM)
            p.wait(2 * PATIENCE)
            err = stderr.join(PATIENCE)
            assert p.returncode == 0, err
            summary = json.loads(err.split("n2a-stream summary: ", 1)[1].splitlines()[0])
            rec = read_recording(tmp_path / "rec")
            published = [m.seq for m in rec.frames("denoised")]
            assert len(published) == summary["published"]
            # The last frame published before the stop reaches a connected subscriber too.
            col.wait_for(lambda: col.frames and col.frames[-1].seq == published[-1], PATIENCE,
                         f"the last published frame (seq {published[-1]})")
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(PATIENCE)
            stderr.join(PATIENCE)
            p.stdout.close()
            p.stderr.close()
            if col is not None:
                col.stop()
    assert summary["frames_in"] > summary["published"] > 0
    assert summary["frames_in"] == (summary["published"] + summary["dropped"]
                                    + summary["dropped_at_stop"])
    # The subscriber joined while the stream was already running (n2a-stream cannot hold its
    # output for it), so it may miss the first frames: from its first frame on it has every
    # published frame, in order, none twice.
    got = [m.seq for m in col.frames]
    assert got == published[published.index(got[0]):]
    assert summary["recorded"]["raw"] >= summary["frames_in"]
    assert rec.truncated == {}
    raw = rec.frames("raw")
    assert [m.seq for m in raw] == list(range(summary["frames_in"]))
    for m in raw:
        np.testing.assert_array_equal(m.frame, frames[m.seq])


# Three Python processes start here (demo, n2a-replay, n2a-stream with its ONNX export): 15 s on
# a quiet 2-core machine, minutes on a loaded one. The limits only bound a hang.
@pytest.mark.timeout(900)
def test_demo_runs_headless_and_ends_by_itself(lite_model):
    p = subprocess.run([sys.executable, "-m", "streamer.demo", "--frames", "30", "--size", "64",
                        "--fps", "15", "--headless", "--model", str(lite_model)],
                       env=cli_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    m = re.search(r"demo summary: (\d+) of 30 frames denoised, (\d+) dropped, 0 lost", p.stdout)
    assert m, p.stdout
    assert int(m.group(1)) > 0 and int(m.group(1)) + int(m.group(2)) == 30
    assert re.search(r"mean CSS raw \d\.\d+ -> denoised \d\.\d+", p.stdout)
