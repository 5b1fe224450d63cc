"""The life of an account, free of I/O: which actions each state allows and where they lead, what an
account must be free of before it closes, who may see or act on an account, how accounts are numbered
and how a holder's tax id (RFC) is checked.

Every refusal has a stable code (``account.*``, ``holder.*``), registered with its messages in
``accounts.account_service``.

    requested --approve--> active <--reactivate-- suspended
        |                    |  \\---suspend--------^   |
        \\--reject--> rejected \\--close--> closed <--close-/

An installation's central (holding) and delivery (surrender) accounts are requested, approved, rejected
and closed together; suspension and reactivation concern the one account named.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from enum import StrEnum

from accounts.domain.ledger import AccountKind


class AccountState(StrEnum):
    REQUESTED = "requested"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"
    REJECTED = "rejected"


class Action(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    SUSPEND = "suspend"
    REACTIVATE = "reactivate"
    CLOSE = "close"


class LifecycleRefusal(Exception):
    """A lifecycle step the rules refuse; ``code`` is stable, ``field`` names the input at fault."""

    def __init__(self, code: str, field: str | None = None, **params: object):
        super().__init__(code)
        self.code = code
        self.field = field
        self.params = params


S, A = AccountState, Action
TRANSITIONS: dict[tuple[AccountState, Action], AccountState] = {
    (S.REQUESTED, A.APPROVE): S.ACTIVE,
    (S.REQUESTED, A.REJECT): S.REJECTED,
    (S.ACTIVE, A.SUSPEND): S.SUSPENDED,
    (S.SUSPENDED, A.REACTIVATE): S.ACTIVE,
    (S.ACTIVE, A.CLOSE): S.CLOSED,
    (S.SUSPENDED, A.CLOSE): S.CLOSED,
}
"""Every (state, action) pair not listed here is refused with ``account.illegal_transition``."""

FINAL_STATES = frozenset({S.CLOSED, S.REJECTED})
REQUEST_PHASE = frozenset({S.REQUESTED, S.REJECTED})
"""While an account is in one of these states, the user who asked for it may read it."""
LINKABLE_STATES = frozenset({S.REQUESTED, S.ACTIVE, S.SUSPENDED})
"""Representatives may be linked (or their rights changed) only while the account is not final;
unlinking is always allowed (taking access away is always safe)."""

PAIRED_ACTIONS = frozenset({A.APPROVE, A.REJECT, A.CLOSE})
"""Actions that move an installation's central and delivery accounts together."""

SYSTEM_KINDS = frozenset({AccountKind.CAP, AccountKind.RESERVE, AccountKind.ALLOCATION, AccountKind.AUCTION,
                          AccountKind.CANCELLATION})
PARTICIPANT_KINDS = frozenset({AccountKind.CENTRAL, AccountKind.DELIVERY, AccountKind.TRADING,
                               AccountKind.VERIFIER})


def next_state(kind: str, state: str, action: str) -> AccountState:
    """The state ``action`` leads to from ``state``, or a refusal. System accounts belong to the
    authority and have no lifecycle: they are opened by provisioning and never change state."""
    if kind in SYSTEM_KINDS:
        raise LifecycleRefusal("account.system_account", kind=kind, action=action)
    try:
        return TRANSITIONS[(AccountState(state), Action(action))]
    except (KeyError, ValueError):
        raise LifecycleRefusal("account.illegal_transition", action=action, state=state) from None


def check_linkable(kind: str, state: str) -> None:
    if kind in SYSTEM_KINDS:
        raise LifecycleRefusal("account.system_account", kind=kind, action="link_representative")
    if state not in LINKABLE_STATES:
        raise LifecycleRefusal("account.illegal_transition", action="link_representative", state=state)


def check_closable(*, blocks: int, open_holds: int) -> None:
    """Closure only with zero holdings: no block of units in the account(s), and no hold in state
    ``held`` sending from or receiving into them."""
    if blocks < 0 or open_holds < 0:
        raise ValueError("counts cannot be negative")
    if blocks or open_holds:
        raise LifecycleRefusal("account.not_empty", blocks=blocks, holds=open_holds)


# What is requested -----------------------------------------------------------------------------------
class RequestKind(StrEnum):
    INSTALLATION = "installation"
    INTERMEDIARY = "intermediary"
    VERIFIER = "verifier"


ACCOUNTS_OPENED_BY = {
    RequestKind.INSTALLATION: (AccountKind.CENTRAL, AccountKind.DELIVERY),  # first one is the primary
    RequestKind.INTERMEDIARY: (AccountKind.TRADING,),
    RequestKind.VERIFIER: (AccountKind.VERIFIER,),
}
PREFIX = {AccountKind.CENTRAL: "CEN", AccountKind.DELIVERY: "ENT", AccountKind.TRADING: "TRD",
          AccountKind.VERIFIER: "VER"}
