"""`python -m auctions.api`: the auctions API process."""

from registry_common.api import serve

from auctions.definition import DEFINITION

if __name__ == "__main__":
    serve(DEFINITION)
