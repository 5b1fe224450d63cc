"""`python -m notifications.worker`: the notifications worker process (consumer, relay, retries, sweepers)."""

from registry_common.worker import main

from notifications.definition import DEFINITION

if __name__ == "__main__":
    main(DEFINITION)
