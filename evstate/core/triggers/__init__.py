"""State triggers as durable projections of the log, written once for every store kind.

- :mod:`~evstate.core.triggers.event`: what a handler receives (the event, ``event.store``);
- :mod:`~evstate.core.triggers.cursors`: the cursor-store protocol each backend implements;
- :mod:`~evstate.core.triggers.runner`: the delivery loop (retries, dead letters);
- :mod:`~evstate.core.triggers.manager`: registration, status, waiting, dead letters;
- :mod:`~evstate.core.triggers.api`: the public methods stores share.
"""
