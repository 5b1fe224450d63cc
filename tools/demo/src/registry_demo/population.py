"""The demo's population, seeded through the public API as the registry's own administrator would: the
authority (two users, for four eyes), an administrator, the enforcement office (authority-readonly), the
installations (central and delivery accounts), two intermediaries and two verifiers, each account with a
representative user. Passwords are generated and written one file per user, mode 0600, in a folder of
mode 0700, with ``population.json`` (who is who, which accounts; no passwords)."""

from __future__ import annotations

import json
import os
import secrets
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry_demo.client import Actor

COMPANIES = [
    ("Cementos del Bajío", "León, Gto."), ("Acerera del Norte", "Monclova, Coah."),
    ("Vidriera de Monterrey", "Monterrey, N.L."), ("Papelera de Jalisco", "El Salto, Jal."),
    ("Termoeléctrica del Valle de Tula", "Tula, Hgo."), ("Refinadora del Istmo", "Salina Cruz, Oax."),
    ("Química Coatzacoalcos", "Coatzacoalcos, Ver."), ("Cervecera de Zacatecas", "Calera, Zac."),
    ("Cales y Morteros de Puebla", "Tehuacán, Pue."), ("Fundidora de Torreón", "Torreón, Coah."),
    ("Celulosa de Durango", "Durango, Dgo."), ("Azucarera del Papaloapan", "Tres Valles, Ver."),
    ("Generadora Altamira", "Altamira, Tamps."), ("Cerámica de Saltillo", "Saltillo, Coah."),
    ("Petroquímica Cosoleacaque", "Cosoleacaque, Ver."), ("Aceros de Lázaro Cárdenas", "Lázaro Cárdenas, Mich."),
    ("Cementera de Hidalgo", "Atotonilco de Tula, Hgo."), ("Vidrio Plano de Mexicali", "Mexicali, B.C."),
    ("Fertilizantes del Pacífico", "Topolobampo, Sin."), ("Minera y Fundidora de Sonora", "Nacozari, Son."),
]
INTERMEDIARIES = [("Bolsa Ambiental Mexicana", "bolsa"), ("Carbono Capital Casa de Bolsa", "carbono")]
ADMINISTRATOR = "admin.registro"  # the registry's administrator user the demo creates first
VERIFIERS = [("Verificadora Ambiental Certificada", "verac"), ("Auditores de Emisiones del Centro", "audemc")]


def rfc(company: str) -> str:
    """A made-up RFC of a company (persona moral): three letters, the date of constitution (YYMMDD), two
    characters of homoclave and a check character (a digit or A)."""
    ascii_name = unicodedata.normalize("NFKD", company).encode("ascii", "ignore").decode().upper()
    letters = ("".join(c for c in ascii_name if "A" <= c <= "Z") + "XXX")[:3]
    constituted = f"{secrets.randbelow(30) + 70:02d}{secrets.randbelow(12) + 1:02d}{secrets.randbelow(28) + 1:02d}"
    homoclave = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(2))
    return f"{letters}{constituted}{homoclave}{secrets.choice(string.digits + 'A')}"


def password() -> str:
    return secrets.token_urlsafe(18)


@dataclass
class Population:
    url: str
    authority: list[Actor] = field(default_factory=list)  # two users, for four eyes
    administrator: Actor | None = None
    enforcement: Actor | None = None  # the enforcement office: reads, changes nothing
    installations: list[Actor] = field(default_factory=list)
    intermediaries: list[Actor] = field(default_factory=list)
    verifiers: list[Actor] = field(default_factory=list)
    sites: dict[str, str] = field(default_factory=dict)  # account id → company and place

    def everyone(self) -> list[Actor]:
        extra = [a for a in (self.administrator, self.enforcement) if a is not None]
        return [*self.authority, *extra, *self.installations, *self.intermediaries, *self.verifiers]

    def close(self) -> None:
        for actor in self.everyone():
            actor.close()


