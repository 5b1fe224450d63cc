"""A newcomer's first minutes, as a check: through the gateway of a running `make up`, sign in as the
first administrator, create a user, see that user sign in. Exits non-zero with the reason otherwise.

    .venv/bin/python scripts/smoke.py [gateway URL]
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    gateway = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    password = os.environ.get("REGISTRY_BOOTSTRAP_ADMIN_PASSWORD") or (
        ROOT / "var" / "secrets" / "bootstrap_admin_password").read_text().strip()
    with httpx.Client(base_url=gateway, timeout=10) as http:
        signed_in = http.post("/api/v1/auth/token", json={"username": "admin", "password": password})
        signed_in.raise_for_status()
        admin = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        username = f"smoke-{secrets.token_hex(4)}"
        user_password = secrets.token_urlsafe(16)
        created = http.post("/api/v1/users", headers=admin, json={
            "username": username, "display_name": "Prueba de humo", "email": f"{username}@example.mx",
            "roles": ["installation"], "password": user_password})
        created.raise_for_status()
        again = http.post("/api/v1/auth/token", json={"username": username, "password": user_password})
        again.raise_for_status()
        listed = http.get("/api/v1/users", headers={"Authorization": f"Bearer {again.json()['access_token']}"})
        if listed.status_code != 403:
            sys.exit(f"an installation user could list users: {listed.status_code}")
    print(f"smoke: signed in as admin, created {username}, who signed in and was refused the user list")


if __name__ == "__main__":
    main()
