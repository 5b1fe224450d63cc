"""`python -m notifications.api`: the notifications API process."""

from registry_common.api import serve

from notifications.definition import DEFINITION

if __name__ == "__main__":
    serve(DEFINITION)
