"""Database access: engines are built at start-up (never at import), one pool per process."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool


def make_engine(url: str, *, pool_size: int, application_name: str, max_overflow: int = 0) -> AsyncEngine:
    """An asyncpg engine. ``pool_size=0`` means no pooling (tests, one-shot tools)."""
    connect_args = {"server_settings": {"application_name": application_name[:63]}}
    if pool_size == 0:
        return create_async_engine(url, poolclass=NullPool, connect_args=connect_args)
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        connect_args=connect_args,
    )
    event.listen(engine.sync_engine, "checkout", _refuse_closed)
    return engine


def _refuse_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """At checkout, a pooled connection the server has closed (a backend terminated, PostgreSQL
    restarted: asyncpg sees the socket close as soon as it happens) is replaced with a new one — what
    ``pool_pre_ping`` would do, without its round trip on every checkout. A connection lost while in use
    fails that one piece of work, which SQLAlchemy then invalidates with the rest of the pool."""
    if dbapi_connection._connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def asyncpg_dsn(url: str) -> str:
    """The plain libpq form of a SQLAlchemy URL, for raw asyncpg connections (LISTEN, admin)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means the database could not be reached (nothing was done), as opposed to an
    error the database reported about the work itself."""
    import asyncpg
    from sqlalchemy.exc import DBAPIError, InterfaceError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, InterfaceError):
        return True
    cause = getattr(exc, "orig", None) or exc.__cause__ or exc
    return isinstance(
        cause,
        (OSError, ConnectionError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
         asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.ConnectionDoesNotExistError),
    )
