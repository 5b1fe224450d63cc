"""Named fault points, so a crash test lands exactly in the window it claims to test.

``REGISTRY_FAULTS="after_commit_before_ack=exit"`` makes the process die (``os._exit``, no clean-up,
as a SIGKILL would) the first time it reaches that point; ``=raise`` raises :class:`FaultInjected`.
With ``REGISTRY_FAULT_MARKER_DIR`` set, a point fires only while it is armed: a test arms it by creating
``<dir>/<point>.armed``, and firing renames that file to ``.fired`` (atomically), so exactly one crash
happens and the restarted process carries on. Refused in production by the settings. Known points:

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
        try:
            (_marker_dir[0] / f"{point}.armed").rename(_marker_dir[0] / f"{point}.fired")
        except FileNotFoundError:
            return
    log.critical("fault point %s reached: %s", point, action)
    if action == "exit":
        sys.stderr.flush()
        os._exit(137)
    raise FaultInjected(point)
