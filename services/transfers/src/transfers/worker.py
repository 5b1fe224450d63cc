"""`python -m transfers.worker`: the transfers worker process (consumer, relay, retries, sweepers)."""

from registry_common.worker import main
from transfers.definition import DEFINITION

if __name__ == "__main__":
    main(DEFINITION)
