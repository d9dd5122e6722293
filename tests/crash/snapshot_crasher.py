"""Writes, then SIGKILLs itself at a named point of a snapshot write.

    python snapshot_crasher.py DIR POINT

Prints ``key=value`` for every acknowledged write before the snapshot starts.
"""

from __future__ import annotations

import os
import signal
import sys

import evstate
from evstate.backends.file.diskio import DiskIO
from evstate.config import Config


class CrashingIO(DiskIO):
    def __init__(self, point: str) -> None:
        self.point = point
        self.armed = False

    def _die(self, point: str) -> None:
        if self.armed and point == self.point:
            sys.stdout.flush()
            sys.stderr.write(f"killed at {point}\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.endswith(".snap.tmp"):
            self._die("temp_written")

    def remove(self, path: str) -> None:
        if path.endswith(".log"):
            self._die("compaction_after_first_segment")
        if path.endswith(".snap"):
            self._die("compaction_before_snapshot_delete")
        super().remove(path)
        if path.endswith(".log"):
            self._die("compaction_mid_segments")

    def rename(self, source: str, target: str) -> None:
        self._die("before_rename")
        super().rename(source, target)
        self._die("after_rename_before_dir_fsync")


def main() -> None:
    directory, point = sys.argv[1], sys.argv[2]
    io = CrashingIO(point)
    compaction = point.startswith("compaction")
    options: dict[str, object] = {"file_path": directory}
    if compaction:
        options["retention"] = {"revisions": 10}
    store = evstate.Store(Config().replace(**options), io=io)
    for i in range(200):
        store.set("s", str(i % 37), i)
        if compaction and i % 40 == 39:
            store.snapshot()
    for key, value in store.list("s").items():
        print(f"{key}={value}")
    sys.stdout.flush()
    io.armed = True
    store.snapshot()
    if compaction:
        store.compact()
    store.set("s", "x", "y")  # after the snapshot completed
    print("x=y")
    sys.stdout.flush()
    sys.stderr.write("killed at after_snapshot\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
