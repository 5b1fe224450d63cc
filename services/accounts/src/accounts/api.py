"""`python -m accounts.api`: the accounts API process."""

from accounts.definition import DEFINITION
from registry_common.api import serve

if __name__ == "__main__":
    serve(DEFINITION)
