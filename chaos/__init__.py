"""The load-and-fault run: `python -m chaos` (`make chaos`)."""
