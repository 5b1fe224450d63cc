"""`python -m compliance.worker`: the compliance worker process (consumer, relay, retries, sweepers)."""

from registry_common.worker import main

from compliance.definition import DEFINITION

if __name__ == "__main__":
    main(DEFINITION)
