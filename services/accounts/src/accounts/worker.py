"""`python -m accounts.worker`: the accounts worker process (consumer, relay, retries, sweepers)."""

from accounts.definition import DEFINITION
from registry_common.worker import main

if __name__ == "__main__":
    main(DEFINITION)
