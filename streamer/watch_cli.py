"""``n2a-watch DIR``: the command line of :class:`streamer.watch.FolderWatcher`.

Prints one JSON line naming the bound endpoint, a status line on stderr every
``--status-interval`` seconds, and one JSON summary line when stopped (SIGINT/SIGTERM).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from .source import add_socket_arguments, bind_and_announce, socket_options
from .watch import FolderWatcher


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="n2a-watch",
        description="Publish the frames an acquisition program saves into a folder "
                    "(DM3/DM4/EMD/SER/TIFF/HDF5) over n2a's protocol v1, each complete file once.")
    p.add_argument("folder", help="the folder the acquisition program saves into")
    p.add_argument("--existing", choices=["send", "skip"], default="send",
                   help="files already in the folder: send them (oldest first; default) or skip")
    p.add_argument("--poll", type=float, default=0.25, help="seconds between polls (0.25)")
    p.add_argument("--stable-polls", type=int, default=2,
                   help="polls a file must stay unchanged before it is read (2)")
    p.add_argument("--reject-after", type=float, default=5.0,
                   help="seconds a stable file may fail to read before it is rejected (5)")
    p.add_argument("--series", help="series name (default: watch-<time>)")
    add_socket_arguments(p)
    p.add_argument("--wait-subscribers", type=int, default=1,
                   help="PUB: read nothing while fewer subscribers are connected (default 1)")
    p.add_argument("--status-interval", type=float, default=1.0,
                   help="seconds between status lines on stderr (0: none)")
    p.add_argument("--log-level", default="WARNING")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``n2a-watch``."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(name)s: %(message)s")
    sockets = socket_options(args, parser)
    try:
        watcher = FolderWatcher(args.folder, existing=args.existing, poll_interval_s=args.poll,
                                stable_polls=args.stable_polls, reject_after_s=args.reject_after,
                                series=args.series, wait_subscribers=args.wait_subscribers,
                                **sockets)
    except (NotADirectoryError, ValueError) as e:
        parser.error(str(e))
    if not bind_and_announce(watcher, "n2a-watch", folder=str(watcher.folder)):
        return 2
    watcher.start()
    status = 0
    try:
        while not watcher.stop_event.wait(args.status_interval or 1.0):
            watcher.maybe_raise()
            if args.status_interval:
                print(watcher.status_line(), file=sys.stderr, flush=True)
        watcher.close()
    except (RuntimeError, TimeoutError) as e:
        print(f"n2a-watch: {e}", file=sys.stderr, flush=True)
        watcher.close(raise_error=False)  # reported already
        status = 1
    print(watcher.status_line(), file=sys.stderr, flush=True)
    print(json.dumps(watcher.summary()), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
