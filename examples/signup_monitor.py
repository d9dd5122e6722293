"""A follower: watch another process's store live, and keep a projection of it.

    .venv/bin/python examples/signup_monitor.py --dir ./example-data/users

Run it next to ``user_management_http.py``, which owns that directory: the monitor never
takes the store's lock and never writes the store's files. It

- prints every new signup as it happens (a follower trigger, ``signup-monitor``, whose
  cursor file lives in ``<dir>/followers/``, so a restart resumes where it stopped), and
- keeps signups per email domain in a file of its own (``--out``), rewritten atomically
  together with the revision it reflects, so an event delivered again after a crash (the
  delivery is at-least-once) is not counted twice.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from evstate import follow


class DomainCounts:
    """The projection: ``{"revision": n, "domains": {domain: count}}`` in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state: dict[str, Any] = {"revision": 0, "domains": {}}
        if path.exists():
            self.state = json.loads(path.read_text())

    def apply(self, event: Any) -> bool:
        if event.revision <= self.state["revision"]:
            return False  # already counted: this is a redelivery
        domain = event.new_value["email"].rsplit("@", 1)[-1]
        domains = self.state["domains"]
        domains[domain] = domains.get(domain, 0) + 1
        self.state["revision"] = event.revision
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2, sort_keys=True))
        os.replace(tmp, self.path)
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="./example-data/users", help="the store to follow")
    parser.add_argument(
        "--out", default="./example-data/signups-by-domain.json", help="the projection file"
    )
    args = parser.parse_args()
    counts = DomainCounts(Path(args.out))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    Path(args.dir).mkdir(parents=True, exist_ok=True)  # the owner may start later
    with follow(args.dir) as follower:
        say(f"following {follower.path} from revision {follower.revision}")

        @follower.trigger(
            "signup-monitor",
            scope="users",
            condition=lambda e: e.event_type == "created",
            start="earliest",
        )
        def on_signup(event: Any) -> None:
            if counts.apply(event):
                say(f"signup: {event.new_value['email']} (revision {event.revision})")

        stop.wait()


def say(line: str) -> None:
    """Print one whole line (print() from two threads can interleave)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
