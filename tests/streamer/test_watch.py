"""n2a-watch over a real folder: files written chunk by chunk, real vendor files, renames, deletes,
garbage, a real SUB socket (and once a real n2a-stream) on loopback."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zmq

from stream_testutils import Collector, cli_env, wait_until
from noise2atom.io import read_frames
from streamer.watch import FolderWatcher, flat_meta, wire_frame

ROOT = Path(__file__).resolve().parents[2]
#: ../shared/data beside the clone (CI), or beside a folder above it (a worktree).
VENDOR = next((p / "shared" / "data" / "vendor_formats" for p in ROOT.parents
               if (p / "shared" / "data" / "vendor_formats").is_dir()), None)
DEADLINE = 60.0  # generous: the machine is shared; every wait ends as soon as its condition holds


def _watch(tmp: Path, ctx, **kw) -> tuple[FolderWatcher, Collector]:
    """A watcher on ``tmp`` (polling fast) and a collecting SUB socket that it has seen join."""
    kw.setdefault("poll_interval_s", 0.05)
    kw.setdefault("reject_after_s", 120.0)  # a paused writer must never get its file rejected
    w = FolderWatcher(tmp, context=ctx.context, wait_subscribers=1, **kw).start()
    col = Collector(ctx, w.endpoint)
    wait_until(lambda: w.subscriptions >= 1, 10, "the test subscriber to join the watcher")
    return w, col


def _polls_pass(w: FolderWatcher, n: int) -> None:
    """Wait until the watcher has looked at the folder ``n`` more times."""
    target = w.polls + n
    wait_until(lambda: w.polls >= target or w.error is not None, DEADLINE, f"{n} more polls")
    w.maybe_raise()


def _write_in_chunks(path: Path, data: bytes, cuts: list[int], w: FolderWatcher,
                     col: Collector) -> None:
    """Write ``data`` in pieces; after each piece but the last, let the watcher look at the
    incomplete file until it has tried (and failed) to read it, and check nothing was sent."""
    before = len(col.frames)
    edges = [0, *cuts, len(data)]
    with open(path, "wb") as f:
        for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            f.write(data[a:b])
            f.flush()
            os.fsync(f.fileno())
            if i < len(edges) - 2:
                tries = w.incomplete_reads
                wait_until(lambda: w.incomplete_reads > tries or w.error is not None, DEADLINE,
                           f"the watcher to try the incomplete {path.name} ({b} of {len(data)} B)")
                w.maybe_raise()
                assert len(col.frames) == before, f"frames sent from an incomplete {path.name}"


def _tiff_bytes(frames: np.ndarray, meta: dict) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, frames, description=json.dumps(meta), metadata=None,
                     photometric="minisblack")
    return buf.getvalue()


def _save_tiff(path: Path, frames: np.ndarray, meta: dict, mtime: float | None = None) -> None:
    path.write_bytes(_tiff_bytes(frames, meta))
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def _frames_of(col: Collector, source: str) -> list:
    return [m for m in col.frames if m.meta.get("source") == source]


# --------------------------------------------------------------------------- units


def test_flat_meta_and_wire_dtypes():
    meta = {"pixel_size_nm": 0.25, "detector": "HAADF", "metadata": {"General": {"title": "x"}},
            "axes": [{"scale": 0.25}], "description": "x" * 500, "roi": [1, 2, 3]}
    assert flat_meta(meta) == {"pixel_size_nm": 0.25, "detector": "HAADF", "roi": [1, 2, 3]}
    assert wire_frame(np.zeros((2, 2), np.float64)).dtype == np.float32
    assert wire_frame(np.array([[1, 2]], np.int64)).dtype == np.uint32
    assert wire_frame(np.array([[-1, 2]], np.int64)).dtype == np.int32
    assert wire_frame(np.array([[-1, 2**40]], np.int64)).dtype == np.float32
    u16 = np.ones((2, 2), np.uint16)
    assert wire_frame(u16) is u16


def test_bad_arguments_say_what_was_got(tmp_path):
    with pytest.raises(NotADirectoryError, match="got '.*nowhere'"):
        FolderWatcher(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"existing must be 'send' or 'skip' \(got 'all'\)"):
        FolderWatcher(tmp_path, existing="all")
    with pytest.raises(ValueError, match=r"stable_polls >= 1.*\(got 0.25, 0"):
        FolderWatcher(tmp_path, stable_polls=0)


# --------------------------------------------------------------------------- the folder


def test_tiff_written_in_pieces_is_sent_once_complete(tmp_path, zmq_ctx):
    rng = np.random.default_rng(1)
    stack = rng.integers(0, 4000, (3, 64, 48), dtype=np.uint16)
    meta = {"pixel_size_nm": 0.02, "dwell_time_us": 2.0, "detector": "HAADF"}
    data = _tiff_bytes(stack, meta)
    w, col = _watch(tmp_path, zmq_ctx)
    try:
        # Cut inside the first and the third frame's pixels: the reader fails on both pieces.
        _write_in_chunks(tmp_path / "frame_0001.tif", data, [5000, len(data) - 4000], w, col)
        col.wait_for(lambda: len(col.frames) >= 3, DEADLINE, "the TIFF's three frames")
        _polls_pass(w, 10)  # and nothing more after that
        w.stop_event.set()
        col.wait_for(lambda: any(m.type == "end" for m in col.messages), DEADLINE, "the end")
    finally:
        w.close()
        col.stop()
    assert not col.errors
    got = col.frames
    assert [m.seq for m in got] == [0, 1, 2]
    assert [m.type for m in col.messages] == ["start", "frame", "frame", "frame", "end"]
    assert col.messages[0].meta["pixel_size_nm"] == 0.02
    assert len({m.series for m in got}) == 1 and got[0].series.startswith("watch-")
    for i, m in enumerate(got):
        np.testing.assert_array_equal(m.frame, stack[i])
        assert m.frame.dtype == np.uint16
        assert m.meta == {**meta, "source": "frame_0001.tif", "frame_index": i}
    s = w.summary()
    assert s["files_seen"] == s["files_sent"] == 1 and s["frames_sent"] == 3
    assert s["incomplete_reads"] >= 2 and s["rejected"] == {} and s["pending"] == 0


@pytest.mark.skipif(VENDOR is None, reason="../shared/data/vendor_formats is absent")
def test_vendor_files_in_pieces_arrive_once_in_order_with_their_meta(tmp_path, zmq_ctx):
    pytest.importorskip("rsciio", reason="DM/EMD/SER need rosettasciio (pip install n2a[io])")
    files = ["dm3_test_STEM_image.dm3", "velox_fei_emd_image.emd",
             "tia_STEM_BF_DF_preview/16x16x5_STEM_BF_DF_preview_1.ser",
             "tia_STEM_BF_DF_preview/16x16x5_STEM_BF_DF_preview_2.ser", "tiff_saved_with_DM.tif"]
    expected = {Path(f).name: read_frames(VENDOR / f) for f in files}
    folder = tmp_path / "acq"
    folder.mkdir()
    w, col = _watch(folder, zmq_ctx)
    try:
        for f in files:
            data = (VENDOR / f).read_bytes()
            n = sum(len(expected[Path(g).name].frames) for g in files[:files.index(f)])
            _write_in_chunks(folder / Path(f).name, data, [len(data) // 2], w, col)
            n += len(expected[Path(f).name].frames)
            col.wait_for(lambda: len(col.frames) >= n, DEADLINE, f"the frames of {f}")
        _polls_pass(w, 10)
    finally:
        w.close()
        col.stop()
    assert not col.errors
    got = col.frames
    assert [m.seq for m in got] == list(range(len(got)))
    assert [(m.meta["source"], m.meta["frame_index"]) for m in got] == [
        (name, i) for name, st in expected.items() for i in range(len(st.frames))]
    for name, st in expected.items():
        for i, m in enumerate(_frames_of(col, name)):
            np.testing.assert_array_equal(m.frame, st.frames[i])
            assert m.frame.dtype == st.frames.dtype
    dm3 = _frames_of(col, "dm3_test_STEM_image.dm3")[0]
    assert dm3.shape == (68, 68) and dm3.frame.dtype == np.uint32
    assert dm3.meta["pixel_size_nm"] == pytest.approx(0.2485, rel=1e-3)
    assert dm3.meta["voltage_kV"] == 200.0 and dm3.meta["dwell_time_us"] == pytest.approx(3.5)
    emd = _frames_of(col, "velox_fei_emd_image.emd")[0]
    assert emd.shape == (512, 512) and emd.frame.dtype == np.uint16
    assert emd.meta["detector"] == "HAADF" and emd.meta["dwell_time_us"] == pytest.approx(20.0)
    assert emd.meta["pixel_size_nm"] == pytest.approx(5.302, rel=1e-3)
    ser = _frames_of(col, "16x16x5_STEM_BF_DF_preview_1.ser")
    assert len(ser) == 5 and ser[0].meta["pixel_size_nm"] == pytest.approx(21.51, rel=1e-3)
    assert all("metadata" not in m.meta and "axes" not in m.meta for m in got)  # flat scalars only
    s = w.summary()
    assert s["files_sent"] == len(files) and s["frames_sent"] == len(got) == 13
    assert s["rejected"] == {} and s["incomplete_reads"] >= len(files)


def test_existing_files_go_out_by_mtime_then_name(tmp_path, zmq_ctx):
    t0 = time.time() - 100
    frames = {n: np.full((8, 8), i, np.uint16) for i, n in enumerate(["z.tif", "x.tif", "y.tif"])}
    _save_tiff(tmp_path / "z.tif", frames["z.tif"], {}, t0)
    _save_tiff(tmp_path / "y.tif", frames["y.tif"], {}, t0 + 1)
    _save_tiff(tmp_path / "x.tif", frames["x.tif"], {}, t0 + 1)  # same time as y: name decides
    (tmp_path / "notes.txt").write_text("not a frame file")
    (tmp_path / ".x.tif.part").write_bytes(b"a writer's temporary file")
    w, col = _watch(tmp_path, zmq_ctx)
    try:
        col.wait_for(lambda: len(col.frames) >= 3, DEADLINE, "three frames")
        _polls_pass(w, 10)
    finally:
        w.close()
        col.stop()
    assert [m.meta["source"] for m in col.frames] == ["z.tif", "x.tif", "y.tif"]
    assert [int(m.frame[0, 0]) for m in col.frames] == [0, 1, 2]
    assert w.summary()["files_seen"] == 3


def test_existing_skip_sends_only_new_files(tmp_path, zmq_ctx):
    _save_tiff(tmp_path / "old.tif", np.zeros((8, 8), np.uint16), {})
    w, col = _watch(tmp_path, zmq_ctx, existing="skip")
    try:
        _save_tiff(tmp_path / "new.tif", np.ones((8, 8), np.uint16), {})
        col.wait_for(lambda: len(col.frames) >= 1, DEADLINE, "the new file")
        _polls_pass(w, 10)
    finally:
        w.close()
        col.stop()
    assert [m.meta["source"] for m in col.frames] == ["new.tif"]


def test_garbage_rename_and_delete_while_reading(tmp_path, zmq_ctx):
    """The acquisition side deletes one file and renames another exactly while the watcher reads
    them (the reader below does it on disk, then reads as usual); a garbage .dm3 is rejected."""
    folder = tmp_path / "acq"
    folder.mkdir()

    def racing_reader(path: Path):
        if path.name == "delete_me.tif":
            path.unlink()
        elif path.name == "rename_me.tif":
            path.rename(path.with_name("renamed.tif"))
        return read_frames(path)

    t0 = time.time() - 100
    for i, name in enumerate(["a.tif", "delete_me.tif", "rename_me.tif", "b.tif"]):
        _save_tiff(folder / name, np.full((16, 16), i, np.uint16), {"pixel_size_nm": 0.1}, t0 + i)
    (folder / "garbage.dm3").write_bytes(np.random.default_rng(0).bytes(5000))
    os.utime(folder / "garbage.dm3", (t0 + 10, t0 + 10))
    w, col = _watch(folder, zmq_ctx, reader=racing_reader, reject_after_s=0.5)
    try:
        col.wait_for(lambda: len(col.frames) >= 3, DEADLINE, "a, b and the renamed file")
        wait_until(lambda: sum(w.rejected.values()) >= 1, DEADLINE, "the garbage file's rejection")
        # a.tif, already sent, is renamed: the same file under another name is not sent again.
        (folder / "a.tif").rename(folder / "a_moved.tif")
        _polls_pass(w, 10)
    finally:
        w.close()
        col.stop()
    assert [m.meta["source"] for m in col.frames] == ["a.tif", "b.tif", "renamed.tif"]
    assert [int(m.frame[0, 0]) for m in col.frames] == [0, 3, 2]
    assert [m.seq for m in col.frames] == [0, 1, 2]
    s = w.summary()
    assert s["vanished"] == 2 and s["rejected"] == {"unreadable": 1}
    assert s["files_sent"] == 3 and s["pending"] == 1  # the rejected garbage, until it changes
    assert len(w.rejections) == 1
    assert "garbage.dm3: rejected (unreadable): expected a complete frame file" in w.rejections[0]
    assert "(got FrameReadError:" in w.rejections[0]


def test_a_stack_that_grows_sends_only_its_new_frames_a_rewritten_one_all(tmp_path, zmq_ctx):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "series.h5"
    rng = np.random.default_rng(2)
    stack = rng.integers(0, 100, (5, 16, 16), dtype=np.uint16)
    rewritten = rng.integers(1000, 2000, (7, 16, 16), dtype=np.uint16)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("frames", data=stack[:2], maxshape=(None, 16, 16))
        ds.attrs["pixel_size_nm"] = 0.05
    w, col = _watch(tmp_path, zmq_ctx)
    try:
        col.wait_for(lambda: len(col.frames) >= 2, DEADLINE, "the first two frames")
        with h5py.File(path, "a") as f:
            f["frames"].resize((5, 16, 16))
            f["frames"][2:] = stack[2:]
        col.wait_for(lambda: len(col.frames) >= 5, DEADLINE, "the three appended frames")
        _polls_pass(w, 10)
        inode = path.stat().st_ino
        # Rewritten in place: same inode, more bytes and more frames, but other frames (the last
        # one sent is not there any more): new content, sent whole.
        size = path.stat().st_size
        with h5py.File(path, "w") as f:
            f.create_dataset("frames", data=rewritten, maxshape=(None, 16, 16))
        assert path.stat().st_ino == inode and path.stat().st_size > size
        col.wait_for(lambda: len(col.frames) >= 12, DEADLINE, "the rewritten file's frames")
        _polls_pass(w, 10)
    finally:
        w.close()
        col.stop()
    got = col.frames
    assert [m.meta["frame_index"] for m in got] == [*range(5), *range(7)]
    assert [m.seq for m in got] == list(range(12))
    for m, want in zip(got, [*stack, *rewritten]):
        np.testing.assert_array_equal(m.frame, want)
    assert got[0].meta["pixel_size_nm"] == 0.05
    assert w.summary()["files_seen"] == 1 and w.summary()["files_sent"] == 3


def test_watch_feeds_n2a_stream(tmp_path, zmq_ctx, lite_model):
    """One pipeline: the watcher is a source, n2a-stream denoises what it publishes."""
    from streamer.pipeline import Stream

    rng = np.random.default_rng(3)
    stack = rng.poisson(2.0, (4, 64, 64)).astype(np.uint16)
    w = FolderWatcher(tmp_path, context=zmq_ctx.context, wait_subscribers=1,
                      poll_interval_s=0.05).start()
    stream = Stream(source=w.endpoint, model=lite_model, engine="onnxruntime").start()
    col = Collector(zmq_ctx, stream.out_endpoint)
    try:
        wait_until(lambda: stream.subscriptions >= 1 and w.subscriptions >= 1, DEADLINE,
                   "the stream to join the watcher and the test to join the stream")
        _save_tiff(tmp_path / "s.tif", stack, {"pixel_size_nm": 0.02})
        col.wait_for(lambda: len(col.frames) >= 4, DEADLINE, "four denoised frames")
    finally:
        stream.stop()
        col.stop()
        w.close()
    out = col.frames
    assert [m.seq for m in out] == [0, 1, 2, 3]
    assert all(m.header["meta"]["source"] == "s.tif" for m in out)
    for m, raw in zip(out, stack):
        np.testing.assert_array_equal(m.arrays["raw"], raw)
        assert m.arrays["denoised"].shape == (64, 64)


# --------------------------------------------------------------------------- the command


def test_cli_publishes_and_exits_0_on_sigterm(tmp_path, zmq_ctx):
    p = subprocess.Popen([sys.executable, "-m", "streamer.watch_cli", str(tmp_path), "--port", "0",
                          "--poll", "0.05", "--status-interval", "0.2"],
                         env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(p.stdout.readline())
        sub = zmq_ctx.make(zmq.SUB)
        sub.connect(first["endpoint"])
        sub.subscribe(b"")
        _save_tiff(tmp_path / "f.tif", np.arange(64, dtype=np.uint16).reshape(8, 8), {})
        (tmp_path / "bad.tif").write_bytes(b"II*\x00 not really a tiff")
        from streamer.protocol import decode

        msg = None
        deadline = time.monotonic() + DEADLINE
        while msg is None or msg.type != "frame":
            assert time.monotonic() < deadline, "no frame from n2a-watch"
            if sub.poll(100):
                msg = decode(sub.recv_multipart())
        np.testing.assert_array_equal(msg.frame, np.arange(64).reshape(8, 8))
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=DEADLINE)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["files_sent"] == 1 and summary["frames_sent"] == 1
    assert "n2a-watch: " in err and "files seen" in err


def test_cli_rejects_a_missing_folder(tmp_path):
    p = subprocess.run([sys.executable, "-m", "streamer.watch_cli", str(tmp_path / "nope")],
                       env=cli_env(), capture_output=True, text=True, timeout=DEADLINE)
    assert p.returncode == 2
    assert "needs an existing folder to watch (got" in p.stderr


def test_cli_takes_the_acquisition_keys_that_n2a_stream_makes_and_refuses_other_folders(tmp_path, capsys):
    from streamer.security import make_keys
    from streamer.source import socket_options
    from streamer.watch_cli import _parser

    keys = make_keys(tmp_path / "keys")  # keys/acquisition and keys/viewer, as n2a-stream --make-keys
    parser = _parser()
    opts = socket_options(parser.parse_args([str(tmp_path), "--curve-keys", str(keys)]), parser)
    assert opts["curve_keys"] is not None and opts["curve_keys"].server_public
    flat = tmp_path / "flat"
    flat.mkdir()
    with pytest.raises(SystemExit) as e:
        socket_options(parser.parse_args([str(tmp_path), "--curve-keys", str(flat)]), parser)
    assert e.value.code == 2
    assert "expected the acquisition/ key folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        socket_options(parser.parse_args([str(tmp_path), "--port", "70000"]), parser)
    assert "--port must be 0..65535 (got 70000)" in capsys.readouterr().err
