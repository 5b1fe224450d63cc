"""`python -m auctions.worker`: the auctions worker process (consumer, relay, retries, sweepers)."""

from registry_common.worker import main

from auctions.definition import DEFINITION

if __name__ == "__main__":
    main(DEFINITION)
