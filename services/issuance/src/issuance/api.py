"""`python -m issuance.api`: the issuance API process."""

from issuance.definition import DEFINITION
from registry_common.api import serve

if __name__ == "__main__":
    serve(DEFINITION)
