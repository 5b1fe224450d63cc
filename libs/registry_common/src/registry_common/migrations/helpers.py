"""Helpers for migrations: append-only tables, insert and update notifications."""

from alembic import op

APPEND_ONLY_TRIGGER = "append_only_guard"


def make_append_only(table: str) -> None:
    """Refuse UPDATE, DELETE and TRUNCATE on ``table`` for every role (a superuser can still disable
    the trigger, which tamper tests do on purpose). Grants to ``_app`` are revoked by migrate()."""
    op.execute(
        """
        CREATE OR REPLACE FUNCTION refuse_append_only_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    op.execute(
        f"CREATE TRIGGER {APPEND_ONLY_TRIGGER} BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION refuse_append_only_change()"
    )
    op.execute(
        f"CREATE TRIGGER {APPEND_ONLY_TRIGGER}_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION refuse_append_only_change()"
    )


def notify_on_insert(table: str, channel: str) -> None:
    """Wake listeners (the relay, the retry sweeper) when a transaction inserting into ``table``
    commits. A statement-level trigger: one notification per statement, folded per transaction."""
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION notify_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END $$
        """
    )
    op.execute(
        f"CREATE TRIGGER notify_{table} AFTER INSERT ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION notify_{table}()"
    )


def notify_on_update(table: str, channel: str, key: str = "id", version: str = "version") -> None:
    """Tell listeners (:class:`registry_common.change_feed.ChangeFeed`) which row of ``table`` changed and
    to which version, when the transaction updating it commits: ``pg_notify(channel, '<key> <version>')``."""
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION notify_{table}_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_notify('{channel}', NEW.{key}::text || ' ' || NEW.{version}::text); RETURN NULL; END $$
        """
    )
    op.execute(
        f"CREATE TRIGGER notify_{table}_changed AFTER UPDATE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION notify_{table}_changed()"
    )
