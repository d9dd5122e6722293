"""Owner process for the freshness test: writes COUNT values, printing when each was acked.

Usage: freshness_writer.py DIR COUNT PAUSE_S. Prints "ready", then one line per write:
"<revision> <time.monotonic() right after set() returned, i.e. after its fsync>".
CLOCK_MONOTONIC is system-wide on Linux, so the parent can compare it with its own clock.
"""

from __future__ import annotations

import sys
import time

import evstate


def main() -> None:
    directory, count, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    with evstate.open(directory, fsync="always") as store:
        print("ready", flush=True)
        for i in range(count):
            store.set("fresh", f"k{i}", {"i": i, "at": time.time()})
            print(store.revision, time.monotonic(), flush=True)
            time.sleep(pause)


if __name__ == "__main__":
    main()
