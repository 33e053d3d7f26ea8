"""Random tokens for tags, branches and Call-IDs (RFC 3261 sections 8.1.1.7 and 19.3).

A tag must be "globally unique and cryptographically random with at least 32 bits of
randomness"; each token here is 64 bits from ``os.urandom``, written as 16 hex digits. They are
read 256 at a time: one system call instead of one per token (a trigger call needs a few, and
the call was a measurable part of its cost). A forked child starts with an empty pool, so a
parent and its child never hand out the same token.
"""

from __future__ import annotations

import os

__all__ = ["random_token"]

_BATCH = 256
_pool: list[str] = []


def random_token() -> str:
    """16 hex digits of fresh randomness."""
    if not _pool:
        text = os.urandom(8 * _BATCH).hex()
        _pool.extend([text[i : i + 16] for i in range(0, 16 * _BATCH, 16)])
    return _pool.pop()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.clear)
