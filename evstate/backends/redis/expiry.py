"""The redis store's expirer: due keys become ``deleted`` events, once, by any process.

Deadlines live in the sorted set ``evstate:ttl`` (score = deadline, Redis's clock). The
``EXPIRE`` script takes the due keys and, for each, writes the ``deleted`` stream entry
(old value, ``reason: expired``), removes the field and the member, in one atomic step: so
whichever process of the fleet runs it, each key expires once. Reads hide due keys at once
(:mod:`evstate.backends.redis.read_scripts`), and a write to a due key writes its expiry
first, so the events are in the log before anything else happens to the key.

Every process runs a small thread that runs the script when the earliest deadline passes
(and at least every second while any key has a deadline); it starts at open when the
database holds deadlines, or when this process first sets one.
"""

from __future__ import annotations

import logging
import threading

from evstate.backends.redis.client import Backend
from evstate.backends.redis.scripts import LOG, META, TTL
from evstate.core.expirer import ExpirerThread
from evstate.core.feed import RecordFeed
from evstate.core.lifecycle import wall_clock_ms
from evstate.errors import StorageError

__all__ = ["EXPIRY_CHUNK", "RedisExpiry"]

log = logging.getLogger("evstate")

EXPIRY_CHUNK = 512  # keys per run of the script: mass expiry never blocks Redis for long


class RedisExpiry:
    """:meth:`expire` and the expirer thread of a :class:`RedisStore` (a mixin)."""

    _backend: Backend
    _feed: RecordFeed
    _stop: threading.Event
    _closed: bool
    _last_revision: int

    def _check_open(self) -> None:
        raise NotImplementedError

    def _start_expirer(self) -> None:
        self._expirer = ExpirerThread(
            "evstate-redis-expirer", self._expire_round, self._stop, wall_clock_ms
        )
        if self._next_deadline() is not None:
            self._expirer.wake()

    def _next_deadline(self) -> int | None:
        first = self._backend.run("read deadlines", lambda c: c.zrange(TTL, 0, 0, withscores=True))
        return int(first[0][1]) if first else None

    def _wake_expirer(self, deadline_ms: int | None = None) -> None:
        self._expirer.wake(deadline_ms)

    def _stop_expirer(self) -> None:
        self._expirer.stop()

    def _expire_round(self) -> int | None:
        try:
            self.expire()
            deadline = self._next_deadline()
            if deadline is None:
                return None
            seconds, micros = self._backend.run("read time", lambda c: c.time())
            return deadline - (int(seconds) * 1000 + int(micros) // 1000) + 1  # Redis's clock
        except StorageError as exc:  # unavailable: the next round tries again
            log.info("evstate: expiring keys skipped: %s", exc)
            return None

    def expire(self) -> int:
        """Write the expiry events of every key whose deadline has passed; returns how many.

        Safe from any number of processes at once: each key expires once.
        """
        self._check_open()
        total = 0
        while True:
            done = int(self._backend.script("expire", [META, LOG, TTL], [EXPIRY_CHUNK], "expire"))
            total += done
            if done:
                self._feed.notify()
            if done < EXPIRY_CHUNK:
                return total
