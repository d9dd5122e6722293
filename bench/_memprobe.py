"""Memory probe for figure 6, run in a fresh interpreter per measurement.

    python _memprobe.py evstate-reopen <store dir>   # open the 1M-event log, keep it open
    python _memprobe.py evstate-set <n>              # in-memory store, n typical sets
    python _memprobe.py evstate-set-ttl <n>          # the same, every key with a TTL
    python _memprobe.py dict <n>                     # the same data as a dict of dicts

Every mode imports the same modules before taking its baseline RSS, so the printed
``delta`` (RSS after loading minus that baseline, after ``gc.collect()``) is the data alone.
Prints one JSON object.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Any

import cbor2  # noqa: F401  (imported in every mode, so the baselines match)
import psutil
from _benchlib import NO_SNAPSHOTS_MS, SCOPE, key_name, typical_value

import evstate


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def main(mode: str, arg: str) -> None:
    base = rss()
    t0 = time.perf_counter()
    keep: Any
    if mode == "evstate-reopen":
        keep = evstate.open(arg, save_interval_ms=NO_SNAPSHOTS_MS)
        keys = keep.revision  # one event per distinct key in the benchmark log
    elif mode in ("evstate-set", "evstate-set-ttl"):
        keep = evstate.open()
        ttl = 3_600_000 if mode == "evstate-set-ttl" else None
        for i in range(int(arg)):
            keep.set(SCOPE, key_name(i), typical_value(i), ttl_ms=ttl)
        keys = int(arg)
    elif mode == "dict":
        keep = {SCOPE: {}}
        inner = keep[SCOPE]
        for i in range(int(arg)):
            inner[key_name(i)] = typical_value(i)
        keys = len(inner)
    else:
        raise SystemExit(f"unknown mode {mode}")
    load_s = time.perf_counter() - t0
    after = rss()
    print(
        json.dumps(
            {
                "mode": mode,
                "keys": keys,
                "base": base,
                "after": after,
                "delta": after - base,
                "load_s": load_s,
            }
        )
    )
    if mode.startswith("evstate"):
        keep.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
