"""`python -m accounts.worker`: the accounts worker process (consumer, relay, retries, sweepers)."""

from registry_common.worker import main

from accounts.definition import DEFINITION

if __name__ == "__main__":
    main(DEFINITION)
