"""Helpers shared by the fuzz tests: settings, a hang guard, byte mutations."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("EVSTATE_FUZZ_EXAMPLES", "500"))


def fuzz_settings(scale: float = 1.0) -> Any:
    """Hypothesis settings for a fuzz test: ``EVSTATE_FUZZ_EXAMPLES`` (x ``scale``) inputs."""
    return settings(
        max_examples=max(10, int(EXAMPLES * scale)),
        deadline=None,  # the hang guard below bounds each input instead
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@contextlib.contextmanager
def no_hang(seconds: float = 5.0) -> Iterator[None]:
    """Fail with TimeoutError if the block runs longer than ``seconds`` (main thread only)."""

    def alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"input took more than {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@st.composite
def mutated(draw: st.DrawFn, data: bytes, max_edits: int = 4) -> bytes:
    """``data`` with 1..max_edits random edits: bit flips, overwrites, cuts, inserts, zeros,
    duplicated slices."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, max_edits))):
        kind = draw(st.sampled_from(["flip", "byte", "truncate", "insert", "zero", "dup"]))
        if not buf:
            kind = "insert"
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if kind == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            buf[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "zero":
            end = pos + draw(st.integers(1, 64))
            buf[pos:end] = bytes(len(buf[pos:end]))
        else:
            end = pos + draw(st.integers(1, 64))
            buf[pos:pos] = buf[pos:end]
    return bytes(buf)
