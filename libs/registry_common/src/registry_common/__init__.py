"""The chassis every registry service stands on: settings, database, programme clock, outbox, inbox and
consumer runner, errors, identity, audit log, approvals, logging, health and metrics, test fixtures."""
