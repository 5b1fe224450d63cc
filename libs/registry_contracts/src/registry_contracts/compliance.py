"""Events owned by compliance."""

from __future__ import annotations
