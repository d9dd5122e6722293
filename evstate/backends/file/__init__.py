"""The file backend: a store in one directory (docs/format.md).

:mod:`layout` (every byte layout and file name) · :mod:`diskio` (every write) ·
:mod:`segment` and :mod:`log` (the append-only log, group commit, recovery) ·
:mod:`snapshot` (snapshot files) · :mod:`index` (the per-key history index) ·
:mod:`timeline` (the directory as a log source, for the owner and followers) ·
:mod:`cursors` (trigger cursor files) · :mod:`lock` · :mod:`maintenance` (snapshots and
compaction) · :mod:`restore` · :mod:`store` (:class:`~evstate.backends.file.store.FileStore`).
"""
