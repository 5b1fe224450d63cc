"""The gateway: the single public HTTP entry. It owns nothing durable and has no worker."""
