"""Cluster mode: gRPC adapters and clients for each service, the Redis
session registry, and the per-role launchers (``xmppd edge|router|...``)."""
