"""The store kinds: one package each, behind the core's protocols.

``memory`` and ``file`` are the in-process store over no disk or a directory; ``follower``
reads a directory another process owns; ``redis`` keeps a fleet's state in one Redis.
"""