NUMBER_SEQUENCE = {RequestKind.INSTALLATION: "account_number_installation",
                   RequestKind.INTERMEDIARY: "account_number_trading",
                   RequestKind.VERIFIER: "account_number_verifier"}
"""One sequence per request kind: an installation's two accounts share one number (CEN-n, ENT-n)."""
REQUESTING_ROLE = {RequestKind.INSTALLATION: "installation", RequestKind.INTERMEDIARY: "intermediary",
                   RequestKind.VERIFIER: "verifier"}
"""Besides administrators, a participant may ask for an account of its own kind only."""


def account_number(kind: AccountKind, number: int) -> str:
    if number < 1:
        raise ValueError("account numbers start at 1")
    return f"{PREFIX[kind]}-{number:06d}"


def may_request(roles: Iterable[str], kind: str) -> bool:
    roles = set(roles)
    return "administrator" in roles or REQUESTING_ROLE[RequestKind(kind)] in roles


# System accounts -------------------------------------------------------------------------------------
SYSTEM_ACCOUNTS: tuple[tuple[str, AccountKind, str], ...] = (
    ("SYS-CAP", AccountKind.CAP, "Cuenta de emisión bajo el tope"),
    ("SYS-ALLOC", AccountKind.ALLOCATION, "Cuenta de asignación gratuita"),
    ("SYS-AUCTION", AccountKind.AUCTION, "Cuenta de subastas"),
    ("SYS-CANCEL", AccountKind.CANCELLATION, "Cuenta de cancelación"),
)
RESERVE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


def reserve_names(setting: str) -> list[str]:
    """``"price_containment, new_entrants"`` → the names, in order, without repeats."""
    names: list[str] = []
    for part in setting.split(","):
        name = part.strip().lower()
        if not name:
            continue
        if not RESERVE_NAME.match(name):
            raise ValueError(f"reserve name {name!r} must match {RESERVE_NAME.pattern}")
        if name not in names:
            names.append(name)
    return names


def reserve_account_id(name: str) -> str:
    """``price_containment`` → ``SYS-RES-PRICE_CONTAINMENT``."""
    if not RESERVE_NAME.match(name):
        raise ValueError(f"reserve name {name!r} must match {RESERVE_NAME.pattern}")
    return f"SYS-RES-{name.upper()}"


# Who sees and acts on an account ---------------------------------------------------------------------
OVERSIGHT = frozenset({"authority", "authority-readonly", "administrator"})
PARTICIPANT_ROLES = frozenset({"installation", "intermediary", "verifier"})
RIGHTS = frozenset({"initiate", "approve", "view"})


class Access(StrEnum):
    GRANTED = "granted"
    NOT_FOUND = "not_found"  # the caller may not even know the account exists
    FORBIDDEN = "forbidden"  # the caller sees the account but lacks the right asked for


def access_decision(*, roles: Iterable[str], rights: Iterable[str], needed: str | None,
                    requester_in_request_phase: bool = False) -> Access:
    """Reading (``needed`` None or ``view``): oversight roles see every account; a representative sees
    its accounts whatever its rights; the user who asked for an account sees it while it is requested
    or rejected. Acting (``initiate``, ``approve``): only a participant holding that right on the
    account; oversight roles act through their own routes and the movement catalogue, never as
    representatives (the enforcement office changes nothing). Whoever may not read the account is
    told it does not exist."""
    roles, rights = set(roles), set(rights)
    if needed is not None and needed not in RIGHTS:
        raise ValueError(f"unknown right {needed!r}")
    sees = bool(roles & OVERSIGHT) or bool(rights) or requester_in_request_phase
    if not sees:
        return Access.NOT_FOUND
    if needed in (None, "view"):
        return Access.GRANTED
    if needed in rights and roles & PARTICIPANT_ROLES:
        return Access.GRANTED
    return Access.FORBIDDEN


# Holders ---------------------------------------------------------------------------------------------
# RFC: 3 letters (persona moral, 12 characters) or 4 (persona física, 13), the date of constitution or
# birth as YYMMDD, two characters of homoclave and a check character (a digit or A).
RFC_PATTERN = re.compile(r"^([A-ZÑ&]{3,4})(\d{2})(\d{2})(\d{2})([A-Z\d]{2})([A\d])$")


def normalise_rfc(text: str) -> str:
    """Upper case without spaces or hyphens, then the SAT's format and a real calendar date."""
    value = re.sub(r"[\s-]", "", text).upper()
    match = RFC_PATTERN.match(value)
    if match is None:
        raise LifecycleRefusal("holder.invalid_tax_id", field="holder.tax_id", tax_id=text)
    yy, mm, dd = int(match.group(2)), int(match.group(3)), int(match.group(4))
    if not any(_is_date(century + yy, mm, dd) for century in (1900, 2000)):
        raise LifecycleRefusal("holder.invalid_tax_id", field="holder.tax_id", tax_id=text)
    return value


def _is_date(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True
