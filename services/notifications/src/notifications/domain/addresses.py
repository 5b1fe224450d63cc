"""Where a webhook may point: HTTPS only, and in production never at loopback, private, link-local or
otherwise non-public addresses (the host is resolved; every address must be public)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit


class TargetRefused(ValueError):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code


def classify(address: str) -> str:
    """public | loopback | private | link_local | multicast | reserved | unspecified."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link_local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return "public"


def check_url(url: str) -> str:
    """The URL's host, if the URL is an absolute HTTPS URL with a host; else TargetRefused."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "https":
        raise TargetRefused("notification.webhook_not_https", "not https")
    if not parts.hostname:
        raise TargetRefused("notification.webhook_url_invalid", "no host")
    if parts.username or parts.password:
        raise TargetRefused("notification.webhook_url_invalid", "credentials in the URL")
    try:
        _ = parts.port
    except ValueError as exc:
        raise TargetRefused("notification.webhook_url_invalid", "bad port") from exc
    return parts.hostname


def check_addresses(addresses: Iterable[str], *, production: bool) -> None:
    """In production every resolved address must be public; elsewhere anything goes."""
    found = list(addresses)
    if not found:
        raise TargetRefused("notification.webhook_unresolvable", "the host does not resolve")
    if not production:
        return
    for address in found:
        kind = classify(address)
        if kind != "public":
            raise TargetRefused("notification.webhook_private_target", f"{address} is {kind}")
