"""``n2a-stream``: denoise a live stream of STEM frames (see docs/protocol.md).

Examples
--------
Denoise what a scan system publishes on port 5555, publish on 5556, record everything::

    n2a-stream --port 5555 --record runs/today

Lossless, with backpressure, from a PUSH source::

    n2a-stream --port 5555 --pattern pull --policy block
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engines.base import EngineError
from engines.config import EngineConfig

__all__ = ["build_config", "main"]

log = logging.getLogger("n2a.stream")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})") from e
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {v})")
    return v


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535 (got {text!r})") from e
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535 (got {v})")
    return v


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="n2a-stream",
        description="Denoise STEM frames live: ZeroMQ in (protocol v1), denoised frames with "
                    "rolling CSS out.")
    src = p.add_argument_group("input")
    src.add_argument("--port", type=_port, help="port of the acquisition publisher")
    src.add_argument("--host", default="127.0.0.1", help="host of the publisher (127.0.0.1)")
    src.add_argument("--source", help="any ZeroMQ address instead of --host/--port")
    src.add_argument("--pattern", choices=["sub", "pull"], default="sub",
                     help="input socket: SUB (to a PUB) or PULL (to a PUSH)")
    src.add_argument("--max-frame-bytes", type=_positive_int, default=64 << 20,
                     help="reject larger frames (default 64 MiB); ZeroMQ refuses a message part "
                          "this large before it is in memory")
    src.add_argument("--buffer-mb", type=float, default=256.0,
                     help="memory each socket queue may hold, in MiB (default 256): the input "
                          "and per-viewer output high-water marks are this divided by "
                          "--max-frame-bytes, 4 to 1000 messages")
    out = p.add_argument_group("output")
    out.add_argument("--out-port", type=_port, help="output PUB port (default PORT+1; 0: free)")
    out.add_argument("--bind", default="127.0.0.1",
                     help="interface for the output socket (default 127.0.0.1; 0.0.0.0: all)")
    raw = out.add_mutually_exclusive_group()
    raw.add_argument("--with-raw", dest="with_raw", action="store_true", default=True,
                     help="send the raw frame as a second part (default)")
    raw.add_argument("--no-with-raw", dest="with_raw", action="store_false")
    out.add_argument("--record", type=Path, help="record raw and denoised frames to DIR")
    eng = p.add_argument_group("denoising")
    eng.add_argument("--model", type=Path, help="checkpoint (default: the bundled model)")
    EngineConfig.add_arguments(eng)  # the same options and defaults as n2a-denoise
    eng.add_argument("--policy", choices=["latest", "block"], default="latest",
                     help="engine behind: keep the newest frames and count drops (latest), or "
                          "push back on a PUSH source (block, needs --pattern pull)")
    eng.add_argument("--max-queue", type=_positive_int, default=4,
                     help="frames waiting for the engine before the policy acts (4)")
    eng.add_argument("--css-window", type=_positive_int, default=10,
                     help="rolling CSS window in frames (10)")
    eng.add_argument("--no-css", dest="css", action="store_false",
                     help="do not compute CSS (the css fields are nil; saves two SSIMs per frame)")
    eng.add_argument("--no-resample", dest="resample", action="store_false",
                     help="denoise frames at their own sampling (default: zoom each series so its "
                          "atom columns' estimated width suits the model, and back; the zoom is in "
                          "each output header as 'resample')")
    eng.add_argument("--lattice-average", action="store_true",
                     help="denoise each frame a second time from the raw frame averaged over its "
                          "lattice's own translations, then average that output over them, changing "
                          "pixels by about the noise at most (closer to the truth on perfect "
                          "crystals at low dose, some cost to vacancies and edges at high dose; "
                          "1024² streams at 1.5-2.3 fps with it on our 2-core CPU, 8-11 without; the "
                          "count is in each output header as 'lattice_average')")
    eng.add_argument("--max-engine-failures", type=_positive_int, default=50,
                     help="stop when the engine fails on this many frames in a row (50); a "
                          "failure on fewer is counted and the stream goes on")
    eng.add_argument("--denoise-delay-ms", type=float, default=0.0,
                     help="diagnostic: add this delay per frame after the engine (tests the drop "
                          "policy with a slow engine)")
    lrn = p.add_argument_group("learning while streaming")
    lrn.add_argument("--learn", dest="learn", action="store_true", default=None,
                     help="fine-tune the model on the series' own frames (blind-spot loss) and "
                     "swap it in between two frames when its held-out loss improves (default: on "
                     "with a CUDA GPU, off on a CPU)")
    lrn.add_argument("--no-learn", dest="learn", action="store_false")
    lrn.add_argument("--learn-save", type=Path, metavar="PATH",
                     help="write the adapted checkpoint (with the series' acquisition meta) here "
                     "on exit and on SIGUSR1")
    lrn.add_argument("--learn-threads", type=_positive_int, default=1,
                     help="torch threads for learning (1: inference keeps priority on a CPU)")
    lrn.add_argument("--learn-ring", type=_positive_int, default=24,
                     help="recent frames kept for learning (every 4th held out for scoring)")
    lrn.add_argument("--learn-steps", type=_positive_int, default=30,
                     help="optimiser steps between two swap attempts")
    lrn.add_argument("--learn-keep-model", action="store_true",
                     help="a new series keeps the adapted model (default: back to the start model)")
    sec = p.add_argument_group("security")
    sec.add_argument("--curve-keys", type=Path, metavar="DIR",
                     help="CURVE-encrypt and authenticate both sockets: the input with the keys in "
                     "DIR/acquisition, the output with those in DIR/viewer (a viewer's key cannot "
                     "reach the acquisition link); secret keys must be mode 0600")
    sec.add_argument("--make-keys", type=Path, metavar="DIR",
                     help="create DIR/acquisition and DIR/viewer key sets (0700 folders, 0600 "
                     "secret keys) and exit; see docs/protocol.md for which machine gets which file")
    run = p.add_argument_group("run")
    run.add_argument("--exit-on-end", action="store_true",
                     help="exit once the source sent `end` and every frame is out")
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.add_argument("--status-interval", type=float, default=1.0,
                     help="seconds between status lines on stderr (0: none)")
    run.add_argument("--log-level", default="WARNING")
    return p


def build_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    """Turn parsed arguments into a validated ``StreamConfig`` (errors exit with status 2)."""
    from .pipeline import StreamConfig

    if args.source is None and args.port is None:
        parser.error("an input is required: --port PORT or --source ADDR (got neither)")
    if args.source is not None and args.port is not None:
        parser.error(f"give --port or --source, not both (got --port {args.port} and "
                     f"--source {args.source})")
    source = args.source or f"tcp://{args.host}:{args.port}"
    if args.out_port is None:
        if args.port is None:
            parser.error("--out-port is required with --source (no PORT to add 1 to)")
        if args.port == 0 or args.port >= 65535:
            parser.error(f"--out-port defaults to PORT+1, which is not usable for --port "
                         f"{args.port}; give --out-port")
        out_port = args.port + 1
    else:
        out_port = args.out_port
    if args.denoise_delay_ms < 0:
        parser.error(f"--denoise-delay-ms must be >= 0 (got {args.denoise_delay_ms})")
    if args.model is not None and not args.model.is_file():
        parser.error(f"--model: no such checkpoint file (got {args.model})")
    if args.curve_keys is not None and not args.curve_keys.is_dir():
        parser.error(f"--curve-keys: expected a directory of zmq.auth keys (got {args.curve_keys})")
    learn = args.learn
    if learn is None:
        from engines import cuda_available
        learn = cuda_available() and (args.device is None or args.device.startswith("cuda"))
    if args.learn_save is not None and not learn:
        parser.error(f"--learn-save needs --learn (got --learn-save {args.learn_save} without it)")
    try:
        engine = EngineConfig.from_arguments(args)
    except EngineError as e:
        parser.error(str(e))
    try:
        from .learner import LearnConfig
        learn_config = LearnConfig(threads=args.learn_threads, ring=args.learn_ring,
                                   steps_per_round=args.learn_steps, save=args.learn_save,
                                   revert_on_new_series=not args.learn_keep_model) if learn else None
        return StreamConfig(
            source=source, out=f"tcp://{args.bind}:{out_port}", pattern=args.pattern,
            policy=args.policy, with_raw=args.with_raw, model=args.model, engine=engine,
            css_window=args.css_window, css=args.css, resample=args.resample,
            lattice_average=args.lattice_average,
            max_queue=args.max_queue,
            record=args.record, max_frame_bytes=args.max_frame_bytes, buffer_mb=args.buffer_mb,
            max_engine_failures=args.max_engine_failures,
            curve_keys=args.curve_keys, denoise_delay_ms=args.denoise_delay_ms, learn=learn_config)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'options'}: {err['msg']}"
                         for err in e.errors())
        parser.error(msgs)


def _save_learned(stream: Any, config: Any) -> None:
    """SIGUSR1: write the adapted checkpoint now (``--learn-save``)."""
    if stream.learner is None or config.learn.save is None:
        print("n2a-stream: SIGUSR1 ignored: no --learn-save PATH", file=sys.stderr, flush=True)
        return
    try:
        saved = stream.learner.save(config.learn.save)
    except OSError as e:
        print(f"n2a-stream: cannot write {config.learn.save}: {e}", file=sys.stderr, flush=True)
        return
    print(f"n2a-stream: adapted model written to {saved}" if saved else
          "n2a-stream: no adapted model yet (no swap so far)", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``n2a-stream``; returns 0 after a clean stop (also on SIGINT/SIGTERM)."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s", stream=sys.stderr)
    if args.make_keys is not None:
        from .security import make_keys

        print(f"n2a-stream: keys in {make_keys(args.make_keys)}")
        return 0
    config = build_config(args, parser)
    from .pipeline import Stream

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    save_now = threading.Event()
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, lambda *_: save_now.set())
    stream = Stream(config=config)
    try:
        stream.start()
    except Exception as e:  # a bad model, back end or address: say so, no traceback
        print(f"n2a-stream: cannot start: {e}", file=sys.stderr)
        return 2
    print(f"n2a-stream: {config.source} -> {stream.out_endpoint} ({stream.engine_name}, "
          f"model {stream.model_id}, policy {config.policy})", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    next_status = t0 + args.status_interval
    rc = 0
    try:
        while not stop.is_set():
            stop.wait(0.1)
            stream.maybe_raise()
            if save_now.is_set():
                save_now.clear()
                _save_learned(stream, config)
            now = time.monotonic()
            if args.status_interval > 0 and now >= next_status:
                print(stream.status_line(), file=sys.stderr, flush=True)
                next_status = now + args.status_interval
            if args.exit_on_end and stream.ended:
                break
            if args.duration is not None and now - t0 >= args.duration:
                break
    except RuntimeError as e:
        print(f"n2a-stream: stopping after an error: {e}", file=sys.stderr, flush=True)
        rc = 1
    try:
        summary = stream.stop()
    except (RuntimeError, TimeoutError) as e:
        print(f"n2a-stream: error while stopping: {e}", file=sys.stderr, flush=True)
        summary, rc = stream.summary(), 1
    print(stream.summary_text(summary), file=sys.stderr, flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
