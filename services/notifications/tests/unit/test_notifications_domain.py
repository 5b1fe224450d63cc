"""Pure rules of notifications: templates in both languages, Standard Webhooks signatures, stable ids,
where a webhook may point, and the retry schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from standardwebhooks.webhooks import Webhook

from notifications.domain.addresses import TargetRefused, check_addresses, check_url, classify
from notifications.domain.backoff import next_attempt, retry_delay, schedule
from notifications.domain.catalogue import RULES
from notifications.domain.signing import headers, message_id, new_secret, sign, webhook_id
from notifications.rendering import LANGUAGES, available_types, render

FACTS = {"transfer_id": "3f1e0000-0000-0000-0000-000000000001", "sender_account_id": "MX-100-1",
         "receiver_account_id": "MX-200-2", "unit_type": "allowance", "quantity": 30, "vintage": 2021,
         "acceptance_deadline": "2021-05-02T12:00:00+00:00", "hours_left": 2, "reason": "rejected",
         "code": "ledger.insufficient_units", "installation_account_id": "MX-300-3", "period": "2021",
         "movement_id": "m-1", "table_id": "t-1", "method": "table",
         # compliance
         "evaluation_id": "e-1", "status": "compliant", "emissions": 30, "obligation": 30, "counted": 30,
         "shortfall": 0, "carried_to_next_period": 0, "adjustment": False, "cancelled_quantity": 30,
         "cancelled_blocks": [{"unit_type": "allowance", "vintage": 2021, "origin": "", "quantity": 30,
                               "ranges": [{"start": 1, "end": 30}]}], "returned_quantity": 0,
         "to_surrender": 30, "delivered_eligible": 30, "preview_id": "p-1", "kind": "programme_end",
         "account_id": "MX-300-3", "told_account_id": "MX-300-3", "executable_from": "2023-11-20T00:00:00+00:00",
         "blocks": [{"unit_type": "allowance", "vintage": 2021, "origin": "", "quantity": 30,
                     "ranges": [{"start": 1, "end": 30}]}],
         # auctions
         "auction_id": "5a0c0000-0000-0000-0000-000000000001", "bidder_account_id": "MX-400-4", "bid_quantity": 40,
         "awarded_quantity": 30, "clearing_price": "18.00", "currency": "MXN", "amount_due": "540.00",
         "payment_deadline": "2021-05-02T12:00:00+00:00", "reserve_price": "16.68", "price_step": "0.01",
         "lot_size": 10, "purchase_limit": 30, "bidding_opens_at": "2021-04-01T15:00:00+00:00",
         "bidding_closes_at": "2021-04-01T18:00:00+00:00", "source_account_id": "SYS-CAP",
         "returned_to": "SYS-RES-PRICE_CONTAINMENT"}


def test_every_notification_type_has_a_template_in_each_language():
    types = {rule.notification_type for rule in RULES.values()}
    assert {(lang, t) for lang in LANGUAGES for t in types} <= available_types()


@pytest.mark.parametrize("notification_type", sorted({r.notification_type for r in RULES.values()}))
@pytest.mark.parametrize("side", ["sender", "receiver", "installation", "authority"])
def test_templates_render_in_spanish_and_english(notification_type, side):
    es_subject, es_body = render(notification_type, "es", FACTS, side=side)
    en_subject, en_body = render(notification_type, "en", FACTS, side=side)
    assert es_subject and en_subject and es_subject != en_subject
    assert "\n" not in es_subject and "\n" not in en_subject
    assert "30" in es_body and "30" in en_body
    assert "{{" not in es_body + en_body


def test_compliance_is_worded_by_status_for_installation_and_authority():
    short = {**FACTS, "status": "non_compliant", "reason": "shortfall", "counted": 20, "shortfall": 10}
    assert render("compliance_evaluated", "es", short, side="installation")[0] == \
        "Cumplimiento del periodo 2021: no cumple (MX-300-3)"
    assert render("compliance_evaluated", "en", FACTS, side="authority")[0] == \
        "Compliance for period 2021: compliant (MX-300-3)"
    assert render("compliance_evaluated", "es", FACTS, side="authority")[1].startswith("La instalación MX-300-3")
    missing = {**FACTS, "status": "non_compliant", "reason": "no_attested_report", "emissions": None}
    assert "sin reporte verificado" in render("compliance_evaluated", "es", missing, side="installation")[1]
    assert "1–30" in render("units_cancelled", "en", FACTS, side="installation")[1]
    # An intermediate year of a multi-year period says so (a facts dict without the field renders as before).
    yearly = {**short, "period": "2021-2023", "intermediate_year": 2021}
    assert render("compliance_evaluated", "es", yearly, side="installation")[0] == \
        "Cumplimiento del periodo 2021-2023, año intermedio 2021: no cumple (MX-300-3)"
    assert "in intermediate year 2021" in render("compliance_evaluated", "en", yearly, side="authority")[1]
    assert render("units_cancelled", "en", {**FACTS, "intermediate_year": 2021}, side="installation")[0] \
        .startswith("Units cancelled for compliance, period 2021, intermediate year 2021:")


def test_wording_by_language_and_reason():
    subject, body = render("transfer_proposed", "es", FACTS, side="receiver")
    assert subject == "Transferencia propuesta a su cuenta MX-200-2"
    assert "derechos de emisión del año 2021" in body and "02/05/2021 07:00" in body  # programme time zone
    assert render("transfer_proposed", "en", FACTS, side="receiver")[0] == "Transfer proposed to your account MX-200-2"
    expired = {**FACTS, "reason": "expired"}
    assert "expired without acceptance" in render("transfer_reversed", "en", expired, side="sender")[0]
    assert "vencida sin aceptación" in render("transfer_reversed", "es", expired, side="sender")[0]
    assert render("transfer_accepted", "xx", FACTS, side="sender")[0].startswith("Transferencia")  # Spanish default


def test_signature_matches_the_standardwebhooks_library_and_verifies():
    secret = new_secret()
    assert secret.startswith("whsec_")
    body = '{"type":"transfers.transfer_completed","data":{"quantity":30}}'
    msg_id, ts = webhook_id(uuid4(), "webhook:x"), int(datetime.now(UTC).timestamp())
    library = Webhook(secret)
    assert sign(secret, msg_id, ts, body) == library.sign(msg_id, datetime.fromtimestamp(ts, UTC), body)
    assert library.verify(body, headers(secret, msg_id, ts, body)) == {
        "type": "transfers.transfer_completed", "data": {"quantity": 30}}
    with pytest.raises(Exception, match="signature"):
        library.verify(body + " ", headers(secret, msg_id, ts, body))


def test_stable_ids_depend_on_event_and_recipient_only():
    event = uuid4()
    assert message_id(event, "user:a", "x.mx") == message_id(event, "user:a", "x.mx")
    assert message_id(event, "user:a", "x.mx") != message_id(event, "user:b", "x.mx")
    assert message_id(event, "user:a", "x.mx") != message_id(uuid4(), "user:a", "x.mx")
    assert message_id(event, "user:a", "x.mx").startswith("<") and message_id(event, "user:a", "x.mx").endswith(
        "@x.mx>")
    assert webhook_id(event, "webhook:1") == webhook_id(event, "webhook:1") != webhook_id(event, "webhook:2")


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.9", "private"),
    ("192.168.1.1", "private"), ("fd00::1", "private"), ("169.254.169.254", "link_local"), ("fe80::1", "link_local"),
    ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"), ("::ffff:127.0.0.1", "loopback"),
    ("100.64.0.1", "reserved"), ("8.8.8.8", "public"), ("2001:4860:4860::8888", "public"),
])
def test_address_classification(address, kind):
    assert classify(address) == kind


def test_production_refuses_non_public_targets_and_elsewhere_allows_them():
    check_addresses(["8.8.8.8"], production=True)
    check_addresses(["127.0.0.1"], production=False)
    for bad in (["127.0.0.1"], ["8.8.8.8", "10.0.0.1"], ["169.254.169.254"]):
        with pytest.raises(TargetRefused) as refused:
            check_addresses(bad, production=True)
        assert refused.value.code == "notification.webhook_private_target"
    with pytest.raises(TargetRefused) as none:
        check_addresses([], production=True)
    assert none.value.code == "notification.webhook_unresolvable"


@pytest.mark.parametrize(("url", "code"), [
    ("http://example.com/hook", "notification.webhook_not_https"),
    ("ftp://example.com/hook", "notification.webhook_not_https"),
    ("https:///nohost", "notification.webhook_url_invalid"),
    ("https://user:pw@example.com/", "notification.webhook_url_invalid"),
    ("https://example.com:99999/", "notification.webhook_url_invalid"),
])
def test_urls_refused(url, code):
    with pytest.raises(TargetRefused) as refused:
        check_url(url)
    assert refused.value.code == code


def test_back_off_doubles_to_a_cap_and_gives_up_after_the_deadline():
    assert schedule(6, 5, 60) == [5, 10, 20, 40, 60, 60]
    assert retry_delay(0, 5, 60) == 0 and retry_delay(200, 5, 60) == 60
    now = datetime(2021, 1, 1, tzinfo=UTC)
    assert next_attempt(now, 1, 5, 60, now + timedelta(hours=1)) == now + timedelta(seconds=5)
    assert next_attempt(now, 3, 5, 60, now + timedelta(seconds=19)) is None
