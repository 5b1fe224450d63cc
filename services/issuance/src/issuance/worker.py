"""`python -m issuance.worker`: the issuance worker process (consumer, relay, retries, sweepers)."""

from registry_common.worker import main

from issuance.definition import DEFINITION

if __name__ == "__main__":
    main(DEFINITION)
