"""Consumer-group timing shared by every consumer the bench runs (the worker, the Faust agent, Quix Streams).

Apache Kafka refuses a session under its `group.min.session.timeout.ms` (6 s by default) with
InvalidSessionTimeoutError, so the bench uses that floor on both brokers, and the figures of the two compare. A
heartbeat a sixth of the session is the clients' usual proportion. Joins are outside every measured span either way.
"""

SESSION_TIMEOUT_S = 6.0
HEARTBEAT_INTERVAL_S = 1.0
