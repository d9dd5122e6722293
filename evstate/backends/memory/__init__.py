"""The memory store: the in-process :class:`~evstate.core.store.Store` with no disk.

History is kept as a list of records plus a base state that compaction folds into;
nothing survives :meth:`close`. The reference implementation the conformance suite runs
first.
"""
