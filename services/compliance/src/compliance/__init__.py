"""The compliance service of the registry (see ../../README.md and ARCHITECTURE.md)."""
