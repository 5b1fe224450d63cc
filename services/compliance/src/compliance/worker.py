"""`python -m compliance.worker`: the compliance worker process (consumer, relay, retries, sweepers)."""

from compliance.definition import DEFINITION
from registry_common.worker import main

if __name__ == "__main__":
    main(DEFINITION)
