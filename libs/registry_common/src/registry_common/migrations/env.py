"""Alembic environment shared by every service: the chassis branch plus the service's own revisions.

Migrations always run on a connection handed in by :mod:`registry_common.migrate` (as the service's
``_owner`` role), so they work from inside a running event loop.
"""

from alembic import context
from sqlalchemy import MetaData

connection = context.config.attributes["connection"]
target_metadata: MetaData | list[MetaData] = context.config.attributes["target_metadata"]

context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
