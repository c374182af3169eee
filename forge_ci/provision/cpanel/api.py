"""A cPanel account's APIs behind one narrow door: every request goes through ``_get``.

- UAPI: ``GET https://host:2083/execute/<Module>/<function>?...`` answering
  ``{"status": 1|0, "errors": [...], "data": ...}``;
- API 2 (addon domains and SSH keys, which UAPI lacks on many hosts):
  ``GET /json-api/cpanel?cpanel_jsonapi_apiversion=2&cpanel_jsonapi_module=M&
  cpanel_jsonapi_func=F&...`` answering ``{"cpanelresult": {"data": [...],
  "event": {"result": 1}, "error": "..."}}`` (``error`` only on failure; the
  event result stays 1).

Both authenticate with ``Authorization: cpanel <user>:<API token>``; HTTP 401 and
403 are a bad token. A failure is HTTP 200 with ``status: 0`` (UAPI) or an
``error`` (API 2); both become :class:`ProviderApiError`. ``verify`` is passed
to requests: ``True``, or the path of a CA file (tests use the lab's CA).

Document roots: with WHM's "Restrict document roots to public_html" on (the
default) cPanel puts a ``dir`` outside ``public_html`` under it and still reports
success; :meth:`CpanelApi.create_domain` reads the domain back and says so.
Messages never contain the token or a password.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from forge_ci.provision.errors import (
    ProviderApiError,
    ProviderAuthError,
    ProviderUnavailable,
    ProvisionError,
)
from forge_ci.provision.retrying import RetryPolicy

Json = dict[str, Any]
_RETRY_STATUS = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class DomainData:
    domain: str
    documentroot: str
    homedir: str
    type: str  # main_domain, sub_domain, addon_domain, parked_domain


@dataclass(frozen=True)
class Domains:
    main_domain: str
    addon_domains: tuple[str, ...]
    sub_domains: tuple[str, ...]
    parked_domains: tuple[str, ...]

    def __contains__(self, domain: object) -> bool:
        return domain == self.main_domain or domain in self.addon_domains or \
            domain in self.sub_domains or domain in self.parked_domains


@dataclass(frozen=True)
class DbRestrictions:
    prefix: str  # "" when the server does not prefix names
    max_database_name_length: int
    max_username_length: int


@dataclass(frozen=True)
class SshKey:
    name: str
    authorized: bool
    key: str


@dataclass(frozen=True)
class ShellAccess:
    has_terminal_access: bool
    shell: str

    @property
    def jailed(self) -> bool:
        return self.shell.endswith("jailshell")


class CpanelApi:
    """The cPanel account ``user`` at ``endpoint`` (``https://host:2083``)."""

    def __init__(self, endpoint: str, user: str, token: str, policy: RetryPolicy, *,
                 verify: bool | str = True, timeout: float = 30.0,
                 session: requests.Session | None = None,
                 log: Callable[[str], None] = lambda _msg: None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.user = user
        self._token = token
        self.policy = policy
        self.verify = verify
        self.timeout = timeout
        self.session = session or requests.Session()
        self.log = log

    # -- domains ---------------------------------------------------------------

    def list_domains(self) -> Domains:
        data = self.uapi("DomainInfo", "list_domains", {}, what="listing the account's domains")
        return Domains(main_domain=str(data.get("main_domain", "")),
                       addon_domains=tuple(data.get("addon_domains") or ()),
                       sub_domains=tuple(data.get("sub_domains") or ()),
                       parked_domains=tuple(data.get("parked_domains") or ()))

    def domain_data(self, domain: str) -> DomainData:
        data = self.uapi("DomainInfo", "single_domain_data", {"domain": domain},
                         what=f"reading the domain {domain}")
        return DomainData(domain=str(data.get("domain", domain)),
                          documentroot=str(data.get("documentroot", "")),
                          homedir=str(data.get("homedir", "")), type=str(data.get("type", "")))

    def ensure_domain(self, domain: str, docroot: str) -> tuple[DomainData, bool]:
        """Adopt ``domain`` if the account has it, else create it; ``(data, created)``.

        Either way its document root must be ``docroot`` (relative to home).
        """
        if domain in self.list_domains():
            data = self.domain_data(domain)
            self.check_docroot(data, docroot)
            return data, False
        return self.create_domain(domain, docroot), True

    def create_domain(self, domain: str, docroot: str) -> DomainData:
        """Create ``domain`` with its document root at ``docroot`` (relative to home).

        A subdomain of one of the account's domains is made with UAPI
        ``SubDomain::addsubdomain``; any other domain becomes an addon domain
        (API 2 ``AddonDomain::addaddondomain``). The result is read back: cPanel
        reports success even when it moved the document root under public_html.
        """
        domains = self.list_domains()
        rel = docroot.strip("/")
        root = _parent_domain(domain, domains)
        if root is not None:
            self.uapi("SubDomain", "addsubdomain",
                      {"domain": domain[: -len(root) - 1], "rootdomain": root, "dir": rel},
                      what=f"creating the subdomain {domain}")
        else:
            label = domain.split(".")[0]
            self.api2("AddonDomain", "addaddondomain",
                      {"newdomain": domain, "subdomain": label, "dir": rel},
                      what=f"creating the addon domain {domain}")
        data = self.domain_data(domain)
        self.check_docroot(data, rel)
        return data

    def check_docroot(self, data: DomainData, docroot: str) -> None:
        """Raise when ``data``'s document root is not ``docroot`` (relative to home)."""
        home = data.homedir.rstrip("/") or f"/home/{self.user}"
        want = f"{home}/{docroot.strip('/')}"
        if data.documentroot.rstrip("/") == want:
            return
        moved = data.documentroot.startswith(f"{home}/public_html/")
        hint = ("the server restricts document roots to public_html: ask the host to turn "
                "off WHM > Tweak Settings > \"Restrict document roots to public_html\", or put "
                "the site's path under public_html in forge.yml" if moved else
                "change the document root in cPanel (Domains) or remove the domain so forge "
                "creates it")
        raise ProvisionError(
            f"cPanel put the document root of {data.domain} at {data.documentroot}, not {want}"
            + (" (moved under public_html)" if moved else ""), hint=hint)

    # -- databases -------------------------------------------------------------

    def db_restrictions(self) -> DbRestrictions:
        data = self.uapi("Mysql", "get_restrictions", {}, what="reading database name rules")
        return DbRestrictions(prefix=str(data.get("prefix") or ""),
                              max_database_name_length=int(data.get("max_database_name_length")
                                                           or 64),
                              max_username_length=int(data.get("max_username_length") or 16))

    def list_databases(self) -> dict[str, tuple[str, ...]]:
        """Database name -> the users with privileges on it."""
        rows = self.uapi("Mysql", "list_databases", {}, what="listing databases")
        return {str(r["database"]): tuple(r.get("users") or ())
                for r in (rows or []) if isinstance(r, dict)}

    def create_database(self, name: str) -> None:
        """Create ``name``, which must already carry the prefix (UAPI never adds it)."""
        self.uapi("Mysql", "create_database", {"name": name}, what=f"creating the database {name}")

    def create_db_user(self, name: str, password: str) -> None:
        self.uapi("Mysql", "create_user", {"name": name, "password": password},
                  what=f"creating the database user {name}", secrets=(password,))

    def grant_all(self, user: str, database: str) -> None:
        self.uapi("Mysql", "set_privileges_on_database",
                  {"user": user, "database": database, "privileges": "ALL PRIVILEGES"},
                  what=f"granting {user} all privileges on {database}")

    # -- SSH -------------------------------------------------------------------

    def shell(self) -> ShellAccess:
        data = self.uapi("SSH", "get_shell", {}, what="reading the account's shell access")
        return ShellAccess(has_terminal_access=bool(data.get("has_terminal_access")),
                           shell=str(data.get("shell", "")))

    def list_public_keys(self) -> list[SshKey]:
        """The account's public keys (``types=pub``: without it cPanel lists private keys)."""
        rows = self.api2("SSH", "listkeys", {"types": "pub", "pub": "1"},
                         what="listing SSH keys")
        return [SshKey(name=str(r.get("name", "")), authorized=r.get("authstatus") == "authorized",
                       key=str(r.get("key", ""))) for r in rows]

    def import_key(self, name: str, public_key: str) -> None:
        """Import ``public_key`` as ``name`` (an existing key of that name is replaced)."""
        self.api2("SSH", "importkey", {"name": name, "key": public_key},
                  what=f"importing the SSH key {name}")

    def authorize_key(self, name: str) -> None:
        self.api2("SSH", "authkey", {"key": name, "action": "authorize"},
                  what=f"authorizing the SSH key {name}")

    # -- the door --------------------------------------------------------------

    def uapi(self, module: str, function: str, params: dict[str, str], *, what: str,
             secrets: tuple[str, ...] = ()) -> Any:
        """A UAPI call's ``data``; ``status: 0`` becomes :class:`ProviderApiError`."""
        answer = self._get(f"/execute/{module}/{function}", params, what)
        if answer.get("status") in (1, "1"):
            return answer.get("data")
        errors = answer.get("errors") or answer.get("messages") or ["no reason given"]
        text = self._scrub("; ".join(str(e) for e in errors), secrets)
        raise ProviderApiError(f"cPanel refused {what}: {text}", code=f"{module}::{function}")

    def api2(self, module: str, function: str, params: dict[str, str], *,
             what: str) -> list[Json]:
        """An API 2 call's ``data`` rows; an ``error`` becomes :class:`ProviderApiError`."""
        answer = self._get("/json-api/cpanel", {
            "cpanel_jsonapi_apiversion": "2", "cpanel_jsonapi_module": module,
            "cpanel_jsonapi_func": function, **params}, what)
        result = answer.get("cpanelresult")
        if not isinstance(result, dict):
            raise ProviderApiError(f"cPanel's answer while {what} has no cpanelresult",
                                   code=f"{module}::{function}")
        rows = result.get("data")
        rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
        failed = [r for r in rows if r.get("result") in (0, "0")]
        error = result.get("error") or (failed[0].get("reason") if failed else None)
        if error or (result.get("event") or {}).get("result") in (0, "0"):
            raise ProviderApiError(f"cPanel refused {what}: {self._scrub(str(error), ())}",
                                   code=f"{module}::{function}")
        return rows

    def _get(self, path: str, params: dict[str, str], what: str) -> Json:
        attempt = 0
        while True:
            try:
                response = self.session.get(
                    self.endpoint + path, params=params, timeout=self.timeout,
                    verify=self.verify,
                    headers={"Authorization": f"cpanel {self.user}:{self._token}"})
            except requests.exceptions.SSLError:
                raise ProviderUnavailable(
                    f"the TLS certificate of cPanel at {self.endpoint} is not trusted "
                    f"({what})", hint="use the host's name that its certificate carries "
                    "(not its IP address), or pass its CA file") from None
            except (requests.ConnectionError, requests.Timeout) as e:
                if attempt >= self.policy.api_retries:
                    raise ProviderUnavailable(
                        f"cannot reach cPanel at {self.endpoint} while {what} "
                        f"({e.__class__.__name__})",
                        hint="check the cPanel URL (https://host:2083)") from None
                reason = e.__class__.__name__
            except requests.RequestException as e:
                raise ProviderUnavailable(
                    f"the request to cPanel at {self.endpoint} failed while {what} "
                    f"({e.__class__.__name__})", hint="check the cPanel URL") from None
            else:
                if response.status_code not in _RETRY_STATUS or \
                        attempt >= self.policy.api_retries:
                    return self._parse(response, what)
                reason = f"HTTP {response.status_code}"
            delay = self.policy.backoff(attempt)
            self.log(f"{what}: {reason}; retrying in {delay:.0f}s")
            self.policy.sleep(delay)
            attempt += 1

    def _parse(self, response: requests.Response, what: str) -> Json:
        status = response.status_code
        if status in (401, 403):
            raise ProviderAuthError(
                f"cPanel refused the API token of {self.user!r} (HTTP {status}) while {what}",
                hint="create an API token in cPanel (Security > Manage API Tokens) for this "
                     "account and pass it with the account's user name; it may have expired")
        if status != 200:
            raise ProviderUnavailable(f"cPanel answered HTTP {status} while {what}",
                                      hint="run again later; check the cPanel URL")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ProviderApiError(f"cPanel's answer while {what} is not a JSON object",
                                   code="bad_answer",
                                   hint="check the URL points at cPanel's port (2083)")
        return answer

    def _scrub(self, text: str, secrets: tuple[str, ...]) -> str:
        for secret in (self._token, *secrets):
            if secret:
                text = text.replace(secret, "***")
        return text


def _parent_domain(domain: str, domains: Domains) -> str | None:
    """The account domain ``domain`` is a subdomain of (longest match), if any."""
    own = (domains.main_domain, *domains.addon_domains, *domains.parked_domains)
    parents = [d for d in own if d and domain.endswith(f".{d}")]
    return max(parents, key=len) if parents else None
