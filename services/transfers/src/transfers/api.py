"""`python -m transfers.api`: the transfers API process."""

from registry_common.api import serve
from transfers.definition import DEFINITION

if __name__ == "__main__":
    serve(DEFINITION)
