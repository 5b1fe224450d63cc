"""`python -m auctions.worker`: the auctions worker process (consumer, relay, retries, sweepers)."""

from auctions.definition import DEFINITION
from registry_common.worker import main

if __name__ == "__main__":
    main(DEFINITION)
