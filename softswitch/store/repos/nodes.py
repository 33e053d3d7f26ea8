"""The nodes sharing the store (issue 12): who runs, since when, and their last heartbeat.

Each ``softswitch serve`` writes its row when it starts (:meth:`NodeRepo.beat` inserts it),
refreshes ``heartbeat_us`` every few seconds from its service shell, and sets ``stopped_us``
when it stops cleanly (:meth:`NodeRepo.stop`). Nothing here decides anything: the callback
queue reads the heartbeats to take over a dead node's claimed callbacks at once
(``CallbackQueue.claim_due``), and the admin API shows :meth:`NodeRepo.list` as the cluster.
Rows of nodes gone for long are pruned (:meth:`NodeRepo.prune`), since every start is a new
node id.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Row

from softswitch.store.db import Database, seconds, us
from softswitch.store.models import NodeInfo
from softswitch.store.repos.common import to_seconds
from softswitch.store.tables import nodes


def _node(row: Row[Any]) -> NodeInfo:
    return NodeInfo(
        id=row.id,
        address=row.address,
        version=row.version,
        started_at=to_seconds(row.started_us),
        heartbeat_at=to_seconds(row.heartbeat_us),
        stopped_at=seconds(row.stopped_us),
    )


class NodeRepo:
    """The ``nodes`` table; see the module docstring."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def beat(self, node: NodeInfo, now: float) -> None:
        """Write ``node``'s heartbeat at ``now``: its row is created the first time (and again
        if it went missing, e.g. pruned while the node was cut off from the store)."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(nodes)
                .where(nodes.c.id == node.id)
                .values(heartbeat_us=us(now), stopped_us=None)
            )
            if not result.rowcount:
                await conn.execute(
                    insert(nodes).values(
                        id=node.id,
                        address=node.address,
                        version=node.version,
                        started_us=us(node.started_at),
                        heartbeat_us=us(now),
                    )
                )

    async def stop(self, node_id: str, now: float) -> None:
        """The node stopped cleanly (its calls hung up and recorded)."""
        async with self.db.write() as conn:
            await conn.execute(
                update(nodes)
                .where(nodes.c.id == node_id)
                .values(heartbeat_us=us(now), stopped_us=us(now))
            )

    async def list(self) -> tuple[NodeInfo, ...]:
        """Every node written down, the most recently started first."""
        async with self.db.read() as conn:
            rows = (await conn.execute(select(nodes).order_by(nodes.c.started_us.desc()))).all()
        return tuple(_node(r) for r in rows)

    async def prune(self, before: float) -> int:
        """Forget nodes whose last heartbeat is older than ``before``; how many."""
        async with self.db.write() as conn:
            result = await conn.execute(delete(nodes).where(nodes.c.heartbeat_us < us(before)))
        return int(result.rowcount)
