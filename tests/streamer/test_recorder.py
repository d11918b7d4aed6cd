"""Recording under failure: a full disk, a timer flush, stray files, bad records (issue 10 item 4).

The disk-full tests write to a real small file system (a 256 kB tmpfs, mounted when this process
may) or under a real file-size limit (``RLIMIT_FSIZE`` in a subprocess running ``n2a-stream``):
the kernel refuses the write, nothing is simulated.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from stream_testutils import SHAPE, Collector, cli_env, wait_until
from noise2atom.stem_sim import StemSimulator
from streamer.pipeline import Stream
from streamer.protocol import encode_end, encode_frame
from streamer.recorder import Recorder, read_recording
from streamer.replay import Replay

N_FRAMES = 120


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    sim = StemSimulator(shape=SHAPE, seed=seed)
    return [sim.frame(t).noisy for t in range(n)]


@pytest.fixture
def small_disk(tmp_path):
    """A 256 kB tmpfs (skipped where this process may not mount one)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8) (the RLIMIT_FSIZE test covers this)")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (got: {p.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_turns_recording_off_and_denoising_goes_on(zmq_ctx, lite_model, small_disk,
                                                             caplog):
    rec_dir = small_disk / "rec"
    rec_dir.mkdir()
    (rec_dir / "raw-notes.n2arec").write_text("a stray file someone left here\n")
    frames = _frames(N_FRAMES)
    caplog.set_level(logging.ERROR, logger="streamer.recorder")
    with Replay(frames=frames, fps=40, series="full", wait_subscribers=1,
                wait_timeout_s=30) as replay:
        stream = Stream(source=replay.bind(), model=lite_model, engine="onnxruntime",
                        record=rec_dir, max_queue=N_FRAMES).start()
        col = Collector(zmq_ctx, stream.out_endpoint)
        try:
            wait_until(lambda: stream.subscriptions >= 1, 20, "the test subscriber to join")
            replay.start()
            wait_until(lambda: stream.recorder.error is not None, 60, "the disk to fill")
            col.wait_for(lambda: any(m.type == "end" for m in col.messages), 60, "the end message")
        finally:
            summary = stream.stop()  # must not raise
            col.stop()
        replay.join(5)
    # Denoising went on after the disk filled: every frame came out.
    assert [m.seq for m in col.frames] == list(range(N_FRAMES))
    assert summary["published"] == N_FRAMES
    # Recording stopped loudly, once, naming the directory and the OS error.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(rec_dir) in errors[0] and "No space left" in errors[0], errors
    assert "No space left" in summary["recording_error"] and str(rec_dir) in summary["recording_error"]
    text = stream.summary_text(summary)
    assert "RECORDING STOPPED" in text and "No space left" in text
    # The summary's counts are exactly what the reader finds on disk.
    rec = read_recording(rec_dir)
    assert 0 < summary["recorded"]["raw"] < N_FRAMES
    assert len(rec.raw) == summary["recorded"]["raw"]
    assert len(rec.denoised) == summary["recorded"]["denoised"]
    assert summary["not_recorded"]["raw"] > 0
    assert summary["recorded"]["raw"] + summary["not_recorded"]["raw"] == N_FRAMES + 2  # start, end
    raw = rec.frames("raw")
    assert [m.seq for m in raw] == list(range(len(raw)))
    for m in raw:
        np.testing.assert_array_equal(m.frame, frames[m.seq])


