"""A fenced lock for reapers: one holder at a time, renewed while it works.

The lock is a key holding a random token with an expiry. Only the holder of
the token renews or releases it (``lock.lua``), and every batch of work done
under it checks the token first (``job_cleanup.lua``) or is idempotent, so a
holder that was paused past the expiry and lost the lock stops instead of
working beside the new holder.
"""

from __future__ import annotations

import os

from .scripts import Scripts

#: Seconds a lock lives unless renewed.
LOCK_TTL = 30.0


class FencedLock:
    def __init__(self, scripts: Scripts, key: str, ttl: float = LOCK_TTL) -> None:
        self.scripts = scripts
        self.key = key
        self.ttl = ttl
        self.token = os.urandom(12).hex()

    def take(self) -> bool:
        return self.scripts.lock(self.key, "take", self.token, self.ttl)

    def renew(self) -> bool:
        """False when the lock was lost (expired and maybe taken by another)."""
        return self.scripts.lock(self.key, "renew", self.token, self.ttl)

    def release(self) -> None:
        self.scripts.lock(self.key, "release", self.token, self.ttl)
