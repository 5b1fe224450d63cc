"""`python -m issuance.api`: the issuance API process."""

from registry_common.api import serve

from issuance.definition import DEFINITION

if __name__ == "__main__":
    serve(DEFINITION)
