"""The e-mail a notification row becomes: what a mail client reads back, accents and all."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy
from types import SimpleNamespace

import pytest
from aiosmtplib.email import extract_recipients, extract_sender, flatten_message

from notifications.delivery import email_message, envelope_sender

ROW = SimpleNamespace(
    body="Hola,\n\nLa cuenta MX-100-000123 le propone 10 derechos de emisión (añada 2021).\nPlazo: 24 h.\n",
    address="ana.perez@example.mx", subject="Transferencia propuesta — acción requerida", language="es",
    stable_id="<e1.user@registro.example.mx>", occurred_at=datetime(2026, 11, 23, 18, 0, tzinfo=UTC),
    event_id="2f1c7b1e-0000-4000-8000-000000000001", notification_type="transfer_proposed")


@pytest.mark.parametrize("mail_from", ["Registro de Emisiones <notificaciones@registro.example.mx>",
                                       "Registro Nacional — SEMARNAT <notificaciones@registro.example.mx>",
                                       "notificaciones@registro.example.mx"])
def test_a_mail_client_reads_back_every_field(mail_from: str) -> None:
    message = email_message(ROW, SimpleNamespace(mail_from=mail_from))
    assert extract_sender(message) == "notificaciones@registro.example.mx" == envelope_sender(mail_from)
    assert extract_recipients(message) == ["ana.perez@example.mx"]
    raw = flatten_message(message)
    assert raw.isascii()  # 7-bit on the wire: quoted-printable body, RFC 2047 words in headers
    read = email.message_from_bytes(raw, policy=policy.default)
    assert read["From"] == mail_from and read["To"] == ROW.address and read["Subject"] == ROW.subject
    assert read.get_content() == ROW.body and read.get_content_charset() == "utf-8"
    assert (read["Message-ID"], read["Content-Language"], read["Auto-Submitted"]) == (
        ROW.stable_id, "es", "auto-generated")
    assert read["X-Registry-Event-ID"] == ROW.event_id and read["X-Registry-Notification"] == "transfer_proposed"
    assert read["Date"].datetime == ROW.occurred_at
