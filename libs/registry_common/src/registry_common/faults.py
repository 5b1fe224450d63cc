"""Named fault points, so a crash test lands exactly in the window it claims to test.

``REGISTRY_FAULTS="after_commit_before_ack=exit"`` makes the process die (``os._exit``, no clean-up,
as a SIGKILL would) the first time it reaches that point; ``=raise`` raises :class:`FaultInjected`.
With ``REGISTRY_FAULT_MARKER_DIR`` set, each point fires once: a marker file records that it fired, so
the restarted process carries on (the crash tests need exactly one crash). Refused in production by
the settings. Known points:

- ``after_commit_before_ack``: a consumer committed a message's effect and has not acked it yet;
- ``relay_after_publish_before_mark``: the relay published a batch and has not marked it sent.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("registry.faults")
KNOWN_POINTS = frozenset({"after_commit_before_ack", "relay_after_publish_before_mark"})
_armed: dict[str, str] = {}
_marker_dir: list[Path] = []


class FaultInjected(RuntimeError):
    pass


def configure_faults(spec: str, marker_dir: Path | None = None) -> None:
    _armed.clear()
    _marker_dir[:] = [marker_dir] if marker_dir is not None else []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, _, action = item.partition("=")
        if point not in KNOWN_POINTS or action not in {"exit", "raise"}:
            raise ValueError(f"unknown fault {item!r}; points: {sorted(KNOWN_POINTS)}, actions: exit, raise")
        _armed[point] = action


def fault_point(point: str) -> None:
    action = _armed.get(point)
    if action is None:
        return
    if _marker_dir:
        marker = _marker_dir[0] / f"{point}.fired"
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()))
    log.critical("fault point %s reached: %s", point, action)
    if action == "exit":
        sys.stderr.flush()
        os._exit(137)
    raise FaultInjected(point)
