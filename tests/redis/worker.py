"""A separate evstate process for the multi-process tests (run with ``python -m``).

python -m tests.redis.worker URL increment N
    N increments of counters/c, then prints "done".
python -m tests.redis.worker URL update N OPS_JSON
    N updates of counters/c with the wire ops OPS_JSON, then prints "done".
python -m tests.redis.worker URL trigger NAME OUTFILE SLEEP_MS
    registers trigger NAME (scope "in", start "earliest"); each event appends its revision
    to OUTFILE (flushed: an external effect), sleeps, and increments out/count through
    event.store (an effect inside the store). Prints "ready"; SIGTERM closes the store.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any

from evstate import UpdateOp
from evstate.backends.redis.client import BackendUnavailableError
from evstate.backends.redis.store import open_redis


def increment(url: str, n: int, ops: list[Any] | None = None) -> None:
    with open_redis(url) as store:
        done = 0
        while done < n:
            try:
                store.update("counters", "c", ops or [UpdateOp.increment("n", 1)])
                done += 1
            except BackendUnavailableError:
                time.sleep(0.05)
    print("done", flush=True)


def trigger(url: str, name: str, outfile: str, sleep_ms: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    store = open_redis(url, lease_ms=1000)
    with open(outfile, "a", buffering=1) as out:

        def handler(event: Any) -> None:
            out.write(f"{event.revision}\n")
            out.flush()
            time.sleep(sleep_ms / 1000)
            event.store.update("out", "count", [UpdateOp.increment("n", 1)])

        store.trigger(name, handler, scope="in", start="earliest")
        print("ready", flush=True)
        while not stop.wait(0.05):
            pass
        store.close()


if __name__ == "__main__":
    url, mode, *args = sys.argv[1:]
    if mode == "increment":
        increment(url, int(args[0]))
    elif mode == "update":
        increment(url, int(args[0]), json.loads(args[1]))
    else:
        trigger(url, args[0], args[1], int(args[2]))
