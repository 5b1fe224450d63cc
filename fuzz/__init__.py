"""API fuzzing with schemathesis through the gateway: `python -m fuzz` (`make fuzz`)."""
