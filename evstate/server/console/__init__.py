"""The web console of ``evstate serve``, with ``/health`` and ``/metrics`` (docs/console.md).

:class:`ConsoleSite` answers every plain HTTP request the server receives, on the
WebSocket's own port; the modules beside it are its parts: ``http`` (requests and
responses), ``auth`` (token, sessions, origin), ``pages`` and ``templates/`` (what each page
shows), ``listing``, ``timeline`` and ``reading`` (the store reads behind the pages),
``live`` and ``actions`` (the pages' WebSocket: live updates and changes), ``sampler``
(the stats over time) and ``static/`` (the CSS, the script and the chart library).
"""

from evstate.server.console.site import LIVE_PATH, ConsoleSite

__all__ = ["LIVE_PATH", "ConsoleSite"]
