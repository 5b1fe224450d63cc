"""Root of the test suite: the chassis's pytest plugin gives every test real servers, isolated per run."""

pytest_plugins = ["registry_common.testing.fixtures"]
