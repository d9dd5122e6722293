"""Fault injection for tests: a file layer that forgets, tears, fails and loses power.

:class:`FaultyIO` is a :class:`~evstate.backends.file.diskio.DiskIO` you pass to a store
(``evstate.Store(config, io=FaultyIO())``) to see what your code, and evstate, do when the
disk misbehaves: a power cut that forgets everything not yet fsynced, a torn last write,
``EIO`` from a write or an fsync, a full disk, and failures at named points of the engine's
write paths. It is public so that you can test your own projections (trigger handlers,
readers of ``at()``) under the same faults evstate's own suite uses (docs/reliability.md)::

    from evstate.testing import FaultyIO, crash

    io = FaultyIO(seed=7)
    store = evstate.Store(Config().replace(file_path=path), io=io)
    store.set("s", "k", 1)                     # acknowledged: durable under fsync: always
    io.crash_at("before_fsync", kind="segment")
    with pytest.raises(evstate.StorageError):
        store.set("s", "k", 2)                 # the power goes out before its fsync
    crash(store, io)                           # abandon the dead store
    with evstate.open(path) as reopened:
        assert reopened.get("s", "k") == 1

**What counts as durable** (the model; it is LazyFS's, and the POSIX rules evstate is built
on):

- *File data* is durable up to the content the file had at its last successful
  :meth:`~FaultyIO.fsync` (``fdatasync``: data and size). Bytes written after it live only in
  the "page cache": the real file holds them, readers see them, a power cut may drop them.
  :meth:`~FaultyIO.truncate_path` is durable when it returns (it fsyncs).
- *Directory entries* (a create, a rename, an unlink) are durable after a successful
  :meth:`~FaultyIO.fsync_dir` of their directory, which makes every entry change made in that
  directory so far durable at once (as on Linux file systems). A rename that was not followed
  by one is undone at a cut: the target has its old file back, and the source name is back
  if it was durable.
- *A failed fsync* (an injected error) makes nothing durable, and the bytes it should have
  written are lost for good ("fsyncgate": the kernel marks the pages clean): if a later fsync
  of the same file succeeds, they reach the disk as zeros. A failed directory fsync makes no
  entry change durable.
- Files that were in a directory when the layer first touched it count as durable, as they
  are (and so does a file the layer is first asked to open later). Files that other code
  creates there afterwards, never passed to the layer, are outside the model and left
  alone. The store directory itself is assumed to exist durably.

A power cut (:meth:`~FaultyIO.power_cut`, or a fault with ``action="crash"``) rewrites the
real directories to their durable state, then makes every later call of the layer raise
:class:`PowerCutError` (the machine is off), so the old ``Store`` object can neither write
nor acknowledge anything more. Abandon it with :func:`crash` and open the directory again
(with a plain ``DiskIO``, or with the same layer after :meth:`~FaultyIO.restart`). What
happens to the bytes written after the last fsync is the cut's ``mode``:

- ``"forget"`` (default): they are gone; every file is exactly its durable content.
- ``"prefix"``: a random prefix of them (possibly empty, possibly all) survives, per file:
  a torn tail.
- ``"zeros"``: the size reached the disk, the data did not: they read back as zeros.
- ``"process"``: nothing is lost; only the process died (like ``kill -9``). The layer keeps
  its durable model, so a later cut still takes back what was never fsynced.

**Points.** Each ``write``, ``fsync``, ``fsync_dir``, ``rename``, ``create``, ``remove``
and ``truncate`` passes two points, ``before_<op>`` and ``after_<op>`` (opening, reading,
listing and closing pass none), each with the ``kind`` of the file: ``"segment"``
(``*.log``), ``"snapshot"`` (``*.snap``, ``*.snap.tmp``), ``"cursor"`` (``triggers.cbor``
and its ``.tmp``), ``"index"`` (key index files: ``*.keys``, ``*.keys.tmp``) or ``"other"``.
A directory fsync has the kind of the newest entry change it makes durable (``"dir"`` when
there is none). ``before_append`` / ``after_append`` are the write points of segments.
The engine's named points
(:data:`evstate.backends.file.diskio.FAILPOINTS`: ``segment_roll``, ``snapshot_write``,
``cursor_save``, ``compaction``) have no kind.
:attr:`~FaultyIO.trace` records every point passed (``record=True``).

All methods are thread-safe: one lock serializes the layer (and with it every real file
operation of the store). Real ``fsync`` calls are skipped unless ``real_fsync=True``: the
model decides durability, so tests stay fast. Sized for tests: every file the layer touches
is mirrored in memory.
"""

from __future__ import annotations

from evstate.testing.faults import (
    CUT_MODES,
    KINDS,
    POINTS,
    CutMode,
    Fault,
    PowerCutError,
    file_kind,
)
from evstate.testing.faulty_io import FaultyIO, crash

__all__ = [
    "CUT_MODES",
    "KINDS",
    "POINTS",
    "CutMode",
    "Fault",
    "FaultyIO",
    "PowerCutError",
    "crash",
    "file_kind",
]
