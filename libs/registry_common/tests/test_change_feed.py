"""The change feed against the real PostgreSQL: a watch wakes on a newer version of its key only (not on
its own version told late, not on another key), and a lost listener wakes every watch to read again."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from registry_common.change_feed import ChangeFeed
from registry_common.db import asyncpg_dsn
from registry_common.settings import RegistrySettings
from registry_common.testing.fixtures import wait_for
from registry_common.testing.servers import terminate_backends

pytestmark = pytest.mark.integration
CHANNEL = "probe_changed"


async def test_a_watch_wakes_on_a_newer_version_of_its_key_only(probe_settings: RegistrySettings, probe_db):
    dsn = asyncpg_dsn(probe_settings.app_database_url)
    notifier = await asyncpg.connect(dsn)
    try:
        async with ChangeFeed(dsn, CHANNEL) as feed:
            await asyncio.wait_for(feed.listening.wait(), timeout=10)
            with feed.watch("t-1", known="3") as watch, feed.watch("t-2") as other:
                watch.changed.clear()
                other.changed.clear()
                await notifier.execute("SELECT pg_notify($1, 't-1 3')", CHANNEL)  # its own version: no
                await notifier.execute("SELECT pg_notify($1, 't-3 9')", CHANNEL)  # another key: no
                await notifier.execute("SELECT pg_notify($1, 't-2 1')", CHANNEL)  # the other watch: yes
                await asyncio.wait_for(other.changed.wait(), timeout=10)
                assert not watch.changed.is_set()
                await notifier.execute("SELECT pg_notify($1, 't-1 4')", CHANNEL)
                await asyncio.wait_for(watch.changed.wait(), timeout=10)

                watch.changed.clear()  # the listener's connection is lost: every watch reads again
                assert await terminate_backends(probe_settings.admin_database_url, feed.application_name) == 1
                await asyncio.wait_for(watch.changed.wait(), timeout=10)
                await wait_for(lambda: feed.listening.is_set(), timeout=30, what="the feed to listen again")
    finally:
        await notifier.close()
