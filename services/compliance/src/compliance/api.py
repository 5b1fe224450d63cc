"""`python -m compliance.api`: the compliance API process."""

from compliance.definition import DEFINITION
from registry_common.api import serve

if __name__ == "__main__":
    serve(DEFINITION)
