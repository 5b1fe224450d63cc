"""Waiting for a row to change, for long-polling reads (``Prefer: wait=N`` with ``If-None-Match``).

A table's trigger runs ``pg_notify(channel, '<key> <version>')`` in the transaction that changes a row,
so the notification arrives only after that change is committed. One LISTEN connection per API process;
a request that waits registers its key and the version it has *before* it reads the row (a change
committed between the read and the wait is not missed), then waits at most its bound; a notification of
the version it already has (its own change, told late) does not wake it. While the listener is down (database restart),
waiters are woken every ``reconnect_seconds`` to read again: a lost notification costs a late answer,
never a wrong one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

log = logging.getLogger("registry.change_feed")


class Watch:
    """One waiting reader: the version it has, and the event a newer one sets."""

    __slots__ = ("changed", "known")

    def __init__(self, known: str | None):
        self.known = known
        self.changed = asyncio.Event()


class ChangeFeed:
    def __init__(self, dsn: str, channel: str, *, reconnect_seconds: float = 1.0):
        self.dsn = dsn
        self.channel = channel
        self.reconnect_seconds = reconnect_seconds
        self._waiters: defaultdict[str, set[Watch]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        self.application_name = f"change-feed {channel}"

    async def __aenter__(self) -> ChangeFeed:
        self._task = asyncio.create_task(self._listen(), name=f"change-feed-{self.channel}")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._wake_all()

    @contextmanager
    def watch(self, key: str, known: str | None = None) -> Iterator[Watch]:
        """A watch woken when ``key`` reaches a version other than ``known`` (or when changes may have been
        missed); register it before reading what you compare against, and move ``known`` as you read."""
        watch = Watch(known)
        self._waiters[key].add(watch)
        try:
            yield watch
        finally:
            waiting = self._waiters.get(key)
            if waiting is not None:
                waiting.discard(watch)
                if not waiting:
                    del self._waiters[key]

    def _changed(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        key, _, version = payload.partition(" ")
        for watch in self._waiters.get(key, ()):
            if not version or version != watch.known:
                watch.changed.set()

    def _wake_all(self) -> None:
        for waiting in self._waiters.values():
            for watch in waiting:
                watch.changed.set()

    async def _listen(self) -> None:
        while True:
            try:
                conn = await asyncpg.connect(self.dsn, server_settings={"application_name": self.application_name})
                try:
                    lost = asyncio.Event()
                    conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                    await conn.add_listener(self.channel, self._changed)
                    self.listening.set()
                    self._wake_all()  # anything committed while not listening: read again
                    await lost.wait()
                finally:
                    self.listening.clear()
                    if not conn.is_closed():
                        await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("change feed %s: listener lost: %r", self.channel, exc)
            self._wake_all()
            await asyncio.sleep(self.reconnect_seconds)
