"""`python -m notifications.api`: the notifications API process."""

from notifications.definition import DEFINITION
from registry_common.api import serve

if __name__ == "__main__":
    serve(DEFINITION)
