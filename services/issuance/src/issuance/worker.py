"""`python -m issuance.worker`: the issuance worker process (consumer, relay, retries, sweepers)."""

from issuance.definition import DEFINITION
from registry_common.worker import main

if __name__ == "__main__":
    main(DEFINITION)
