"""Writes events while a trigger counts them through event.store, until SIGKILLed.

python trigger_writer.py DIR
"""

from __future__ import annotations

import sys
import threading

import evstate
from evstate import UpdateOp


def count(event: object) -> None:
    event.store.update("out", "counter", [UpdateOp.increment("n", 1)])  # type: ignore[attr-defined]


def main() -> None:
    store = evstate.open(
        sys.argv[1], fsync="always", segment_size_bytes=16384, save_interval_ms=100
    )
    store.trigger("count", count, scope="in", start="earliest")

    def write() -> None:
        n = 0
        while True:
            n += 1
            store.set("in", str(n % 17), n)

    threading.Thread(target=write, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
