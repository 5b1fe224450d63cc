"""``python -m registry_cli`` is the ``registry`` command."""

from registry_cli.main import main

main()
