"""`python -m accounts.api`: the accounts API process."""

from registry_common.api import serve

from accounts.definition import DEFINITION

if __name__ == "__main__":
    serve(DEFINITION)
