"""Notifications' own settings (``REGISTRY_`` prefix, like the chassis)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from registry_common.settings import RegistrySettings


class NotificationsSettings(RegistrySettings):
    # E-mail (no TLS in development and test; a relay on the host in production).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    mail_from: str = "Registro de Emisiones <notificaciones@registro.example.mx>"
    message_id_domain: str = "notificaciones.registro.example.mx"
    # The authority's recipients (comma-separated e-mail addresses) and their language.
    authority_emails: str = ""
    authority_language: Literal["es", "en"] = "es"
    # Webhooks.
    webhook_ca_file: Path | None = Field(default=None, description="CA bundle for webhook TLS (default: system)")
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # The delivery worker: poll interval, batch, lease, exponential back-off, when to give up.
    delivery_poll_seconds: float = Field(default=1.0, gt=0)
    delivery_batch_size: int = Field(default=50, gt=0)
    delivery_lease_seconds: float = Field(default=60.0, gt=0, description="a claimed delivery is retried after")
    delivery_retry_base_seconds: float = Field(default=5.0, gt=0)
    delivery_retry_max_seconds: float = Field(default=3600.0, gt=0)
    delivery_give_up_after_seconds: float = Field(default=3 * 24 * 3600.0, gt=0)

    @property
    def authority_addresses(self) -> list[str]:
        return [a.strip() for a in self.authority_emails.split(",") if a.strip()]
