"""`python -m notifications.worker`: the notifications worker process (consumer, relay, retries, sweepers)."""

from notifications.definition import DEFINITION
from registry_common.worker import main

if __name__ == "__main__":
    main(DEFINITION)
