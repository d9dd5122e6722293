"""A writer process for the crash tests: writes until killed, printing each ack.

    python writer.py DIR THREADS

Each thread sets unique keys ``t<thread>-<n>`` and increments a shared counter; after a
write is acknowledged (fsync: always) it prints ``set <key> <n>`` or ``inc <count>``.
"""

from __future__ import annotations

import sys
import threading

import evstate
from evstate import UpdateOp


def main() -> None:
    directory, threads = sys.argv[1], int(sys.argv[2])
    store = evstate.open(directory, fsync="always", segment_size_bytes=16384)
    out_lock = threading.Lock()

    def work(t: int) -> None:
        n = 0
        while True:
            n += 1
            store.set("acked", f"t{t}-{n}", {"n": n, "pad": "p" * (n % 50)})
            with out_lock:
                sys.stdout.write(f"set t{t}-{n} {n}\n")
                sys.stdout.flush()
            store.update("counter", "c", [UpdateOp.increment("n", 1)])
            with out_lock:
                sys.stdout.write("inc\n")
                sys.stdout.flush()

    for t in range(threads):
        threading.Thread(target=work, args=(t,), daemon=True).start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    threading.Event().wait()


if __name__ == "__main__":
    main()
