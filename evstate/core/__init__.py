"""The store contract, written once for every store kind.

:mod:`store` (the in-process store: write path, reads, trigger host) · :mod:`audit`
(history, events, at, restore_to, verify) · :mod:`log_source` (what a backend's history
must answer) · :mod:`triggers` (runners, cursors protocol, handler API) · :mod:`feed`,
:mod:`replay`, :mod:`table`, :mod:`view`, :mod:`writes`, :mod:`reads`, :mod:`retention`,
:mod:`arguments` · :mod:`functions` (the iii function surface, ``call()``).
"""