def people_count(installations: int) -> int:
    return 2 + 1 + 1 + installations + len(INTERMEDIARIES) + len(VERIFIERS)


def seed(url: str, bootstrap: Actor, installations: int, secrets_dir: Path,
         advance: Callable[[str], None]) -> Population:
    """Create everyone; ``advance(description)`` is called once per person (a progress bar)."""
    if installations > len(COMPANIES):
        raise ValueError(f"at most {len(COMPANIES)} installations")
    population = Population(url)
    tag = secrets.token_hex(2)  # e-mail addresses of this run, so a second demo on a shared mail catcher is told apart

    def person(username: str, display_name: str, roles: list[str], creator: Actor) -> Actor:
        actor = Actor(username, display_name, roles, password(), url, f"{username}.{tag}@demo.example.mx")
        created = creator.post("/api/v1/users", {
            "username": username, "display_name": display_name, "email": actor.email, "language": "es",
            "roles": roles, "password": actor.password}, ok=(201,))
        actor.user_id = str(created["id"])
        actor.sign_in()
        advance(f"{display_name} ({', '.join(roles)})")
        return actor

    administrator = person(ADMINISTRATOR, "Administración del Registro", ["administrator"], bootstrap)
    population.administrator = administrator
    population.authority = [
        person("autoridad.lucia", "Lucía Hernández (Autoridad)", ["authority"], administrator),
        person("autoridad.mateo", "Mateo Ramírez (Autoridad)", ["authority"], administrator),
    ]
    population.enforcement = person("profepa.inspeccion", "Oficina de Inspección", ["authority-readonly"],
                                    administrator)

    def participant(kind: str, role: str, company: str, place: str, username: str) -> Actor:
        actor = person(username, f"Representante de {company}", [role], administrator)
        account = administrator.post("/api/v1/accounts", {
            "kind": kind, "name": company if kind != "installation" else f"{company}, planta {place}",
            "holder": {"name": f"{company} S.A. de C.V.", "tax_id": rfc(company),
                       "address": place, "contacts": [{"name": actor.display_name, "email": actor.email}]}},
            ok=(201,))
        administrator.post(f"/api/v1/accounts/{account['id']}/approve", {}, ok=(200,))
        administrator.post(f"/api/v1/accounts/{account['id']}/representatives",
                           {"user_id": actor.user_id, "rights": ["initiate", "approve", "view"]}, ok=(200, 201))
        actor.account_id = account["id"]
        actor.delivery_account_id = account.get("paired_account_id") or ""
        population.sites[actor.account_id] = f"{company} ({place})"
        return actor

    for n, (company, place) in enumerate(COMPANIES[:installations], start=1):
        short = "".join(w[0] for w in company.lower().split() if w[0].isalpha() and w not in ("del", "de", "y"))
        population.installations.append(
            participant("installation", "installation", company, place, f"inst{n:02d}.{short}"))
    for company, short in INTERMEDIARIES:
        population.intermediaries.append(participant("intermediary", "intermediary", company, "Ciudad de México",
                                                     f"intermediario.{short}"))
    for company, short in VERIFIERS:
        population.verifiers.append(participant("verifier", "verifier", company, "Ciudad de México",
                                                f"verificador.{short}"))
    write_secrets(population, secrets_dir)
    return population


def write_secrets(population: Population, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)

    def private(path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(path, 0o600)  # whatever the umask, and if the file was there before

    listing: list[dict[str, Any]] = []
    for actor in population.everyone():
        private(folder / f"{actor.username}.password", actor.password + "\n")
        listing.append({"username": actor.username, "display_name": actor.display_name, "roles": actor.roles,
                        "email": actor.email, "user_id": actor.user_id, "account_id": actor.account_id or None,
                        "delivery_account_id": actor.delivery_account_id or None,
                        "password_file": f"{actor.username}.password"})
    private(folder / "population.json", json.dumps({"url": population.url, "users": listing}, indent=2,
                                                   ensure_ascii=False) + "\n")
