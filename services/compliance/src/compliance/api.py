"""`python -m compliance.api`: the compliance API process."""

from registry_common.api import serve

from compliance.definition import DEFINITION

if __name__ == "__main__":
    serve(DEFINITION)
