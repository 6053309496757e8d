"""A Redis lease: at most one holder across the servers of a cluster, for a bounded time.

``SET key owner NX PX ttl`` takes it; renewing and releasing check the owner in one
script, so a server whose lease expired and was taken by another never renews or deletes
the new holder's. Used by the alert evaluator (the cluster's leader) and by backups (one
at a time).
"""

from __future__ import annotations

from redis.asyncio import Redis

__all__ = ["RedisLease"]

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLease:
    """The lease ``key`` as ``owner`` holds it (or would), for ``ttl_ms`` at a time."""

    def __init__(self, redis: Redis, key: str, owner: str, ttl_ms: int) -> None:
        self.redis = redis
        self.key = key
        self.owner = owner
        self.ttl_ms = ttl_ms

    async def take(self) -> bool:
        """True when the lease was free and is now this owner's."""
        return bool(await self.redis.set(self.key, self.owner, nx=True, px=self.ttl_ms))

    async def renew(self) -> bool:
        """True when this owner still held the lease (its time starts again)."""
        return bool(await self.redis.eval(_RENEW, 1, self.key, self.owner, str(self.ttl_ms)))

    async def release(self) -> None:
        """Give the lease up, if this owner still holds it."""
        await self.redis.eval(_RELEASE, 1, self.key, self.owner)
