"""Followers: a live, read-only view of a store directory another process owns.

A follower reads the file store's own format (the one named exception to "no backend
imports another": it *is* the file backend, read-only), tails the segment the owner is
writing, answers the audit API from the same :class:`~evstate.backends.file.timeline.FileTimeline`
the owner uses, and runs triggers with cursor files of their own.
"""
