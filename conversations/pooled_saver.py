"""LangGraph's PostgresSaver on a pool: each operation takes a pooled connection of its
own, and the async methods run the sync ones on threads (see conversations.checkpointer)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.postgres import PostgresSaver
from psycopg_pool import ConnectionPool

_executor: ThreadPoolExecutor | None = None


async def _in_thread(func: Any, *args: Any) -> Any:
    """Run a sync checkpoint operation on threads sized to the pool (the loop's default
    executor has cpu+4 threads, which queues hundreds of concurrent streams behind it)."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(settings.CHATTER_CHECKPOINT_POOL_SIZE, "checkpoints")
    context = contextvars.copy_context()
    call = functools.partial(context.run, func, *args)
    return await asyncio.get_running_loop().run_in_executor(_executor, call)


class PooledPostgresSaver(PostgresSaver):
    def __init__(self, pool: ConnectionPool) -> None:
        super().__init__(pool)
        # PostgresSaver serialises every operation on one process-wide lock, which a single
        # shared connection needs; each operation here takes its own pooled connection.
        self.lock = contextlib.nullcontext()  # type: ignore[assignment]

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await _in_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        rows = await _in_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for row in rows:
            yield row

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await _in_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await _in_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await _in_thread(self.delete_thread, thread_id)
