"""Scaling out: every core of a machine (:class:`WorkerPool`) and many machines through
Redis (:mod:`netcode.cluster.redis_registry`). Neither is needed for one process on one
machine, which stays the default. See docs/SCALE.md."""

from netcode.cluster.workers import ClusterConfig, WorkerInfo, WorkerPool

__all__ = ["ClusterConfig", "WorkerInfo", "WorkerPool"]
