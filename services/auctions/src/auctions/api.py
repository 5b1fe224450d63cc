"""`python -m auctions.api`: the auctions API process."""

from auctions.definition import DEFINITION
from registry_common.api import serve

if __name__ == "__main__":
    serve(DEFINITION)
