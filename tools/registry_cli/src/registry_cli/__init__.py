"""``registry``: the operators' command line. It talks to the public API (the gateway) only."""