_LIMITED_STREAM = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit raises EFBIG instead
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from streamer.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_file_size_limit_n2a_stream_exits_0_with_the_recording_error_in_its_summary(
        zmq_ctx, lite_model, tmp_path):
    from engines.export import export_onnx

    export_onnx(lite_model)  # cached here, so the limited process only reads it
    rec_dir = tmp_path / "rec"
    frames = _frames(N_FRAMES, seed=1)
    with Replay(frames=frames, fps=40, series="limit", wait_subscribers=1,
                wait_timeout_s=60) as replay:
        p = subprocess.Popen(
            [sys.executable, "-c", _LIMITED_STREAM, str(100_000), "--source", replay.bind(),
             "--out-port", "0", "--model", str(lite_model), "--engine", "onnxruntime",
             "--record", str(rec_dir), "--max-queue", str(N_FRAMES),
             "--exit-on-end", "--status-interval", "0"],
            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            import re

            seen: list[str] = []
            while not (m := re.search(r"-> (tcp://\S+)", seen[-1] if seen else "")):
                seen.append(p.stderr.readline())
                assert seen[-1], "".join(seen)
            col = Collector(zmq_ctx, m.group(1))
            replay.start()
            _, err = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        col.stop()
    assert p.returncode == 0, err
    assert "Traceback" not in err, err
    assert err.count("RECORDING STOPPED") == 2, err  # the log line and the summary line
    summary = json.loads(err.split("n2a-stream summary: ", 1)[1].splitlines()[0])
    assert "File too large" in summary["recording_error"]
    assert summary["published"] == N_FRAMES
    rec = read_recording(rec_dir)
    assert len(rec.raw) == summary["recorded"]["raw"] > 0
    assert len(rec.denoised) == summary["recorded"]["denoised"]
    assert summary["not_recorded"]["raw"] + summary["not_recorded"]["denoised"] > 0
    assert all(p.stat().st_size <= 100_000 for p in rec_dir.iterdir())


def test_the_timer_flushes_the_last_records_without_a_further_write(tmp_path):
    rec = Recorder(tmp_path, flush_every=1000, flush_interval_s=0.2)
    try:
        for i in range(3):
            rec.write("raw", encode_frame(np.full((8, 8), i, np.uint16), seq=i, series="t",
                                          t_acq_ns=i))
        rec.write("raw", encode_end(series="t", last_seq=2, n_frames=3))
        # Nothing else is written: only the timer can hand these records to the OS.
        wait_until(lambda: any(tmp_path.glob("raw-*")) and len(read_recording(tmp_path).raw) == 4, 20,
                   "the buffered records and the end to reach the file")
        assert read_recording(tmp_path).raw[-1].type == "end"
    finally:
        rec.close()


def test_two_writer_threads_and_the_timer_keep_every_record_intact(tmp_path):
    rec = Recorder(tmp_path, flush_every=7, flush_interval_s=0.01, chunk_bytes=50_000)
    n = 300

    def writer(kind: str, seed: int) -> None:
        for i in range(n):
            f = np.full((24, 24), (i * seed) % 60000, np.uint16)
            rec.write(kind, encode_frame(f, seq=i, series=kind, t_acq_ns=i))

    threads = [threading.Thread(target=writer, args=(k, s)) for k, s in (("raw", 3), ("denoised", 5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    rec.close()
    assert rec.counts() == {"raw": n, "denoised": n} and rec.error is None
    r = read_recording(tmp_path)
    assert r.truncated == {} and r.skipped == 0
    for kind, seed in (("raw", 3), ("denoised", 5)):
        got = r.frames(kind)
        assert [m.seq for m in got] == list(range(n))
        assert all(int(m.frame[0, 0]) == (m.seq * seed) % 60000 for m in got)


def test_a_stray_file_in_the_recording_folder_is_left_alone(tmp_path):
    (tmp_path / "raw-notes.n2arec").write_text("not a chunk")
    (tmp_path / "denoised-.n2arec").write_bytes(b"")
    (tmp_path / "raw-00004.n2arec.bak").write_bytes(b"x")
    with Recorder(tmp_path) as rec:
        rec.write("raw", encode_frame(np.zeros((4, 4), np.uint16), seq=0, series="s", t_acq_ns=0))
    r = read_recording(tmp_path)
    assert [m.seq for m in r.frames()] == [0] and r.truncated == {}
    assert (tmp_path / "raw-notes.n2arec").read_text() == "not a chunk"


def test_read_recording_skips_and_reports_bad_records(tmp_path):
    with Recorder(tmp_path, flush_every=1) as rec:
        for i in range(6):
            rec.write("raw", encode_frame(np.full((16, 16), i, np.uint16), seq=i, series="s",
                                          t_acq_ns=i))
        rec.write("raw", [b"not a protocol message"])  # a good record whose content is not
        rec.write("raw", encode_frame(np.full((16, 16), 6, np.uint16), seq=6, series="s",
                                      t_acq_ns=6))
    (chunk,) = sorted(tmp_path.glob("raw-*.n2arec"))
    data = bytearray(chunk.read_bytes())
    size = (len(data) - (8 + 8 + len(b"not a protocol message") + 4)) // 7  # the frame records
    data[size + size // 2] ^= 0xFF          # record 1: a flipped bit in its payload (CRC)
    data[3 * size:3 * size + 4] = b"XXXX"   # record 3: a broken header
    chunk.write_bytes(bytes(data))
    r = read_recording(tmp_path)
    assert [m.seq for m in r.frames()] == [0, 2, 4, 5, 6]
    why = r.truncated[chunk.name]
    assert "CRC mismatch" in why and "bad magic" in why and "not a valid message" in why
    assert r.skipped == 3


def test_disk_full_mid_record_in_a_tiny_tmpfs_keeps_what_was_whole(small_disk):
    """The Recorder alone: close() after a failed write does not raise; the torn tail is reported."""
    rec = Recorder(small_disk, flush_every=1)
    frame = np.arange(100 * 100, dtype=np.uint16).reshape(100, 100)  # ~20 kB records
    for i in range(30):
        rec.write("raw", encode_frame(frame, seq=i, series="s", t_acq_ns=i))
    rec.close()
    assert rec.error is not None and "No space left" in rec.error
    n = rec.counts()["raw"]
    assert 0 < n < 30 and n + rec.not_recorded()["raw"] == 30
    r = read_recording(small_disk)
    assert [m.seq for m in r.frames()] == list(range(n))


def test_large_records_are_written_at_once_and_read_back_exactly(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 65535, (1024, 768), dtype=np.uint16)
              for i in range(3)]  # 1.5 MB each: written from the caller's buffers, not copied
    with Recorder(tmp_path, flush_every=1000, flush_interval_s=60) as rec:
        rec.write("raw", encode_frame(np.zeros((4, 4), np.uint16), seq=0, series="s", t_acq_ns=0))
        for i, f in enumerate(frames, 1):
            rec.write("raw", encode_frame(f, seq=i, series="s", t_acq_ns=i))
            assert rec.counts()["raw"] == i + 1
    r = read_recording(tmp_path)
    assert [m.seq for m in r.frames()] == [0, 1, 2, 3] and r.truncated == {}
    for m, f in zip(r.frames()[1:], frames):
        np.testing.assert_array_equal(m.frame, f)
