"""The e-mail a notification row becomes: what a mail client reads back, accents and all."""

from __future__ import annotations

import email
import socket
from datetime import UTC, datetime
from email import policy
from types import SimpleNamespace
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtplib.email import extract_recipients, extract_sender, flatten_message

from notifications.delivery import email_bytes, email_message, envelope_sender, send_message

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


# The e-mail's bytes: ours are aiosmtplib's, for every kind of row ----------------------------------------------
def rows() -> list[SimpleNamespace]:
    """Rows whose headers and bodies take every path of the folding: short and long values, spaces, accents, a
    subject longer than a line, a body line starting "From ", every kind of line end, an English row."""
    long_subject = "Transferencia propuesta a su cuenta MX-100-000123 — acción requerida antes del plazo " * 2
    bodies = [ROW.body, "From the registry:\nFrom here on\n", "a\r\nb\rc\n\nd", "x" * 200 + "\n", "",
              "línea con acentos y = signos =\n" * 5, ".\n..\nFrom \n"]
    subjects = [ROW.subject, long_subject, "Transfer accepted", "", "=?utf-8?q?x?=", "a  b\tc", "ñ" * 90]
    addresses = [ROW.address, "a" * 70 + "@example.mx", "Ana Pérez <ana@example.mx>", "x@y"]
    made = []
    for i, body in enumerate(bodies):
        for j, subject in enumerate(subjects):
            made.append(SimpleNamespace(**{**vars(ROW), "body": body, "subject": subject,
                                           "address": addresses[(i + j) % len(addresses)],
                                           "language": "en" if j % 2 else "es",
                                           "stable_id": ROW.stable_id if j % 3 else "<" + "e" * 80 + "@registro.mx>",
                                           "notification_type": "transfer_accepted" if i % 2 else "t" * 70}))
    return made


@pytest.mark.parametrize("mail_from", ["Registro de Emisiones <notificaciones@registro.example.mx>",
                                       "Registro Nacional — SEMARNAT <notificaciones@registro.example.mx>"])
@pytest.mark.parametrize("cte_type", ["8bit", "7bit"])
def test_the_bytes_are_aiosmtplibs(mail_from: str, cte_type: str) -> None:
    for row in rows():
        message = email_message(row, SimpleNamespace(mail_from=mail_from))
        assert email_bytes(message, cte_type) == flatten_message(message, cte_type=cte_type), row


class Recorder:
    """An SMTP server (aiosmtpd, in a thread) keeping each envelope: sender, options, recipients, bytes."""

    def __init__(self) -> None:
        self.envelopes: list[tuple[Any, ...]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        self.envelopes.append((envelope.mail_from, envelope.mail_options, envelope.rcpt_tos, envelope.content))
        return "250 OK"


async def test_sending_is_aiosmtplibs_send_message() -> None:
    recorder = Recorder()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings = SimpleNamespace(mail_from="Registro Nacional — SEMARNAT <notificaciones@registro.example.mx>")
        for send in ("aiosmtplib", "ours"):
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=False, start_tls=False)
            await client.connect()
            for row in rows():
                message = email_message(row, settings)
                if send == "ours":
                    await send_message(client, message, envelope_sender(settings.mail_from))
                else:
                    await client.send_message(message)
            await client.quit()
    finally:
        controller.stop()
    half = len(recorder.envelopes) // 2
    assert half == len(rows()) and recorder.envelopes[:half] == recorder.envelopes[half:]
