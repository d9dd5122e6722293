"""The redis backend: one shared Redis for a fleet of processes (docs/scaling.md).

State in the iii engine's layout (``state:<scope>`` hashes), every change one Lua script
that also appends the event to a stream; history, ``at()`` and snapshots from that stream;
trigger cursors fenced by leases. The same contract as every store kind: the core's audit
and trigger runner over the stream (:class:`~evstate.backends.redis.timeline.RedisTimeline`)
and the leases (:class:`~evstate.backends.redis.cursors.RedisCursors`).
"""
